"""The DeepMedix learner through the CLI: the 1 -> 2 -> 3 stage chain on tiny-llama (each
stage loads the previous stage's saved folder and changes every parameter; stage 3's frozen
reference is stage 2's folder), tag-less generations scored 0 without a crash, Report Arena,
and bad input refused before any training step."""

from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd
import pytest
import torch

from clinfuse.cli import main
from clinfuse.core.errors import ConfigError, DataError
from clinfuse.core.runs import RunDir

pytest.importorskip("trl")

from clinfuse.methods.deepmedix.config import DeepMedixConfig  # noqa: E402
from clinfuse.methods.deepmedix.method import DeepMedix, split_records  # noqa: E402

logging.getLogger("transformers").setLevel(logging.ERROR)

FAST = ["steps=2", "n_records=6", "max_new_tokens=6", "max_completion_length=6",
        "n_samples=2", "lr=1e-2", "progress=false"]  # fmt: skip


def fit(out, *sets: str) -> int:
    args = ["fit", "deepmedix", "--preset", "tiny", "--out", str(out)]
    for s in (*FAST, *sets):
        args += ["--set", s]
    return main(args)


REPORTS = [
    "The lungs are clear. No pleural effusion or pneumothorax.",
    "Heart size is normal. Mild atelectasis at the left base.",
    "Right lower lobe opacity, likely pneumonia.",
]


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    root = tmp_path_factory.mktemp("chain")
    q = "Describe the findings ({}).".format
    rows = [{"image": None, "question": q(i), "answer": REPORTS[i % 3]} for i in range(6)]
    data = root / "records.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    runs = {s: root / s for s in ("sft", "coldstart", "grpo")}
    assert fit(runs["sft"], "stage=sft", f"data={data}") == 0
    assert fit(runs["coldstart"], "stage=coldstart", f"init={runs['sft']}", f"data={data}") == 0
    assert fit(runs["grpo"], "stage=grpo", f"init={runs['coldstart']}", f"data={data}") == 0
    return runs


def test_stage_chain_consumes_each_previous_model(chain):
    for prev, stage in ((None, "sft"), ("sft", "coldstart"), ("coldstart", "grpo")):
        run = chain[stage]
        m = json.loads((run / "metrics.json").read_text())
        assert m["stage"] == stage and m["steps"] == 2
        assert m["init"] == ("tiny-llama" if prev is None else str(chain[prev] / "model"))
        if stage != "grpo":
            assert m["frac_params_changed"] == 1.0 and m["param_change_l2"] > 0
        assert (run / "model" / "config.json").is_file()
        assert len((run / "samples.jsonl").read_text().splitlines()) == 2
        assert (run / "plots" / f"training_{stage}.png").is_file()
    # stage 2 starts exactly where stage 1 ended: its base evaluation is stage 1's final one
    m1 = json.loads((chain["sft"] / "metrics.json").read_text())
    m2 = json.loads((chain["coldstart"] / "metrics.json").read_text())
    assert m2["base_overall"] == pytest.approx(m1["overall"])
    m3 = json.loads((chain["grpo"] / "metrics.json").read_text())
    assert m3["train_kl_first"] == pytest.approx(0.0, abs=1e-6)
    # a random model never writes <think>/\boxed{}: every completion of a group scores the same,
    # GRPO's advantages are 0 and the KL starts at 0, so the policy must not move (the update
    # itself is checked with a varying reward in test_train.py)
    assert m3["train_reward_first"] < 1e-3 and m3["frac_params_changed"] == 0.0
    # the cold-start rows are in the DeepMedix output format
    rows = [json.loads(x) for x in (chain["coldstart"] / "coldstart_samples.jsonl").open()]
    assert rows and all("<think>" in r["completion"] and "\\boxed{" in r["completion"]
                        for r in rows)  # fmt: skip


