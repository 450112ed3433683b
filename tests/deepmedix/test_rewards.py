"""DeepMedix rewards: golden values of the official reward, oracles, both modes, TRL API.

The golden values are what ``compute_xray_score`` of the official ``src/reward.py``
(github.com/DeepReasoning/DeepMedix-R1) returns for these cases."""

from __future__ import annotations

import itertools
import logging

import numpy as np
import pytest
from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu
from rouge_score.rouge_scorer import RougeScorer

from clinfuse.core.errors import ConfigError
from clinfuse.methods.deepmedix.rewards import (
    box_iou,
    coordinate_score,
    make_reward_funcs,
    soft_f1,
    xray_score,
)

REPORT = (
    "The cardiac silhouette is normal. The lungs are clear. "
    "There is no pleural effusion or pneumothorax."
)
PARAPHRASE = "Heart size is normal. Clear lungs. No pleural effusion or pneumothorax."


def wrap(answer: str, think: str = "I look at the chest.") -> str:
    return f"<think>{think}</think> The answer is: \\boxed{{{answer}}}"


# (output, ground truth, overall, accuracy, format, coordinate) from the official reward
GOLDEN = [
    (
        wrap(REPORT, "heart [150, 200, 380, 420]; lungs [40, 40, 480, 460]"),
        REPORT,
        1.55,
        1.5,
        1,
        0.1,
    ),
    (wrap(PARAPHRASE, "heart [150, 200, 380, 620]"), REPORT, 0.72, 0.911, 1, -0.2),
    ("The lungs are clear.", "yes", 0.0, 0.0, 0, 0.0),
    (wrap("Yes"), "yes", 1.45, 1.5, 1, 0.0),
    (wrap("atelectasis | effusion"), "atelectasis | effusion | cardiomegaly", 1.18, 1.2, 1, 0.0),
]


@pytest.mark.parametrize(("output", "gt", "overall", "acc", "fmt", "coord"), GOLDEN)
def test_golden_table(output, gt, overall, acc, fmt, coord):
    s = xray_score(output, gt, compat="deepmedix")
    assert s["overall"] == pytest.approx(overall, abs=5e-3)
    assert s["accuracy"] == pytest.approx(acc, abs=5e-4)
    assert s["format"] == fmt
    assert s["coordinate"] == pytest.approx(coord, abs=1e-12)
    assert all(type(v) is float for v in s.values())
    assert s["overall"] == pytest.approx(0.9 * s["accuracy"] + 0.1 * s["format"] + s["coordinate"])


def test_report_accuracy_is_character_bleu_and_rouge1_from_nltk_and_rouge_score():
    smooth = SmoothingFunction().method2
    b1 = sentence_bleu([REPORT], PARAPHRASE, weights=(1, 0, 0, 0), smoothing_function=smooth)
    b4 = sentence_bleu([REPORT], PARAPHRASE, weights=(0.25,) * 4, smoothing_function=smooth)
    r1 = RougeScorer(["rouge1"], use_stemmer=True).score(PARAPHRASE, REPORT)["rouge1"].fmeasure
    s = xray_score(wrap(PARAPHRASE), REPORT)
    assert s["accuracy"] == pytest.approx(1.5 * (b1 + b4 + r1) / 3, abs=1e-12)
    # characters make a paraphrase look far closer than words do (BLEU-4 here: 0.53 vs 0.29)
    words = sentence_bleu(
        [REPORT.lower().split()], PARAPHRASE.lower().split(), smoothing_function=smooth
    )
    assert b4 > words + 0.15
    fixed = xray_score(wrap(PARAPHRASE), REPORT, compat="fixed")
    assert fixed["accuracy"] < s["accuracy"] - 0.1


def test_official_quirks_and_their_fixes():
    # mathruler reads a missing box as the string "None": a ground truth "none" scores full marks
    assert xray_score("no box here", "None")["accuracy"] == 1.5
    assert xray_score("no box here", "None", compat="fixed")["accuracy"] == 0.0
    # whitespace around "/" is deleted inside the answer too
    out = wrap("1 / 2 / 3")
    assert xray_score(out, "1 / 2 / 3")["accuracy"] < 1.5
    assert xray_score(out, "1 / 2 / 3", compat="fixed")["accuracy"] == pytest.approx(1.5)
    # an inverted or negative box earns the official bonus, but is penalised when fixed
    bad = wrap("yes", "[300, 300, 10, 10] [-20, 0, 5, 5]")
    assert xray_score(bad, "yes")["coordinate"] == pytest.approx(0.1)
    assert xray_score(bad, "yes", compat="fixed")["coordinate"] == pytest.approx(-0.4)
    # short answers: trailing period and spacing are forgiven when fixed
    assert xray_score(wrap("Yes."), "yes")["accuracy"] == 0.0
    assert xray_score(wrap("Yes."), "yes", compat="fixed")["accuracy"] == 1.5


def test_coordinate_presence_bonus_is_capped_and_uses_image_size():
    four = "<think>" + " ".join(["[1, 2, 3, 4]"] * 4) + "</think>"
    assert coordinate_score(four) == pytest.approx(0.15)
    assert coordinate_score("<think>[0, 0, 900, 900]</think>", image_size=1024) == pytest.approx(
        0.05
    )
    assert coordinate_score("<think>[0, 0, 900, 900]</think>") == pytest.approx(-0.2)


