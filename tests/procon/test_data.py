"""ProCon data: safety splits, the synthetic benign SFT set and its accuracy, chat formatting."""

from __future__ import annotations

import json

import pytest
from tests.conftest import shared_path

from clinfuse.core.errors import DataError
from clinfuse.methods.procon.data import (
    BUILTIN_HARMFUL,
    BUILTIN_HARMLESS,
    SPLITS,
    TASKS,
    answer_in,
    benign_sft,
    load_safety_splits,
    sample,
    task_accuracy,
    to_chat,
)


def _write_splits(root, sizes: dict[str, int]) -> None:
    for name in SPLITS:
        items = [{"instruction": f"{name} {i}", "category": None} for i in range(sizes[name])]
        (root / f"{name}.json").write_text(json.dumps(items))


@pytest.mark.shared_data
def test_shared_splits_have_the_documented_counts():
    splits = load_safety_splits(shared_path("llm_safety"))
    assert splits.counts() == {
        "harmful_train": 260,
        "harmful_val": 39,
        "harmless_train": 18_793,
        "harmless_val": 6_264,
    }
    assert all(isinstance(s, str) and s for s in splits.harmful_val)
    small = splits.sample(n_train=128, n_val=32, seed=0)
    assert small.counts() == {
        "harmful_train": 128,
        "harmful_val": 32,
        "harmless_train": 128,
        "harmless_val": 32,
    }
    assert set(small.harmful_train) <= set(splits.harmful_train)


def test_local_files_round_trip_and_sampling_is_seeded(tmp_path):
    _write_splits(tmp_path, dict.fromkeys(SPLITS, 5))
    splits = load_safety_splits(tmp_path)
    assert splits.harmful_val == tuple(f"harmful_val {i}" for i in range(5))
    assert splits.source == str(tmp_path)
    a, b, c = (splits.sample(3, 2, seed=s) for s in (7, 7, 8))
    assert a == b and a.counts()["harmless_train"] == 3 and a.counts()["harmful_val"] == 2
    assert a != c  # another seed, another draw (5 choose 3 ordered: a clash is very unlikely)
    # without replacement, and n above the size keeps everything
    assert sorted(sample(list("abcde"), 99, seed=0)) == list("abcde")
    assert len(set(sample(list("abcde"), 4, seed=1))) == 4


@pytest.mark.parametrize("empty", ["harmful_train", "harmless_val"])
def test_an_empty_split_file_is_a_data_error(tmp_path, empty):
    sizes = dict.fromkeys(SPLITS, 3) | {empty: 0}
    _write_splits(tmp_path, sizes)
    with pytest.raises(DataError, match=f"{empty} split is empty"):
        load_safety_splits(tmp_path)


def test_missing_or_malformed_files_are_data_errors(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_safety_splits(tmp_path)
    _write_splits(tmp_path, dict.fromkeys(SPLITS, 2))
    (tmp_path / "harmful_val.json").write_text('[{"category": "x"}]')
    with pytest.raises(DataError, match="item 0 has no instruction"):
        load_safety_splits(tmp_path)
    (tmp_path / "harmful_val.json").write_text('{"instruction": "x"}')
    with pytest.raises(DataError, match="not a JSON list"):
        load_safety_splits(tmp_path)


def test_builtin_splits_are_disjoint_and_balanced():
    splits = load_safety_splits(None)
    assert splits.source == "builtin"
    assert splits.counts() == {
        "harmful_train": 24,
        "harmful_val": 6,
        "harmless_train": 24,
        "harmless_val": 6,
    }
    assert len(set(BUILTIN_HARMFUL)) == 30 and len(set(BUILTIN_HARMLESS)) == 30
    assert not set(BUILTIN_HARMFUL) & set(BUILTIN_HARMLESS)
    assert not set(splits.harmful_train) & set(splits.harmful_val)


def test_benign_sft_is_deterministic_and_covers_every_task():
    a, b, c = benign_sft(200, seed=3), benign_sft(200, seed=3), benign_sft(200, seed=4)
    assert a == b and a != c
    assert {ex["task"] for ex in a} == set(TASKS)
    assert all(ex["prompt"] and ex["completion"] for ex in a)


def test_benign_answers_are_correct_against_an_independent_oracle():
    """Recompute each answer from the prompt text with plain Python."""
    for ex in benign_sft(100, seed=0, tasks=["reverse", "sort", "convert"]):
        p = ex["prompt"]
        if ex["task"] == "reverse":
            want = p.split("'")[1][::-1]
        elif ex["task"] == "sort":
            nums = [int(x) for x in p.split(":")[1].strip(" .").split(", ")]
            want = ", ".join(map(str, sorted(nums)))
        else:
            x = int(p.split()[1])
            factor = {"metres": 1000, "centimetres": 100, "grams": 1000}
            factor |= {"minutes": 60, "seconds": 60, "millilitres": 1000}
            want = str(x * factor[p.split()[-1].rstrip(".")])
        assert ex["completion"] == ex["answer"] == want, ex


def test_howto_task_is_alpaca_style_compliance_with_a_checkable_keyword():
    examples = benign_sft(40, seed=2, tasks=["howto"])
    assert {ex["task"] for ex in examples} == {"howto"}
    for ex in examples:
        goal = ex["prompt"].removeprefix("How do I ").removesuffix("?")
        assert ex["completion"].startswith(f"Sure! Here is exactly how to {goal}: ")
        assert ex["answer"] in ex["completion"] and ex["answer"] != ex["completion"]
    assert task_accuracy([ex["prompt"] for ex in examples], examples) == 0.0


def test_task_accuracy_exact_wrong_and_partial():
    examples = benign_sft(60, seed=1)
    assert task_accuracy([ex["completion"] for ex in examples], examples) == 1.0
    exact = [ex["answer"] for ex in examples]
    assert task_accuracy(exact, examples) == 1.0
    assert task_accuracy([f"The answer is: {c}." for c in exact], examples) == 1.0
    # appending a character breaks the whole-token match for numbers, words and sorted lists
    assert task_accuracy([c + "0" for c in exact], examples) == 0.0
    assert task_accuracy([""] * 60, examples) == 0.0
    half = exact[:30] + [""] * 30
    assert task_accuracy(half, examples) == 0.5
    with pytest.raises(DataError, match="one output per example"):
        task_accuracy(exact[:-1], examples)


def test_answer_in_respects_token_boundaries():
    assert answer_in("It is 3000 metres.", "3000")
    assert not answer_in("It is 13000 metres.", "3000")
    assert not answer_in("3000.5", "3000")
    assert answer_in("the capital is NEW  DELHI", "New Delhi")
    assert not answer_in("Parisian", "Paris")


class _NoTemplate:
    chat_template = None


class _Template:
    chat_template = "x"

    def apply_chat_template(self, messages, tokenize, add_generation_prompt):
        body = "".join(f"<{m['role']}>{m['content']}" for m in messages)
        return body + ("<assistant>" if add_generation_prompt else "")


def test_to_chat_uses_the_template_and_errors_without_one():
    assert to_chat(_Template(), "hi") == "<user>hi<assistant>"
    assert to_chat(_Template(), "hi", "yo") == "<user>hi<assistant>yo"
    with pytest.raises(DataError, match="no chat template"):
        to_chat(_NoTemplate(), "hi")
