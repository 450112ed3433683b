"""Prompts of the writer, the history-aware refiner and the judge (our wording; the
constraints of the official ``add_disease.py`` / ``remove_disease.py`` prompts of
github.com/richardChenzhihui/med-banana-50k paraphrased: fidelity preservation, negative rules,
minimal change), and robust parsing of the JSON answers."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from clinfuse.llm.base import ImagePart, Message

if TYPE_CHECKING:
    from clinfuse.builders.medbanana.roles import HistoryEntry
    from clinfuse.builders.medbanana.tasks import Task

__all__ = [
    "MODALITY_NAMES",
    "RUBRIC",
    "history_block",
    "initial_messages",
    "judge_messages",
    "normalise_score",
    "normalise_scores",
    "parse_json_object",
    "refine_messages",
]

PROMPT_VERSION = "medbanana-prompts-v1"

MODALITY_NAMES = {
    "chest_xray": "chest radiograph",
    "brain_mri": "brain MRI slice",
    "fundus": "colour fundus photograph",
}

RUBRIC: dict[str, str] = {
    "compliance": "the requested finding is present (add) or gone (remove) as instructed",
    "structure": "anatomy stays plausible: the change sits where this finding occurs, organs "
    "keep their shape, no impossible structures",
    "realism": "it looks like an acquired image: no painted look, no sharp cut-out edges, no "
    "text, no repeated patches; noise and grain match the rest of the image",
    "fidelity": "everything else is untouched: same size, framing, brightness, contrast, "
    "grain, devices, labels and annotations; the change is as small as it can be",
}
"""The four rubric dimensions of the paper, with what each one asks."""

_WRITER_RULES = """Write one editing instruction for an image-editing model.
Requirements:
- Plain words a non-specialist can follow, yet medically correct and specific: what the finding
  looks like, where it sits, how large and how dense it is.
- The result must be indistinguishable from a real acquisition: no painted or synthetic look.
- Preserve fidelity: keep the noise, grain, contrast, brightness, sharpness and field of view;
  leave devices, markers, grid lines, labels and annotations exactly as they are.