def test_box_iou_and_soft_f1_closed_forms():
    assert box_iou([0, 0, 2, 2], [1, 1, 3, 3]) == pytest.approx(1 / 7)
    assert box_iou([0, 0, 1, 1], [2, 2, 3, 3]) == 0.0
    assert soft_f1([[0, 0, 2, 2]], [[1, 1, 3, 3]]) == pytest.approx(1 / 7)
    assert soft_f1([], [[0, 0, 1, 1]]) == 0.0
    gold = [[0, 0, 10, 10], [20, 20, 30, 30]]
    assert soft_f1(gold[::-1], gold) == pytest.approx(1.0)


def test_soft_f1_matching_is_optimal_where_greedy_is_not():
    rng = np.random.default_rng(0)
    for _ in range(30):
        pts = rng.uniform(0, 50, size=(6, 2))
        wh = rng.uniform(5, 40, size=(6, 2))
        boxes = np.concatenate([pts, pts + wh], axis=1).tolist()
        pred, gold = boxes[:3], boxes[3:]
        brute = max(
            sum(box_iou(pred[i], gold[j]) for i, j in zip(range(3), perm, strict=True))
            for perm in itertools.permutations(range(3))
        )
        assert soft_f1(pred, gold) == pytest.approx(2 * brute / 6)
    # greedy (best pair first) would match A-g1 (0.5) and leave B with 0; optimum is A-g2, B-g1
    a, b = [0, 0, 10, 10], [0, 0, 10, 5]
    g1, g2 = [0, 0, 10, 5], [0, 0, 10, 10]
    assert soft_f1([a, b], [g1, g2]) == pytest.approx(1.0)


def test_fixed_grounding_reward_rewards_overlap_with_ground_truth():
    gt = [[60, 50, 245, 400]]
    exact = xray_score(wrap("yes", "[60, 50, 245, 400]"), "yes", compat="fixed", gt_boxes=gt)
    shifted = xray_score(wrap("yes", "[160, 50, 345, 400]"), "yes", compat="fixed", gt_boxes=gt)
    elsewhere = xray_score(wrap("yes", "[300, 420, 500, 500]"), "yes", compat="fixed", gt_boxes=gt)
    assert exact["coordinate"] == pytest.approx(0.15)
    assert 0 < shifted["coordinate"] < exact["coordinate"]
    assert elsewhere["coordinate"] == 0.0
    # the official reward cannot tell them apart
    assert {
        xray_score(wrap("yes", b), "yes")["coordinate"]
        for b in ("[60, 50, 245, 400]", "[300, 420, 500, 500]")
    } == {0.05}


def test_unknown_mode_is_a_config_error():
    with pytest.raises(ConfigError):
        xray_score("x", "y", compat="official")  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        make_reward_funcs("official")  # type: ignore[arg-type]


def test_reward_funcs_sum_to_overall_for_string_and_chat_completions():
    funcs = make_reward_funcs()
    assert [f.__name__ for f in funcs] == ["format", "accuracy", "coordinate"]
    outputs = [g[0] for g in GOLDEN]
    answers = [g[1] for g in GOLDEN]
    chat = [[{"role": "assistant", "content": o}] for o in outputs]
    parts = [{"role": "assistant", "content": [{"type": "text", "text": o}]} for o in outputs]
    for completions in (outputs, chat, [[p] for p in parts]):
        rows = [
            f(
                prompts=["p"] * 5,
                completions=completions,
                answer=answers,
                completion_ids=None,
                trainer_state=None,
            )
            for f in funcs
        ]
        total = np.sum(rows, axis=0)
        assert total == pytest.approx([g[2] for g in GOLDEN], abs=5e-3)


def test_reward_funcs_never_raise_on_bad_completions(caplog):
    funcs = make_reward_funcs()
    bad = [None, "", [], "no tags", {"role": "assistant"}]
    with caplog.at_level(logging.DEBUG, logger="clinfuse.methods.deepmedix.rewards"):
        rows = [f(prompts=None, completions=bad, answer=["yes"] * 5) for f in funcs]
    assert rows == [[0.0] * 5] * 3
    assert "fails the <think>" in caplog.text


def test_reward_funcs_missing_answer_column_is_a_config_error():
    (fmt, _, _) = make_reward_funcs(answer_column="solution")
    with pytest.raises(ConfigError, match="solution"):
        fmt(prompts=["p"], completions=["x"], answer=["y"])


def test_fixed_reward_funcs_read_the_boxes_column():
    _, _, coord = make_reward_funcs("fixed")
    out = wrap("yes", "[0, 0, 100, 100]")
    boxes = [np.array([[0.0, 0.0, 100.0, 100.0]]), [], None]
    got = coord(prompts=None, completions=[out] * 3, answer=["yes"] * 3, boxes=boxes)
    assert got == pytest.approx([0.15, 0.05, 0.05])
    _, _, official = make_reward_funcs("deepmedix")
    assert official(
        prompts=None, completions=[out] * 3, answer=["yes"] * 3, boxes=boxes
    ) == pytest.approx([0.05] * 3)


def test_docstring_examples():
    import doctest

    from clinfuse.methods.deepmedix import rewards as module

    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
