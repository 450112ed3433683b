"""The shared loop under Accelerate: two CPU processes (gloo) end with identical weights."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from clinfuse.methods.dib.synthetic import write_synthetic

pytest.importorskip("accelerate")


def test_two_cpu_processes_agree(tmp_path) -> None:
    data = write_synthetic(
        "synthetic_mosi", tmp_path / "aligned_50.pkl", n_train=128, n_valid=32, n_test=32
    )
    runs = tmp_path / "runs"
    out = runs / "ddp"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        "29517",
        "-m",
        "clinfuse.cli",
        "-q",
        "fit",
        "dib",
        "--preset",
        "quick",
        "--data",
        str(data),
        "--out",
        str(out),
        "--set",
        "epochs=2",
        "--set",
        "device=cpu",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert [p.name for p in runs.iterdir()] == ["ddp"]  # one run directory
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["dist_world_size"] == 2
    a, b = metrics["dist_checksums"]
    assert a == b and a > 0  # both ranks ended with identical weights
    assert (out / "checkpoints" / "best.pt").is_file()
    assert len((out / "metrics.csv").read_text().strip().splitlines()) == 1 + 2  # header + 2 epochs
