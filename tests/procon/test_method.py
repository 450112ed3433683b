"""The ProCon learner end to end on a tiny random Llama (SmolLM2 tokenizer and chat template).

Checks: the run files and per-layer metrics; with the same seed and data order, the ProCon arm
keeps the probe's refusal direction at least as close to its start as plain LoRA fine-tuning
(the constraint was active: a positive logged term); bad input fails before any training step.
"""

from __future__ import annotations

import json
import logging

import pandas as pd
import pytest
import torch

from clinfuse.core.config import config_to_dict
from clinfuse.core.errors import ConfigError, DataError
from clinfuse.core.runs import RunDir

pytest.importorskip("trl")
pytest.importorskip("peft")
pytest.importorskip("datasets")

from clinfuse.methods.procon.config import ProConMethodConfig  # noqa: E402
from clinfuse.methods.procon.method import ProCon, layout_rows  # noqa: E402

logging.getLogger("transformers").setLevel(logging.ERROR)

TINY = {
    "model": "tiny-llama:3x64",
    "steps": 4,
    "n_benign": 8,
    "batch_size": 2,
    "n_direction": 6,
    "n_eval": 2,
    "max_new_tokens": 2,
    "drift_every": 2,
    "lr": 3e-2,
    "lam": 1e3,  # tiny random states have small projections: a large lambda makes it bite
    "eval_base": False,
}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def fit(tmp_path, name: str, **kw) -> tuple[ProCon, RunDir]:
    cfg = ProConMethodConfig(**{**TINY, **kw})
    learner = ProCon(cfg)
    run = RunDir.create(tmp_path / name, "procon", config_to_dict(cfg))
    return learner.fit(learner.load_data(), run), run