- Never add text, sharp artificial edges, copied or repeated patches, or any other finding.
- Change as little as possible: the smallest edit that makes the requested difference.
Answer with JSON only: {"instruction": "<the instruction>"}."""

_GOAL = {
    "add": "Goal: make this {modality} show {disease} while staying otherwise identical.",
    "remove": "Goal: make this {modality}, which shows {disease}, look normal (healthy); do not "
    "introduce any new finding.",
}


def _goal(task: Task) -> str:
    mod = MODALITY_NAMES.get(task.modality, task.modality)
    return _GOAL[task.direction].format(modality=mod, disease=task.disease.replace("_", " "))


def initial_messages(task: Task, source: ImagePart) -> list[Message]:
    """Round 1: the rules, the goal and the source image."""
    return [
        Message("system", _WRITER_RULES),
        Message("user", [_goal(task), "The source image:", source]),
    ]


def history_block(history: Sequence[HistoryEntry]) -> str:
    """``HISTORY OF ALL PREVIOUS ATTEMPTS``, one entry per round: instruction, verdict, scores.

    Example:
        >>> from clinfuse.builders.medbanana.roles import HistoryEntry
        >>> print(history_block([HistoryEntry(1, "add a faint opacity", False, "weak_edit",
        ...                                   "too faint", {"compliance": 0.3})]))
        HISTORY OF ALL PREVIOUS ATTEMPTS
        Attempt 1:
          Instruction: add a faint opacity
          Qualified: no (weak_edit)
          Scores: compliance=0.30
          Judge's reason: too faint
    """
    lines = ["HISTORY OF ALL PREVIOUS ATTEMPTS"]
    for h in history:
        scores = ", ".join(
            f"{k}={v:.2f}" for k, v in h.scores.items() if v is not None and math.isfinite(v)
        )
        lines += [
            f"Attempt {h.round}:",
            f"  Instruction: {h.instruction}",
            f"  Qualified: {'yes' if h.qualified else 'no'} ({h.reason_code})",
            f"  Scores: {scores or 'none'}",
            f"  Judge's reason: {h.reason}",
        ]
    return "\n".join(lines)


def refine_messages(
    task: Task, source: ImagePart, history: Sequence[HistoryEntry]
) -> list[Message]:
    """Rounds >= 2: the rules, the goal, the original source and every earlier attempt."""
    return [
        Message("system", _WRITER_RULES),
        Message(
            "user",
            [
                _goal(task),
                "The original source image (every attempt edits this one):",
                source,
                history_block(history),
                "Find what the failed attempts have in common and write a new instruction that "
                "fixes every one of those failures at once.",
            ],
        ),
    ]


_JUDGE = """You are checking a medical image edit. The first image is the source, the second the
edited result. Score each dimension from 1 (fails) to 5 (fully meets it):
{rubric}
Minor imperfections lower a score; do not round up. Also say whether the edited image shows
{disease} (has_disease) and give a one-sentence reason naming the main problem.
Answer with JSON only: {{"compliance": n, "structure": n, "realism": n, "fidelity": n,
"has_disease": true|false, "reason": "..."}}."""


def judge_messages(task: Task, source: ImagePart, edited: ImagePart) -> list[Message]:
    """The rubric, the goal, the source and the edit (the official judge saw the edit only)."""
    rubric = "\n".join(f"- {k}: {v}" for k, v in RUBRIC.items())
    return [
        Message("system", _JUDGE.format(rubric=rubric, disease=task.disease.replace("_", " "))),
        Message("user", [_goal(task), "Source:", source, "Edited:", edited]),
    ]


def parse_json_object(text: str) -> dict[str, Any]:
    """The first JSON object in ``text`` (code fences and prose around it allowed).

    Raises ``ValueError`` when there is none.

    Example:
        >>> parse_json_object('Sure!\\n```json\\n{"a": 1}\\n```')
        {'a': 1}
    """
    dec = json.JSONDecoder()
    for i, ch in enumerate(text):
        if ch == "{":
            try:
                obj, _ = dec.raw_decode(text, i)
            except json.JSONDecodeError:
                continue
            if isinstance(obj, dict):
                return obj
    raise ValueError(f"no JSON object in {text[:80]!r}")


def normalise_score(v: Any) -> float | None:
    """A rubric score as a number in [0, 1]: booleans 0/1, values in [0, 1] kept, 1-5 scores
    mapped by :math:`(v-1)/4`, 6-10 / 0-100 scales divided; None when missing or not a number.

    Example:
        >>> normalise_score(4), normalise_score(0.7), normalise_score(True), normalise_score("x")
        (0.75, 0.7, 1.0, None)
    """
    if isinstance(v, bool):
        return float(v)
    if isinstance(v, str):
        try:
            v = float(v.strip())
        except ValueError:
            return None
    if not isinstance(v, int | float) or not math.isfinite(v) or v < 0:
        return None
    for hi, f in (
        (1, lambda x: x),
        (5, lambda x: max(x - 1, 0) / 4),
        (10, lambda x: x / 10),
        (100, lambda x: x / 100),
    ):
        if v <= hi:
            return float(f(v))
    return None


def normalise_scores(obj: dict[str, Any]) -> dict[str, float | None]:
    """The :data:`RUBRIC` scores of a judge reply in [0, 1], one scale for the whole reply: when
    any score exceeds 1 all are read on that scale (so a ``1`` on a 1-5 scale is 0, not 1).

    Example:
        >>> normalise_scores({"compliance": 1, "structure": 5, "realism": 3, "fidelity": None})
        {'compliance': 0.0, 'structure': 1.0, 'realism': 0.5, 'fidelity': None}
    """
    raw = {k: obj.get(k) for k in RUBRIC}
    nums = [v for v in raw.values() if isinstance(v, int | float) and not isinstance(v, bool)]
    top = max(nums, default=0)
    if 1 < top <= 5:
        scaled = {k: 5.0 if v is True else 1.0 if v is False else v for k, v in raw.items()}
        return {
            k: None
            if (n := normalise_score(v)) is None
            else (max(float(v) - 1, 0.0) / 4 if not isinstance(v, bool) else n)
            for k, v in scaled.items()
        }
    return {k: normalise_score(v) for k, v in raw.items()}
