"""The restricted unpickler: arrays and builtins load, anything else is refused unexecuted."""

from __future__ import annotations

import codecs
import collections
import io
import os
import pickle

import numpy as np
import pytest

from clinfuse.core.errors import DataError
from clinfuse.core.safe_pickle import safe_load, safe_loads

PROTOCOLS = list(range(pickle.HIGHEST_PROTOCOL + 1))


class _RunsShell:
    """Pickles to ``os.system(command)``: what a malicious data file would contain."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


class _Custom:
    """An innocent user class; still refused (its module could be anything)."""

    def __init__(self) -> None:
        self.x = 1


class _Reduces:
    def __init__(self, fn, args) -> None:
        self.fn, self.args = fn, args

    def __reduce__(self):
        return (self.fn, self.args)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_os_system_is_refused_and_never_run(tmp_path, protocol):
    marker = tmp_path / "MARKER"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"train": _RunsShell(f"touch {marker}")}, protocol=protocol))
    with pytest.raises(DataError, match=r"refused to unpickle (posix|os|nt)\.system") as err:
        safe_load(path)
    assert "only numpy arrays and builtins are allowed" in str(err.value)
    assert not marker.exists()


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_custom_class_instance_is_refused(protocol):
    # protocols 0/1 name copyreg._reconstructor first, 2+ the class itself; both are refused
    name = "_Custom" if protocol >= 2 else "copyreg._reconstructor"
    with pytest.raises(DataError, match=rf"refused to unpickle .*{name}"):
        safe_loads(pickle.dumps([np.zeros(2), _Custom()], protocol=protocol))


@pytest.mark.parametrize(
    "fn, args",
    [(eval, ("1+1",)), (getattr, (1, "real")), (print, ("hi",)), (np.load, ("x.npy",))],
)
def test_other_callables_are_refused(fn, args):
    with pytest.raises(DataError, match="refused to unpickle"):
        safe_loads(pickle.dumps(_Reduces(fn, args), protocol=2))


def test_codecs_encode_only_latin1():
    # protocol <= 2 pickles of bytes call _codecs.encode(..., "latin1"); other codecs are refused
    assert safe_loads(pickle.dumps(b"\x00\xff", protocol=2)) == b"\x00\xff"
    with pytest.raises(DataError, match="encoding 'rot13' is not allowed"):
        safe_loads(pickle.dumps(_Reduces(codecs.encode, ("abc", "rot13")), protocol=2))


def _payload() -> dict:
    text = np.empty(3, dtype=object)
    text[:] = ["a sentence", "ünïcode ✓", ""]
    ids = np.empty(3, dtype=object)
    ids[:] = ["vid$_$1", "vid$_$2", "other$_$10"]
    return {
        "f32": np.random.default_rng(0).normal(size=(4, 5, 3)).astype(np.float32),
        "f64": np.linspace(-3, 3, 7),
        "i64": np.arange(6, dtype=np.int64).reshape(2, 3),
        "bool": np.array([True, False]),
        "c128": np.array([1 + 2j]),
        "unicode": np.array(["ab", "c"]),
        "fortran": np.asfortranarray(np.arange(6.0).reshape(2, 3)),
        "raw_text": text,
        "id": ids,
        "scalars": (np.float32(1.5), np.int64(-3), np.bool_(True), np.float64(2.0)),
        "dtype": np.dtype("float32"),
        "builtins": [1, 2.5, 3 + 1j, "s", b"\x00\xff", None, True, (1, 2)],
        "set": {1, 2},
        "frozenset": frozenset({"a"}),
        "ordered": collections.OrderedDict(b=1, a=2),
        "slice": slice(1, 9, 2),
        "range": range(3),
    }


def _assert_same(a, b):
    if isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray) and a.dtype == b.dtype and a.shape == b.shape
        assert a.tolist() == b.tolist()
    elif isinstance(a, dict):
        assert type(a) is type(b) and list(a) == list(b)
        for k in a:
            _assert_same(a[k], b[k])
    elif isinstance(a, list | tuple):
        assert type(a) is type(b) and len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            _assert_same(x, y)
    else:
        assert type(a) is type(b) and a == b


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_numpy_and_builtins_round_trip(tmp_path, protocol):
    payload = _payload()
    path = tmp_path / "ok.pkl"
    path.write_bytes(pickle.dumps(payload, protocol=protocol))
    loaded = safe_load(path)
    _assert_same(payload, loaded)
    assert loaded["raw_text"].dtype == object and loaded["raw_text"][1] == "ünïcode ✓"
    # a file object works too
    with path.open("rb") as fh:
        _assert_same(payload, safe_load(fh))


def test_numpy1_module_names_load():
    """Pickles written by numpy 1.x name ``numpy.core.multiarray``; they must load on numpy 2."""
    data = pickle.dumps({"x": np.arange(4.0), "s": np.float64(2.5)}, protocol=2)
    legacy = data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    if legacy == data:  # running on numpy 1.x: go the other way
        legacy = data.replace(b"numpy.core.multiarray", b"numpy._core.multiarray")
    assert legacy != data
    out = safe_loads(legacy)
    assert out["x"].tolist() == [0.0, 1.0, 2.0, 3.0] and out["s"] == 2.5


@pytest.mark.parametrize("cut", [0, 1, 10, 0.5, -1])
def test_truncated_file_is_a_data_error(tmp_path, cut):
    data = pickle.dumps({"a": np.arange(100.0)}, protocol=4)
    n = int(len(data) * cut) if isinstance(cut, float) else cut % len(data)
    path = tmp_path / "cut.pkl"
    path.write_bytes(data[:n])
    with pytest.raises(DataError, match="truncated or corrupt") as err:
        safe_load(path)
    assert str(path) in str(err.value) and "SHA-256" in str(err.value)


def test_garbage_is_a_data_error(tmp_path):
    path = tmp_path / "garbage.pkl"
    path.write_bytes(b"this is not a pickle at all")
    with pytest.raises(DataError, match="truncated or corrupt"):
        safe_load(path)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="data file not found"):
        safe_load(tmp_path / "nope.pkl")
    with pytest.raises(DataError, match="not found"):
        safe_load(tmp_path)  # a directory


def test_stream_without_name_is_labelled():
    with pytest.raises(DataError, match="<stream>"):
        safe_load(io.BytesIO(b"\x80\x04"))
