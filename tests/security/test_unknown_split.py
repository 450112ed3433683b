"""An unknown split is a clean error naming the known splits, for every registered learner, and
exit code 2 from ``clinfuse evaluate`` / ``predict`` (never a ``KeyError`` traceback)."""

from __future__ import annotations

from typing import Any

import pytest

from clinfuse.cli import main
from clinfuse.core.config import load_config
from clinfuse.core.errors import ClinfuseError
from clinfuse.core.learner import METHODS, check_split
from clinfuse.methods import load_all

load_all()

KNOWN: dict[str, tuple[str, ...]] = {
    "deepen": ("train", "valid", "test"),
    "deepmedix": ("train", "test", "all"),
    "dib": ("train", "valid", "test"),
    "dpsurv": ("train", "test", "all"),
    "ehrprompt": ("train", "valid", "test"),
    "procon": ("test",),
    "tunsr": ("train", "valid", "test"),
}
"""The splits each learner's evaluate / predict accept, as its error must name them."""


class _NoModel:
    """Stands in for a trained model: any use of it fails the test (the split must be checked
    before a model runs)."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the model was used ({name}) before the split was checked")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the model was called before the split was checked")


def test_every_registered_learner_is_listed() -> None:
    assert sorted(METHODS.names()) == sorted(KNOWN)


@pytest.mark.parametrize("name", sorted(KNOWN))
def test_unknown_split_names_the_known_splits(name, monkeypatch) -> None:
    cls = METHODS.get(name)
    learner = cls(load_config(cls.config_cls, method=name, preset=cls.demo_preset))
    data = learner.load_data()
    monkeypatch.setattr(cls, "_require_model", lambda self: _NoModel())
    for call in (learner.evaluate, learner.predict):
        with pytest.raises(ClinfuseError, match="unknown split 'dev'") as e:
            call(data, "dev")
        text = str(e.value)
        assert all(s in text for s in KNOWN[name]), text


def test_check_split_accepts_known_and_refuses_others() -> None:
    assert check_split("valid", {"train": 0, "valid": 1}) == "valid"
    with pytest.raises(ClinfuseError, match="one of train \\| valid"):
        check_split("Valid", {"train": 0, "valid": 1})


def test_cli_unknown_split_exits_2(tmp_path, capsys) -> None:
    from clinfuse.methods.dib.synthetic import write_synthetic

    pkl = write_synthetic("synthetic_mosi", tmp_path / "d.pkl", n_train=64, n_valid=32, n_test=32)
    run = tmp_path / "run"
    fast = ["--set", "epochs=1", "--set", "progress=false"]
    assert main(["fit", "dib", "--preset", "quick", "--data", str(pkl), "--out", str(run),
                 *fast]) == 0  # fmt: skip
    capsys.readouterr()
    for cmd in ("evaluate", "predict"):
        code = main([cmd, "dib", "--run", str(run), "--data", str(pkl), "--split", "dev"])
        err = capsys.readouterr().err
        assert code == 2, err
        assert "unknown split 'dev'" in err and "train | valid | test" in err
        assert "Traceback" not in err