def test_tagless_generations_score_zero_format_without_crashing(chain):
    pred = pd.read_parquet(chain["grpo"] / "predictions.parquet")
    m = json.loads((chain["grpo"] / "metrics.json").read_text())
    tagless = ~pred["generation"].str.contains("</think>")
    assert (pred.loc[tagless, "format"] == 0).all()
    assert m["no_format"] >= int(tagless.sum())
    assert m["format_rate"] == pytest.approx(pred["format"].mean())
    assert m["overall"] == pytest.approx(pred["overall"].mean())


def test_reload_and_evaluate_with_arena(chain, capsys):
    run = chain["sft"]
    learner = DeepMedix.from_run(RunDir(run))
    ids = torch.tensor([[1, 2, 3]])
    saved = DeepMedix.from_run(RunDir(run))
    with torch.no_grad():
        torch.testing.assert_close(learner.model(ids).logits, saved.model(ids).logits)
    pytest.importorskip("clinfuse.methods.deepmedix.openi")
    rc = main(["evaluate", "deepmedix", "--run", str(run), "--arena"])
    out = capsys.readouterr().out
    assert rc == 0 and "written to" in out
    # the uncorrupted reference wins, the random model's reports lose every comparison
    assert "| 1 | reference |" in out and "| 4 | deepmedix-sft |" in out
    assert "reference+negation" in out and "reference+laterality" in out
    assert "  overall" in out  # the VQA metrics are printed too
    assert list((run / "evaluations").rglob("*.png"))


def test_record_without_answer_is_refused(tmp_path):
    path = tmp_path / "records.jsonl"
    path.write_text(json.dumps({"image": None, "question": "Effusion?", "answer": ""}) + "\n")
    with pytest.raises(DataError, match="without an answer"):
        DeepMedix(DeepMedixConfig(data=str(path))).load_data()


def test_undecodable_image_fails_before_training(tmp_path):
    img = tmp_path / "x.png"
    img.write_bytes(b"not an image")
    rows = [{"image": str(img), "question": f"Q{i}?", "answer": "yes"} for i in range(3)]
    path = tmp_path / "records.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = DeepMedixConfig(model="tiny-qwen2.5-vl", data=str(path), steps=1)
    learner = DeepMedix(cfg)
    run = RunDir.create(tmp_path / "run", "deepmedix", {})
    with pytest.raises(DataError, match="cannot decode"):
        learner.fit(learner.load_data(), run)
    assert not (tmp_path / "run" / "model").exists()


def test_split_is_seeded_and_disjoint():
    a = split_records(list(range(10)), 0.3, seed=1)
    assert a == split_records(list(range(10)), 0.3, seed=1)
    assert len(a[1]) == 3 and not set(a[0]) & set(a[1])
    with pytest.raises(DataError, match="at least two records"):
        split_records([1], 0.5, seed=0)


def test_arena_with_two_judges_reports_each_and_their_agreement(chain, tmp_path):
    import dataclasses

    pytest.importorskip("clinfuse.methods.deepmedix.openi")
    learner = DeepMedix.from_run(RunDir(chain["sft"]))
    learner.config = dataclasses.replace(
        learner.config, arena_judges="local:report-score, local:token-f1", arena_boot=20
    )
    table, paths = learner.arena(tmp_path / "arena")
    board = pd.read_csv(tmp_path / "arena" / "leaderboard.csv")
    assert {"elo:local:report-score", "elo:local:token-f1"} <= set(board.columns)
    assert board.sort_values("rank")["model"].iloc[0] == "reference"
    agree = pd.read_csv(tmp_path / "arena" / "agreement.csv")
    assert set(agree["judge_a"]) == {"local:report-score", "local:token-f1"}
    assert np.isfinite(board["elo"]).all() and board["elo"].abs().max() < 5000


def test_arena_rejects_an_empty_judge_list():
    with pytest.raises(ConfigError, match="arena_judges"):
        DeepMedixConfig(arena_judges=" , ")
