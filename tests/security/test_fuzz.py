"""Fuzz suite of the readers of every system: a valid file of each format, written by the
project's own writers, is truncated, bit-flipped, emptied, replaced by garbage or by non-UTF-8
bytes, or has one of its fields replaced by a huge, non-finite or hostile value (``../..``, an
absolute path, a NUL byte, an XML entity). Property, for every loader and every example:

* it returns, or raises a :class:`~clinfuse.core.errors.ClinfuseError`, never another exception;
* no file outside its output folder is created, changed or removed (a snapshot of the sandbox,
  bystander files included, before and after).

The ``fast`` hypothesis profile (default) runs 25 examples per loader; ``HYPOTHESIS_PROFILE=slow``
runs 400 (the ``slow`` test below runs them all with that count).
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clinfuse.core.errors import ClinfuseError

HOSTILE: tuple[bytes, ...] = (
    b"../../../../outside", b"/tmp/clinfuse-fuzz-abs", b"\x00", b"nan", b"inf", b"-inf", b"-1",
    b"0", b"1e308", b"-1e308", b"99999999999999999999999", b"\xff\xfe\xfa", b"", b'"', b",",
    b"\t", b"\n", b"{", b"}", b"[", b"null", b"true", "\u00e9\u4e2d".encode(),
    b"<!DOCTYPE x [<!ENTITY e SYSTEM 'file:///etc/passwd'>]>", b"&e;", b"%s%n",
)  # fmt: skip
"""Values a hostile or careless file may hold in place of any field."""

_TOKEN = re.compile(rb"[A-Za-z0-9_.+-]+")


@st.composite
def mutated(draw: Any, seed: bytes) -> bytes:
    """One corruption of ``seed``."""
    kind = draw(st.sampled_from(["truncate", "flip", "token", "token", "splice", "empty",
                                 "garbage", "latin1"]))  # fmt: skip
    n = len(seed)
    if kind == "empty" or n == 0:
        return b""
    if kind == "truncate":
        return seed[: draw(st.integers(0, n - 1))]
    if kind == "flip":
        out = bytearray(seed)
        for _ in range(draw(st.integers(1, 8))):
            i = draw(st.integers(0, n - 1))
            out[i] ^= 1 << draw(st.integers(0, 7))
        return bytes(out)
    if kind == "garbage":
        return draw(st.binary(min_size=1, max_size=512))
    if kind == "latin1":
        i = draw(st.integers(0, n - 1))
        return seed[:i] + b"\xe9\xff" + seed[i:]
    value = draw(st.sampled_from(HOSTILE))
    if kind == "splice":
        i = draw(st.integers(0, n))
        return seed[:i] + value + seed[i:]
    tokens = list(_TOKEN.finditer(seed[:200_000]))
    if not tokens:
        return seed + value
    m = tokens[draw(st.integers(0, len(tokens) - 1))]
    return seed[: m.start()] + value + seed[m.end() :]


@dataclass
class Loader:
    """A reader under test: ``make(folder)`` writes a valid input into ``folder`` and returns
    the file to corrupt; ``call(folder, target, out)`` reads it (``out``: its output folder)."""

    make: Callable[[Path], Path]
    call: Callable[[Path, Path, Path], Any]


# -- seeds and calls, one per format -----------------------------------------------------------
def _mmsa(folder: Path) -> Path:
    from clinfuse.methods.dib.data import save_mmsa_pickle
    from clinfuse.methods.dib.synthetic import make_synthetic_msa

    data = make_synthetic_msa(n_train=6, n_valid=3, n_test=3, seed=0)
    return save_mmsa_pickle(data, folder / "unaligned_50.pkl")


def _mmsa_call(folder: Path, target: Path, out: Path) -> Any:
    from clinfuse.methods.dib.data import load_mmsa_pickle

    return load_mmsa_pickle(target)


def _kg(folder: Path) -> Path:
    ents = [f"e{i}" for i in range(8)]
    rows = [f"{ents[i % 8]}\tr{i % 3}\t{ents[(i * 3 + 1) % 8]}" for i in range(20)]
    (folder / "train.txt").write_text("\n".join(rows[:14]) + "\n")
    (folder / "valid.txt").write_text("\n".join(rows[14:17]) + "\n")
    (folder / "test.txt").write_text("\n".join(rows[17:]) + "\n")
    return folder / "train.txt"


def _kg_call(folder: Path, target: Path, out: Path) -> Any:
    from clinfuse.methods.tunsr.data import load_kg

    return load_kg(folder)


def _trajectories(suffix: str) -> Callable[[Path], Path]:
    def make(folder: Path) -> Path:
        from clinfuse.rl.data import Trajectories
        from clinfuse.rl.io import save_trajectories

        rng = np.random.default_rng(0)
        n = 12
        done = np.zeros(n, bool)
        done[[5, 11]] = True
        traj = Trajectories(
            obs=rng.normal(size=(n, 3)).astype(np.float32), action=rng.integers(0, 4, n),
            reward=np.where(done, 1.0, 0.0), done=done, timeout=np.zeros(n, bool),
            patient=np.repeat([0, 1], 6), time=np.tile(np.arange(6.0), 2), n_actions=4,
        )  # fmt: skip
        return save_trajectories(traj, folder / f"traj.{suffix}")

    return make


def _trajectories_call(folder: Path, target: Path, out: Path) -> Any:
    from clinfuse.rl.io import load_trajectories

    return load_trajectories(target)


def _bag(suffix: str) -> Callable[[Path], Path]:
    def make(folder: Path) -> Path:
        import torch

        feats = torch.randn(6, 8, generator=torch.Generator().manual_seed(0))
        if suffix == "pt":
            torch.save(feats, folder / "slide-1.pt")
            return folder / "slide-1.pt"
        import h5py

        with h5py.File(folder / "slide-1.h5", "w") as fh:
            fh["features"] = feats.numpy()
            fh["coords"] = np.arange(12).reshape(6, 2)
        return folder / "slide-1.h5"

    return make


def _bag_call(folder: Path, target: Path, out: Path) -> Any:
    from clinfuse.methods.dpsurv.data import read_bag

    return read_bag(target)


def _labels(folder: Path) -> Path:
    rows = ["case_id,slide_id,survival_months,censorship"]
    rows += [f"TCGA-{i:02d},TCGA-{i:02d}-1,{3.5 * (i + 1)},{i % 2}" for i in range(8)]
    (folder / "labels.csv").write_text("\n".join(rows) + "\n")
    return folder / "labels.csv"


def _labels_call(folder: Path, target: Path, out: Path) -> Any:
    from clinfuse.methods.dpsurv.data import read_labels

    return read_labels(target)


def _ehr(folder: Path) -> Path:
    from clinfuse.methods.ehrprompt.data import support2_path

    lines = support2_path().read_bytes().splitlines(keepends=True)
    (folder / "support2.csv").write_bytes(b"".join(lines[:40]))
    return folder / "support2.csv"


def _ehr_call(folder: Path, target: Path, out: Path) -> Any:
    from clinfuse.methods.ehrprompt.data import load_support2

    return load_support2(path=target)


def _ecg(part: str) -> Callable[[Path], Path]:
    def make(folder: Path) -> Path:
        from clinfuse.builders.meeti import io
        from clinfuse.builders.meeti.default_data import simulated_records

        io.write_mimic_layout(simulated_records(1, seed=0, duration=2.5), folder)
        if part == "record_list":
            return folder / "record_list.csv"
        if part == "machine":
            return folder / "machine_measurements.csv"
        return next(folder.rglob(f"*.{part}"))

    return make


def _ecg_call(folder: Path, target: Path, out: Path) -> Any:
    from clinfuse.builders.meeti import io

    return [io.load(ref) for ref in io.scan(folder)]


def _ge_xml(folder: Path) -> Path:
    from clinfuse.builders.meeti.default_data import GE_XML_FILE
    from clinfuse.core.packages import package_file

    src = package_file("ecgprocess", *GE_XML_FILE)
    if src is None:
        pytest.skip("ecgprocess (GE XML example) not installed")
    shutil.copy(src, folder / "ecg.xml")
    return folder / "ecg.xml"


def _ge_xml_call(folder: Path, target: Path, out: Path) -> Any:
    from clinfuse.builders.meeti.default_data import read_ge_xml

    return read_ge_xml(target)


def _manifest(folder: Path) -> Path:
    from PIL import Image

    Image.fromarray(np.full((40, 40), 120, np.uint8), "L").save(folder / "a.png")
    Image.fromarray(np.full((40, 40), 90, np.uint8), "L").save(folder / "b.png")
    (folder / "m.csv").write_text(
        "image,label,dataset,modality,mask\n"
        "a.png,normal,chest,chest_xray,\n"
        "b.png,Edema,chest,chest_xray,4 4 20 20\n"
    )
    return folder / "m.csv"


def _manifest_call(folder: Path, target: Path, out: Path) -> Any:
    from clinfuse.builders.medbanana.tasks import make_tasks, read_manifest

    return make_tasks(read_manifest(target))


def _mb_logs(folder: Path) -> Path:
    import json

    from clinfuse.core.paths import file_sha256

    root = folder / "out"
    img = root / "images" / "failed" / "chest" / "Edema" / "t1-r1.png"
    img.parent.mkdir(parents=True)
    img.write_bytes(b"\x89PNG fake")
    rows = [
        {"task_id": "t1", "round": 1, "image": str(img.relative_to(root)),
         "image_sha256": file_sha256(img)},
        {"task_id": "t2", "round": 1, "image": "../../outside.txt", "image_sha256": "0" * 64},
        {"task_id": "t3", "round": 1, "image": "/etc/hostname"},
    ]  # fmt: skip
    (root / "attempts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (root / "tasks.jsonl").write_text(json.dumps({"task_id": "t3", "status": "failed"}) + "\n")
    (root / "conversations").mkdir()
    (root / "conversations" / "t1.json").write_text("{}")
    return root / "attempts.jsonl"


def _mb_logs_call(folder: Path, target: Path, out: Path) -> Any:
    from clinfuse.builders.medbanana.build import resume_state

    return resume_state(folder / "out", {"t1", "t2", "../../outside"})


def _deepmedix(folder: Path) -> Path:
    import json

    rows = [
        {"question": "Which view is this?", "answer": "PA", "image": None, "type": "view"},
        {"question": "Is there an opacity?", "answer": "yes", "image": None,
         "boxes": [[10, 10, 100, 120]]},
        {"question": "Write the report.", "answer": "Bilateral rounded opacities.",
         "image": None},
    ]  # fmt: skip
    (folder / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder / "records.jsonl"


def _deepmedix_call(folder: Path, target: Path, out: Path) -> Any:
    from clinfuse.methods.deepmedix.data import load_records

    return load_records(target)


def _directions(folder: Path) -> Path:
    import torch

    from clinfuse.methods.procon.directions import DirectionSet

    d = torch.nn.functional.normalize(torch.randn(2, 8, dtype=torch.float64), dim=1)
    ds = DirectionSet(layers=(0, 1), directions=d, norms=torch.ones(2, dtype=torch.float64),
                      hidden_size=8, n_layers=2, fingerprint="abc")  # fmt: skip
    return ds.save(folder / "directions.pt")


def _directions_call(folder: Path, target: Path, out: Path) -> Any:
    from clinfuse.methods.procon.directions import DirectionSet

    return DirectionSet.load(target)


LOADERS: dict[str, Loader] = {
    "mmsa_pickle": Loader(_mmsa, _mmsa_call),
    "kg_triples": Loader(_kg, _kg_call),
    "trajectories_npz": Loader(_trajectories("npz"), _trajectories_call),
    "trajectories_parquet": Loader(_trajectories("parquet"), _trajectories_call),
    "wsi_bag_pt": Loader(_bag("pt"), _bag_call),
    "wsi_bag_h5": Loader(_bag("h5"), _bag_call),
    "wsi_labels_csv": Loader(_labels, _labels_call),
    "ehr_support2_csv": Loader(_ehr, _ehr_call),
    "wfdb_header": Loader(_ecg("hea"), _ecg_call),
    "wfdb_signal": Loader(_ecg("dat"), _ecg_call),
    "mimic_ecg_record_list": Loader(_ecg("record_list"), _ecg_call),
    "mimic_ecg_machine_csv": Loader(_ecg("machine"), _ecg_call),
    "ge_xml": Loader(_ge_xml, _ge_xml_call),
    "medbanana_manifest": Loader(_manifest, _manifest_call),
    "medbanana_logs": Loader(_mb_logs, _mb_logs_call),
    "deepmedix_jsonl": Loader(_deepmedix, _deepmedix_call),
    "procon_directions": Loader(_directions, _directions_call),
}


# -- the property ------------------------------------------------------------------------------
_SEEDS: dict[str, tuple[Path, Path]] = {}


def _seed(name: str, root: Path) -> tuple[Path, Path]:
    """The valid input folder of ``name`` (made once) and the file to corrupt in it."""
    if name not in _SEEDS:
        folder = root / name
        folder.mkdir(parents=True)
        target = LOADERS[name].make(folder)
        _SEEDS[name] = (folder, target.relative_to(folder))
    return _SEEDS[name]


@pytest.fixture(scope="module")
def seeds_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz-seeds")


def _check(name: str, data: bytes, sandbox: Path, snap: Callable[..., dict], seeds: Path) -> None:
    folder, rel = _seed(name, seeds)
    case = sandbox / "case"
    if case.exists():
        shutil.rmtree(case)
    shutil.copytree(folder, case)
    (case / rel).write_bytes(data)
    out = case / "out"
    before = snap(sandbox, skip=[out])
    try:
        LOADERS[name].call(case, case / rel, out)
    except ClinfuseError:
        pass
    assert snap(sandbox, skip=[out]) == before, "a file outside the output folder changed"


def test_every_seed_is_valid(seeds_root) -> None:
    """Each loader reads its uncorrupted seed (so the fuzz starts from a real file)."""
    for name, loader in LOADERS.items():
        folder, rel = _seed(name, seeds_root)
        loader.call(folder, folder / rel, folder / "out")


@pytest.mark.parametrize("name", sorted(LOADERS))
@given(data=st.data())
def test_loader_survives_corruption(name, data, sandbox, snap, seeds_root) -> None:
    folder, rel = _seed(name, seeds_root)
    blob = data.draw(mutated((folder / rel).read_bytes()), label="file")
    _check(name, blob, sandbox, snap, seeds_root)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(LOADERS))
@settings(max_examples=400)
@given(data=st.data())
def test_loader_survives_corruption_long(name, data, sandbox, snap, seeds_root) -> None:
    folder, rel = _seed(name, seeds_root)
    blob = data.draw(mutated((folder / rel).read_bytes()), label="file")
    _check(name, blob, sandbox, snap, seeds_root)