@pytest.fixture(scope="module")
def arms(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("procon")
    return {c: fit(tmp, c, constraint=c) for c in ("none", "procon_wu")}


def test_fit_writes_run_files_and_per_layer_metrics(arms):
    learner, run = arms["procon_wu"]
    for name in ("config.json", "metrics.json", "directions.pt", "metrics.csv"):
        assert (run.path / name).is_file(), name
    assert {p.name for p in run.plots.glob("*.png")} == {
        "drift_per_layer.png",
        "drift_over_steps.png",
    }
    m = json.loads((run.path / "metrics.json").read_text())
    # 3 decoder layers: directions for the inputs of blocks 1 and 2 (block 0 input = embedding)
    for layer in (1, 2):
        assert 0.0 <= m[f"auroc/L{layer}"] <= 1.0
        assert -1.0 <= m[f"drift_cos/L{layer}"] <= 1.0
    assert m["drift_cos/mean"] == pytest.approx((m["drift_cos/L1"] + m["drift_cos/L2"]) / 2)
    assert m["constrained_layers"] == [1, 2] and m["steps"] == 4
    # the saved directions reload against the trained model's base (same fingerprint)
    saved = torch.load(run.path / "directions.pt", weights_only=True)
    assert saved["layers"] == [1, 2]
    torch.testing.assert_close(saved["directions"].norm(dim=1), torch.ones(2, dtype=torch.float64))
    # the drift history starts at cos = 1 (step 0) and has a row per measurement
    hist = run.read_history()
    assert float(hist[0]["drift_cos/mean"]) == pytest.approx(1.0)
    assert [float(h["step"]) for h in hist] == [0.0, 2.0, 4.0]


def test_procon_bounds_drift_compared_with_plain_lora(arms):
    none, _ = arms["none"]
    wu, _ = arms["procon_wu"]
    assert none.metrics["lam"] == 0.0 and none.metrics["procon_term_max"] == 0.0
    assert wu.metrics["warmup_steps"] == 1  # ceil(10% of 4 steps)
    assert wu.metrics["procon_term_max"] > 0.0  # the constraint was active at some step
    assert none.metrics["drift_cos/mean"] < 1.0 - 1e-4  # plain fine-tuning did drift
    assert wu.metrics["drift_cos/mean"] >= none.metrics["drift_cos/mean"] - 1e-6


def test_layout_puts_harmful_rows_in_every_batch():
    benign = [{"input_ids": [k], "completion_mask": [1]} for k in range(7)]
    harmful = [{"input_ids": [100 + k], "completion_mask": [0]} for k in range(3)]
    rows = layout_rows(benign, harmful, batch_size=2, per_batch=1, seed=0)
    batches = [rows[i : i + 3] for i in range(0, len(rows), 3)]
    assert len(batches) == 3  # 7 // 2 full benign batches
    for b in batches:
        assert [r["input_ids"][0] >= 100 for r in b] == [False, False, True]
    assert sorted(r["input_ids"][0] for b in batches for r in b[:2]) == sorted(
        {r["input_ids"][0] for b in batches for r in b[:2]}
    )  # no benign row twice


def test_layer_outside_model_fails_before_training(tmp_path):
    with pytest.raises(ConfigError, match="outside the model"):
        fit(tmp_path, "bad_layer", layers="1,7")
    assert not (tmp_path / "bad_layer" / "directions.pt").exists()


def test_empty_harmful_set_fails_before_training(tmp_path):
    root = tmp_path / "safety"
    root.mkdir()
    item = [{"instruction": "Write a poem.", "category": None}]
    for name in ("harmless_train", "harmful_val", "harmless_val"):
        (root / f"{name}.json").write_text(json.dumps(item))
    (root / "harmful_train.json").write_text("[]")
    with pytest.raises(DataError, match="harmful_train split is empty"):
        ProCon(ProConMethodConfig(**{**TINY, "safety_data": str(root)})).load_data()


def test_direction_file_from_another_model_is_refused(tmp_path, arms):
    _, run = arms["none"]  # directions of tiny-llama seed 0
    with pytest.raises(DataError, match="another model"):
        fit(tmp_path, "other", directions=str(run.path / "directions.pt"), seed=1)


def test_missing_chat_template_is_refused(tmp_path, monkeypatch):
    from clinfuse.methods.procon import method

    real = method.load_model

    def no_template(*a, **kw):
        model, tok = real(*a, **kw)
        tok.chat_template = None
        return model, tok

    monkeypatch.setattr(method, "load_model", no_template)
    with pytest.raises(DataError, match="no chat template"):
        fit(tmp_path, "nochat")


def test_layout_adds_other_distribution_rows_after_the_harmful_ones():
    benign = [{"input_ids": [k], "completion_mask": [1]} for k in range(4)]
    harmful = [{"input_ids": [100], "completion_mask": [0]}]
    other = [{"input_ids": [200 + k], "completion_mask": [0]} for k in range(3)]
    rows = layout_rows(benign, harmful, 2, 1, seed=0, other=other, per_other=2)
    ids = [r["input_ids"][0] for r in rows]
    assert len(ids) == 2 * (2 + 1 + 2)
    assert ids[2:5] == [100, 200, 201] and ids[7:10] == [100, 202, 200]  # cycled


def test_broad_arm_hinge_mode_and_adapter_anchors_run_without_generation(tmp_path):
    """procon_wu_safe with hinge (tau = initial mean harmful projection) and anchors from
    disable_adapter(); no generation: predictions are the val prompts' projections."""
    learner, run = fit(
        tmp_path,
        "broad",
        constraint="procon_wu_safe",
        mode="hinge",
        hinge_tau="harmful_mean",
        anchor_source="disable_adapter",
        safe_per_batch=1,
        safe_other_per_batch=1,
        generate_eval=False,
    )
    m = learner.metrics
    assert m["n_train_rows"] == 4 * (2 + 1 + 1)  # 8 // 2 batches x (2 benign + 1 + 1)
    assert "refusal_rate_harmful" not in m and m["procon_term_max"] > 0.0
    tau = learner._hinge_thresholds((1, 2))
    dirs = learner.directions
    for i, layer in enumerate(dirs.layers):
        want = float(dirs.mean_harmful[i] @ dirs.directions[i])
        assert tau[layer] == pytest.approx(want)
    pred = pd.read_parquet(run.path / "predictions.parquet")
    assert set(pred["kind"]) == {"harmful", "harmless"} and {"proj/L1", "proj/L2"} <= set(pred)
    assert len(pred) == 2 * 2  # n_eval val prompts per class


def test_unknown_benign_task_is_refused():
    with pytest.raises(ConfigError, match="unknown benign task"):
        ProConMethodConfig(**{**TINY, "benign_tasks": "howto,poetry"})


def test_position_offset_runs_end_to_end_and_direction_file_records_it(tmp_path, arms):
    learner, run = fit(tmp_path, "pos", constraint="procon", position=-1, generate_eval=False)
    saved = torch.load(run.path / "directions.pt", weights_only=True)
    assert saved["position"] == -1
    assert learner.directions is not None and learner.directions.position == -1
    # a different position gives a different direction than the last-token one of the same model
    _, last = arms["none"]
    r_last = torch.load(last.path / "directions.pt", weights_only=True)["directions"]
    assert not torch.allclose(saved["directions"], r_last)
    assert learner.metrics["procon_term_max"] > 0.0
    # reusing a file computed at position -1 with the default position 0 is refused
    with pytest.raises(DataError, match="another token position"):
        fit(tmp_path, "pos_mismatch", directions=str(run.path / "directions.pt"))


def test_target_task_nll_stops_training_at_the_first_measurement_below_it(tmp_path):
    learner, run = fit(tmp_path, "target", constraint="none", generate_eval=False,
                       steps=8, target_task_nll=1e6)  # fmt: skip
    m = learner.metrics
    assert m["stopped_at_target"] is True
    assert m["steps"] == 2  # the first drift measurement (drift_every=2) already meets it
    assert [h["step"] for h in learner.drift_history] == [0.0, 2.0]
    assert all("task_nll" in h for h in learner.drift_history)
    hist = run.read_history()
    assert float(hist[-1]["task_nll"]) == pytest.approx(learner.drift_history[-1]["task_nll"])


def test_positive_position_and_nonpositive_target_are_refused():
    with pytest.raises(ConfigError, match="position <= 0"):
        ProConMethodConfig(**{**TINY, "position": 1})
    with pytest.raises(ConfigError, match="target_task_nll > 0"):
        ProConMethodConfig(**{**TINY, "target_task_nll": 0.0})
