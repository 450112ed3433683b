"""The MEETI builder end to end: layout, alignment on study_id, readers, resume after a kill,
executors, bad records that do not stop the build."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import clinfuse

FAST = ["progress=false", "n_simulated=3", "dpi=100", "executor=serial"]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("meeti") / "build"
    builder, card, rd = clinfuse.build("meeti", overrides=FAST, out=out)
    return builder, card, rd


def test_every_component_joins_on_study_id(built) -> None:
    _, card, rd = built
    records = pd.read_parquet(rd.path / "records.parquet")
    assert card.n_records == len(records) >= 3 and card.n_failed == 0
    assert records["study_id"].is_unique
    beats = pd.read_parquet(rd.path / "beats.parquet")
    assert set(beats["study_id"]) == set(records["study_id"])
    record_list = pd.read_csv(rd.path / "record_list.csv", dtype=str)
    assert list(record_list.columns) == ["subject_id", "study_id", "file_name", "ecg_time", "path"]
    assert set(record_list["study_id"]) == set(records["study_id"])
    for _, r in records.iterrows():
        d = Path(r["path_waveform"]).parent
        # MIMIC-IV-ECG layout: files/p<4>/p<subject>/s<study>/
        assert d.parts[0] == "files" and d.parts[3] == f"s{r['study_id']}"
        assert d.parts[2].startswith("p") and d.parts[1] == d.parts[2][:5]
        with np.load(rd.path / r["path_waveform"]) as z:
            assert z["signal"].shape[1] == 12 and float(z["fs"]) == 500.0
            assert list(z["leads"]) == r["leads"].split(",")
        interp = json.loads((rd.path / r["path_text"]).read_text())
        assert interp["study_id"] == r["study_id"] and interp["text"]
        assert len(interp["prompt_hash"]) >= 32 and interp["model_id"] == r["text_model_id"]
        assert (rd.path / r["path_image"]).stat().st_size > 10_000
    m = rd.read_metrics()
    assert m["duplicate_studies"] == 0 and m["share_with_image"] == 1.0
    assert (rd.path / "dataset_card.md").exists() and (rd.plots / "example_ecg.png").exists()


def test_simulated_heart_rates_come_back_from_the_parameters(built) -> None:
    _, _, rd = built
    records = pd.read_parquet(rd.path / "records.parquet")
    sim = records[records["source"] == "default"] if "source" in records else records
    rec_list = pd.read_csv(rd.path / "inputs" / "machine_measurements.csv")
    rr = dict(zip(rec_list["study_id"].astype(str), rec_list["rr_interval"], strict=True))
    for _, r in sim.iterrows():
        if str(r["study_id"]) in rr and np.isfinite(rr[str(r["study_id"])]):
            assert abs(r["hr_bpm"] - 60000.0 / rr[str(r["study_id"])]) < 3.0


def test_huggingface_datasets_reads_the_tables(built) -> None:
    datasets = pytest.importorskip("datasets")
    _, _, rd = built
    ds = datasets.load_dataset(
        "parquet",
        data_files=str(rd.path / "records.parquet"),
        split="train",
        cache_dir=str(rd.path.parent / "hf_cache"),
    )
    assert ds.num_rows == len(pd.read_parquet(rd.path / "records.parquet"))
    assert "hr_bpm" in ds.column_names and "study_id" in ds.column_names


def test_a_rerun_without_resume_is_refused_and_resume_skips_everything(built) -> None:
    _, card, rd = built
    with pytest.raises(Exception, match="resume|already"):
        clinfuse.build("meeti", overrides=FAST, out=rd.path)
    _, again, _ = clinfuse.build("meeti", overrides=["progress=false"], out=rd.path, resume=True)
    assert again.n_skipped == card.n_records and again.n_records == card.n_records


def test_killed_build_resumes_without_loss_or_duplicates(tmp_path) -> None:
    out = tmp_path / "build"
    cmd = [sys.executable, "-m", "clinfuse.cli", "-q", "build", "meeti", "--out", str(out),
           "--set", "n_simulated=8", "--set", "dpi=100", "--set", "executor=serial"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    try:
        while time.time() < deadline:
            if len(list(out.glob("files/p*/p*/s*/*.done.json"))) >= 3:
                break
            if proc.poll() is not None:
                pytest.fail("the build finished before it could be killed")
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    killed_at = len(list(out.glob("files/p*/p*/s*/*.done.json")))
    assert 3 <= killed_at < 8
    _, card, rd = clinfuse.build("meeti", overrides=["progress=false"], out=out, resume=True)
    assert card.n_skipped == killed_at
    records = pd.read_parquet(rd.path / "records.parquet")
    n_inputs = len(pd.read_csv(out / "inputs" / "record_list.csv"))
    assert len(records) == n_inputs and records["study_id"].is_unique
    beats = pd.read_parquet(rd.path / "beats.parquet")
    assert not beats.duplicated(["study_id", "lead", "beat"]).any()
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]  # no half-written files


def test_process_pool_and_ray_give_the_same_tables(built, tmp_path) -> None:
    _, _, rd = built
    ref = pd.read_parquet(rd.path / "records.parquet").set_index("study_id")
    _, _, rd_pool = clinfuse.build(
        "meeti", overrides=[*FAST[:-1], "executor=process", "workers=2", "images=false"],
        out=tmp_path / "pool",
    )  # fmt: skip
    pool = pd.read_parquet(rd_pool.path / "records.parquet").set_index("study_id")
    pd.testing.assert_series_equal(pool.loc[ref.index, "hr_bpm"], ref["hr_bpm"])
    pytest.importorskip("ray")
    _, card, rd_ray = clinfuse.build(
        "meeti", overrides=[*FAST[:-1], "executor=ray", "workers=1", "images=false", "limit=2"],
        out=tmp_path / "ray",
    )  # fmt: skip
    assert card.n_records == 2
    ray_df = pd.read_parquet(rd_ray.path / "records.parquet").set_index("study_id")
    pd.testing.assert_series_equal(ray_df["hr_bpm"], ref.loc[ray_df.index, "hr_bpm"])


def test_bad_records_are_reported_and_the_build_goes_on(built, tmp_path) -> None:
    _, _, rd = built
    src = rd.path / "inputs"
    bad = tmp_path / "inputs"
    import shutil

    shutil.copytree(src, bad)
    dats = sorted(bad.glob("files/p*/p*/s*/*.dat"))
    dats[0].unlink()  # a header whose signal file is missing
    data = dats[1].read_bytes()
    dats[1].write_bytes(data[: len(data) // 3])  # a truncated signal file
    _, card, rd_bad = clinfuse.build(
        "meeti", overrides=[*FAST, "images=false"], data=bad, out=tmp_path / "out"
    )
    assert card.n_failed == 2 and card.n_records == len(list(bad.glob("files/p*/p*/s*/*.hea"))) - 2
    failures = json.loads((rd_bad.path / "failures.json").read_text())
    assert len(failures) == 2 and all(msg for msg in failures.values())


def test_cli_prints_where_the_data_set_went(tmp_path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "clinfuse.cli", "-q", "build", "meeti", "--out", str(tmp_path / "b"),
         "--set", "n_simulated=1", "--set", "images=false", "--set", "executor=serial"],
        capture_output=True, text=True, check=True, env={**os.environ},
    )  # fmt: skip
    assert "data set written to" in out.stdout and "records built" in out.stdout
