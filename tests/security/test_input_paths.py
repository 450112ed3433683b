"""Paths named inside data files stay under their input root: DeepMedix image paths in JSONL /
Parquet records (under the record file's folder) and DPsurv slide bags chosen by a label CSV
(under the bags folder). ``..``, absolute paths and symbolic links that leave the root are
refused with a clear error before anything outside is opened, unless the user sets
``allow_outside_paths``."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from clinfuse.cli import main
from clinfuse.core.errors import DataError, UnsafePathError

# -- DeepMedix: image paths in records ----------------------------------------------------------


def _image(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8), 128, np.uint8), "L").save(path)
    return path


def _records(folder: Path, image: str, suffix: str = ".jsonl") -> Path:
    rows = [{"image": "inside.png", "question": "Effusion?", "answer": "no"},
            {"image": image, "question": "Edema?", "answer": "yes"}]  # fmt: skip
    path = folder / f"records{suffix}"
    if suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    else:
        pd.DataFrame(rows).to_parquet(path)
    return path


@pytest.fixture
def opened(monkeypatch) -> list[str]:
    """Every path PIL opens during the test."""
    seen: list[str] = []
    real = Image.open

    def spy(fp, *args, **kwargs):
        seen.append(os.path.realpath(os.fspath(fp)))
        return real(fp, *args, **kwargs)

    monkeypatch.setattr(Image, "open", spy)
    return seen


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "symlink"])
@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_deepmedix_image_paths_stay_under_the_record_folder(sandbox, kind, suffix, opened):
    from clinfuse.methods.deepmedix.data import load_records

    data = sandbox / "inputs"
    _image(data / "inside.png")
    outside = _image(sandbox / "secret.png")
    name = {"dotdot": "../secret.png", "absolute": str(outside), "symlink": "link.png"}[kind]
    if kind == "symlink":
        (data / "link.png").symlink_to(outside)
    path = _records(data, name, suffix)
    with pytest.raises(UnsafePathError, match="outside its folder") as e:
        load_records(path)
    where = "line 2" if suffix == ".jsonl" else "row 1"
    assert where in str(e.value) and "allow_outside_paths=true" in str(e.value)
    recs = load_records(path, allow_outside=True)  # the explicit switch
    assert Path(recs[0].image) == data / "inside.png"
    assert Path(recs[1].image).resolve() == outside.resolve()
    assert opened == []  # the loader never opens an image


def test_deepmedix_cli_refuses_before_any_folder_or_image(sandbox, opened, capsys):
    _image(sandbox / "inputs" / "inside.png")
    _image(sandbox / "secret.png")
    path = _records(sandbox / "inputs", "../secret.png")
    out = sandbox / "run"
    assert main(["fit", "deepmedix", "--preset", "tiny", "--data", str(path),
                 "--out", str(out)]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert "outside its folder" in err and "Traceback" not in err
    assert not out.exists() and opened == []


# -- DPsurv: bags chosen by the label CSV -------------------------------------------------------


def _bags(root: Path, n: int = 6, seed: int = 0) -> tuple[Path, Path]:
    """``root/bags/s{i}.h5`` and ``root/labels.csv`` (MCAT style, one slide per case)."""
    from clinfuse.methods.dpsurv.data import write_h5_bag

    rng = np.random.default_rng(seed)
    bags = root / "bags"
    bags.mkdir(parents=True)
    for i in range(n):
        write_h5_bag(bags / f"s{i}.h5", rng.normal(size=(5, 4)).astype(np.float32))
    labels = root / "labels.csv"
    pd.DataFrame({
        "case_id": [f"c{i}" for i in range(n)], "slide_id": [f"s{i}" for i in range(n)],
        "survival_months": rng.uniform(1, 60, n).round(1), "censorship": [0, 1] * (n // 2),
    }).to_csv(labels, index=False)  # fmt: skip
    return bags, labels


@pytest.fixture
def h5_opened(monkeypatch) -> list[str]:
    """Every bag file DPsurv's data layer opens during the test."""
    from clinfuse.methods.dpsurv import data as dp

    seen: list[str] = []
    real_h5, real_pt = dp._open_h5, dp._torch_load

    def h5(path, *a, **k):
        seen.append(os.path.realpath(path))
        return real_h5(path, *a, **k)

    def pt(path, *a, **k):
        seen.append(os.path.realpath(path))
        return real_pt(path, *a, **k)

    monkeypatch.setattr(dp, "_open_h5", h5)
    monkeypatch.setattr(dp, "_torch_load", pt)
    return seen


@pytest.mark.parametrize("kind", ["file", "folder"])
def test_dpsurv_bags_outside_the_bags_folder_need_the_flag(sandbox, kind, h5_opened):
    from clinfuse.methods.dpsurv.data import load_cohort, write_h5_bag

    bags, labels = _bags(sandbox / "inputs")
    elsewhere = sandbox / "elsewhere"
    elsewhere.mkdir()
    if kind == "file":  # one bag is a link to a file outside
        write_h5_bag(elsewhere / "s3.h5", np.ones((5, 4), np.float32))
        (bags / "s3.h5").unlink()
        (bags / "s3.h5").symlink_to(elsewhere / "s3.h5")
        root = bags
    else:  # the feature folder of a TRIDENT-like job is a link to other storage
        job = sandbox / "inputs" / "job"
        job.mkdir()
        bags.rename(elsewhere / "features_uni")
        (job / "features_uni").symlink_to(elsewhere / "features_uni")
        root = job
    with pytest.raises(UnsafePathError, match="outside its folder") as e:
        load_cohort(root, labels)
    assert "labels.csv line" in str(e.value) and "allow_outside_paths=true" in str(e.value)
    outside = str(elsewhere.resolve())
    assert not [p for p in h5_opened if p.startswith(outside)]  # nothing read outside
    cohort = load_cohort(root, labels, allow_outside=True)
    assert cohort.n_cases == 6 and cohort.bag("c3").features.shape == (5, 4)


@pytest.mark.parametrize("bad", ["../../x", "a/b", "..", "c\\d"])
@pytest.mark.parametrize("column", ["case_id", "slide_id"])
def test_dpsurv_label_ids_that_cannot_be_file_names_are_refused(sandbox, bad, column):
    from clinfuse.methods.dpsurv.data import read_labels

    _, labels = _bags(sandbox / "inputs")
    df = pd.read_csv(labels, dtype=str)
    df.loc[2, column] = bad
    df.to_csv(labels, index=False)
    with pytest.raises(DataError, match=f"{column} values that cannot be file names") as e:
        read_labels(labels)
    assert "line 4" in str(e.value)


def test_dpsurv_cli_refuses_an_outside_bag_before_any_folder(sandbox, h5_opened, capsys):
    bags, labels = _bags(sandbox / "inputs")
    (sandbox / "elsewhere").mkdir()
    (bags / "s0.h5").rename(sandbox / "elsewhere" / "s0.h5")
    (bags / "s0.h5").symlink_to(sandbox / "elsewhere" / "s0.h5")
    out = sandbox / "run"
    argv = ["fit", "dpsurv", "--data", str(bags), "--set", f"labels={labels}", "--out", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "outside its folder" in err and "Traceback" not in err
    assert not out.exists() and h5_opened == []
