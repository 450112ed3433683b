r"""DeepMedix-R1 rewards: format, accuracy and coordinate, as one score and as TRL reward callables.

The official reward (``compute_xray_score`` in the authors' ``src/reward.py``, a fork of EasyR1's
``math.py``) is

.. math::

    r = (1 - w)\,\mathrm{acc} + w\,\mathrm{fmt} + \mathrm{coord}, \qquad w = 0.1,

with, on the output ``o`` after :func:`~clinfuse.methods.deepmedix.prompt.normalize_tags`,

- :math:`\mathrm{fmt} = 1` iff ``o`` fully matches ``<think>.*</think>.*\boxed{.*}.*``;
- :math:`\mathrm{acc}` on the last boxed answer ``a`` against the ground truth ``g`` (all ×1.5):
  a list answer (``|`` in ``g`` and at most 20 words) scores the set-F1 of the lower-cased
  ``|``-separated items; a short answer (at most 2 words) scores case-insensitive exact match;
  anything else (a report) scores :math:`\tfrac13(\mathrm{BLEU}_1 + \mathrm{BLEU}_4 +
  \mathrm{ROUGE\text{-}1\,F})` with nltk's ``sentence_bleu([g], a)``, smoothing method 2;
- :math:`\mathrm{coord} = \min(0.15, \sum_b (0.05 \text{ if } \max b \le 512 \text{ else } -0.2))`
  over the boxes ``b`` in the first ``<think>`` block. No ground-truth box is ever consulted.

Two modes (:data:`Compat`):

``"deepmedix"``
    reproduces the official numbers exactly, quirks included: BLEU over **characters** (raw
    strings are passed to nltk), a missing box read as the answer ``"None"`` (mathruler's
    sentinel: a ground truth "none" then scores full marks), whitespace around ``/`` deleted
    inside the answer, and only ``max(box) <= 512`` checked (negative or inverted boxes earn the
    bonus). ``image_size`` replaces the bound 512.
``"fixed"``
    word-level BLEU on :func:`~clinfuse.methods.deepmedix.metrics.tokenize` tokens (an exact
    token match scores full marks, even below four tokens), no
    ``"None"`` sentinel (no box scores 0), tags normalised without touching the answer, list
    items and short answers compared after whitespace / trailing-period normalisation, and a box
    is valid only if :math:`0 \le x_1 < x_2 \le S` and :math:`0 \le y_1 < y_2 \le S`. With
    ground-truth boxes the coordinate term becomes a grounding reward

    .. math::

        \mathrm{coord} = 0.15\,\frac{2 \sum_{(i,j) \in M} \mathrm{IoU}(p_i, g_j)}{|P| + |G|}
        - 0.2\,n_{\mathrm{invalid}},

    the soft-F1 of a maximum-IoU (Hungarian) matching :math:`M` of the valid predicted boxes
    :math:`P` to the ground-truth boxes :math:`G` [inferred]. Without them it is the official
    presence bonus over valid boxes,
    :math:`\min(0.15, 0.05\,n_{\mathrm{valid}}) - 0.2\,n_{\mathrm{invalid}}`.

Scores stay on the official scale (accuracy in [0, 1.5]) in both modes.
"""

from __future__ import annotations

import functools
import logging
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import numpy as np

from clinfuse.core.errors import ConfigError, require
from clinfuse.methods.deepmedix.prompt import (
    has_format,
    last_boxed,
    normalize_tags,
    normalize_think_tags,
    parse_boxes,
)

__all__ = [
    "Compat",
    "ACCURACY_SCALE",
    "COORD_CAP",
    "answer_kind",
    "accuracy_score",
    "coordinate_score",
    "box_iou",
    "soft_f1",
    "xray_score",
    "make_reward_funcs",
    "completion_text",
]

log = logging.getLogger(__name__)

Compat = Literal["deepmedix", "fixed"]
AnswerKind = Literal["list", "short", "report"]

ACCURACY_SCALE = 1.5
"""Every accuracy branch of the official reward is multiplied by 1.5."""
COORD_CAP = 0.15
"""Largest coordinate reward (three valid boxes)."""
BOX_BONUS = 0.05
"""Reward per valid box (presence bonus)."""
BOX_PENALTY = -0.2
"""Reward per out-of-range box."""
LIST_MAX_WORDS = 20
"""A ground truth with ``|`` and at most this many words is a list answer."""
SHORT_MAX_WORDS = 2
"""A ground truth with at most this many words is a short answer (exact match)."""

Box = tuple[float, float, float, float]
Seq = Sequence[Any]


def answer_kind(ground_truth: str) -> AnswerKind:
    """Which accuracy branch a ground truth takes (the official dispatch, in order).

    Example:
        >>> [answer_kind(g) for g in ("atelectasis | effusion", "Yes", "The heart is normal.")]
        ['list', 'short', 'report']
    """
    n_words = len(ground_truth.strip().split())
    if "|" in ground_truth and n_words <= LIST_MAX_WORDS:
        return "list"
    return "short" if n_words <= SHORT_MAX_WORDS else "report"


# ---------------------------------------------------------------------------------------------
# accuracy


def _set_f1(pred: Sequence[str], gold: Sequence[str]) -> float:
    """Set-F1 of two item lists (the official formula, duplicates collapsed by ``set``)."""
    common = set(gold) & set(pred)
    p = len(common) / len(pred) if pred else 0.0
    r = len(common) / len(gold) if gold else 0.0
    return 2 * p * r / (p + r) if p + r > 0 else 0.0


def _squash(text: str) -> str:
    return " ".join(text.lower().split())


def _short_norm(text: str) -> str:
    return _squash(text).rstrip(".").strip()


def _bleu(reference: Any, hypothesis: Any) -> tuple[float, float]:
    """nltk sentence BLEU-1 and BLEU-4 with smoothing method 2 (strings give character BLEU)."""
    bleu = require("nltk.translate.bleu_score", "llm")
    smooth = bleu.SmoothingFunction().method2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # nltk warns on zero n-gram overlaps
        b1 = bleu.sentence_bleu(
            [reference], hypothesis, weights=(1, 0, 0, 0), smoothing_function=smooth
        )
        b4 = bleu.sentence_bleu(
            [reference], hypothesis, weights=(0.25, 0.25, 0.25, 0.25), smoothing_function=smooth
        )
    return float(b1), float(b4)


@functools.cache
def _rouge1_scorer() -> Any:
    return require("rouge_score.rouge_scorer", "llm").RougeScorer(["rouge1"], use_stemmer=True)


def _rouge1(answer: str, ground_truth: str) -> float:
    return float(_rouge1_scorer().score(answer, ground_truth)["rouge1"].fmeasure)


def _acc_deepmedix(answer: str, ground_truth: str) -> float:
    kind = answer_kind(ground_truth)
    if kind == "list":
        gold = [s.strip().lower() for s in ground_truth.strip().split("|")]
        pred = [s.strip().lower() for s in answer.strip().split("|")]
        return _set_f1(pred, gold) * ACCURACY_SCALE
    if kind == "short":
        return ACCURACY_SCALE if answer.lower() == ground_truth.lower() else 0.0
    b1, b4 = _bleu(ground_truth, answer)
    return (b1 + b4 + _rouge1(answer, ground_truth)) / 3 * ACCURACY_SCALE


def _acc_fixed(answer: str, ground_truth: str) -> float:
    if not answer.strip():
        return 0.0
    kind = answer_kind(ground_truth)
    if kind == "list":
        gold = [_squash(s) for s in ground_truth.split("|") if s.strip()]
        pred = [_squash(s) for s in answer.split("|") if s.strip()]
        return _set_f1(pred, gold) * ACCURACY_SCALE
    if kind == "short":
        return ACCURACY_SCALE if _short_norm(answer) == _short_norm(ground_truth) else 0.0
    from clinfuse.methods.deepmedix.metrics import tokenize

    hyp, ref = tokenize(answer), tokenize(ground_truth)
    if not hyp or not ref:
        return 0.0
    if hyp == ref:  # BLEU-4 is below 1 for an exact copy shorter than 4 tokens
        return ACCURACY_SCALE
    b1, b4 = _bleu(ref, hyp)
    return (b1 + b4 + _rouge1(answer, ground_truth)) / 3 * ACCURACY_SCALE


def accuracy_score(output: str, ground_truth: str, *, compat: Compat = "deepmedix") -> float:
    r"""Accuracy term in [0, 1.5] of one model output (its last ``\boxed{}``) against the truth.

    Example:
        >>> accuracy_score(r"<think>.</think> \boxed{YES}", "yes")
        1.5
        >>> accuracy_score("no box", "None"), accuracy_score("no box", "None", compat="fixed")
        (1.5, 0.0)
    """
    if compat == "deepmedix":
        answer = last_boxed(normalize_tags(output))
        answer = "None" if answer is None else (answer or " ")  # mathruler sentinel, official ' '
        return _acc_deepmedix(answer, ground_truth)
    return _acc_fixed(last_boxed(normalize_think_tags(output)) or "", ground_truth)


# ---------------------------------------------------------------------------------------------
# coordinates


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two ``[x1, y1, x2, y2]`` boxes (0 for degenerate boxes).

    Example:
        >>> box_iou([0, 0, 2, 2], [1, 1, 3, 3])
        0.14285714285714285
    """
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(iw, 0.0) * max(ih, 0.0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def soft_f1(pred: Sequence[Sequence[float]], gold: Sequence[Sequence[float]]) -> float:
    r"""Matched soft-F1 :math:`2\sum_{(i,j)\in M}\mathrm{IoU}_{ij} / (|P| + |G|)`.

    :math:`M` is the one-to-one matching that maximises the summed IoU (Hungarian algorithm).
    1 iff the predicted boxes equal the ground-truth boxes (as a set); 0 if either is empty.

    Example:
        >>> soft_f1([[0, 0, 2, 2]], [[0, 0, 2, 2], [5, 5, 6, 6]])
        0.6666666666666666
    """
    if not len(pred) or not len(gold):
        return 0.0
    from scipy.optimize import linear_sum_assignment

    iou = np.array([[box_iou(p, g) for g in gold] for p in pred])
    rows, cols = linear_sum_assignment(iou, maximize=True)
    return float(2 * iou[rows, cols].sum() / (len(pred) + len(gold)))


def _valid_box(box: Box, size: float) -> bool:
    x1, y1, x2, y2 = box
    return 0 <= x1 < x2 <= size and 0 <= y1 < y2 <= size


def coordinate_score(
    output: str,
    *,
    compat: Compat = "deepmedix",
    gt_boxes: Sequence[Sequence[float]] | None = None,
    image_size: int = 512,
) -> float:
    """Coordinate term of one output (see the module docstring for both modes).

    Example:
        >>> round(coordinate_score("<think>[0, 0, 9, 9] [1, 1, 600, 2]</think>"), 6)
        -0.15
        >>> coordinate_score("<think>[0, 0, 9, 9]</think>", compat="fixed", gt_boxes=[[0, 0, 9, 9]])
        0.15
    """
    boxes = parse_boxes(output)
    if compat == "deepmedix":
        value = sum((BOX_PENALTY if max(b) > image_size else BOX_BONUS for b in boxes), 0.0)
        return float(min(value, COORD_CAP))
    valid = [b for b in boxes if _valid_box(b, image_size)]
    penalty = BOX_PENALTY * (len(boxes) - len(valid))
    if gt_boxes is not None and len(gt_boxes):
        return COORD_CAP * soft_f1(valid, gt_boxes) + penalty
    return float(min(BOX_BONUS * len(valid), COORD_CAP) + penalty)


# ---------------------------------------------------------------------------------------------
# the score


def xray_score(
    output: str,
    ground_truth: str,
    *,
    compat: Compat = "deepmedix",
    gt_boxes: Sequence[Sequence[float]] | None = None,
    image_size: int = 512,
    format_weight: float = 0.1,
) -> dict[str, float]:
    r"""Score of one output: keys ``overall``, ``accuracy``, ``format``, ``coordinate``.

    ``overall`` :math:`= (1-w)\,\mathrm{acc} + w\,\mathrm{fmt} + \mathrm{coord}` with
    :math:`w` = ``format_weight``. ``gt_boxes`` are used by ``compat="fixed"`` only.

    Example:
        >>> out = r"<think>lungs [10, 10, 200, 300]</think> The answer is: \boxed{Yes}"
        >>> s = xray_score(out, "yes")
        >>> {k: round(v, 4) for k, v in s.items()}
        {'overall': 1.5, 'accuracy': 1.5, 'format': 1.0, 'coordinate': 0.05}
    """
    if compat not in _MODES:
        raise ConfigError("unknown reward mode", expected=list(_MODES), found=compat)
    fmt = 1.0 if has_format(output) else 0.0
    acc = accuracy_score(output, ground_truth, compat=compat)
    coord = coordinate_score(output, compat=compat, gt_boxes=gt_boxes, image_size=image_size)
    overall = (1 - format_weight) * acc + format_weight * fmt + coord
    return {"overall": overall, "accuracy": acc, "format": fmt, "coordinate": coord}


_MODES: tuple[Compat, ...] = ("deepmedix", "fixed")


# ---------------------------------------------------------------------------------------------
# TRL reward callables


def completion_text(completion: Any) -> str:
    """The text of one TRL completion: a string, or a conversation whose last message is used.

    Message content may be a string or a list of ``{"type": "text", "text": ...}`` parts.

    Example:
        >>> completion_text([{"role": "assistant", "content": [{"type": "text", "text": "hi"}]}])
        'hi'
    """
    if completion is None:
        return ""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, Mapping):
        content = completion.get("content", "")
        if isinstance(content, str):
            return content
        return "".join(
            p.get("text", "") if isinstance(p, Mapping) else str(p) for p in content or []
        )
    if isinstance(completion, Sequence) and completion:
        return completion_text(completion[-1])
    return ""


def _boxes_of(value: Any) -> tuple[Box, ...] | None:
    """Ground-truth boxes from a data set cell (list of 4-lists, numpy arrays, or empty/None)."""
    if value is None:
        return None
    arr = np.asarray([list(np.asarray(b, dtype=float)) for b in value], dtype=float)
    if arr.size == 0:
        return None
    return tuple(tuple(float(v) for v in row) for row in arr.reshape(-1, 4))


@functools.lru_cache(maxsize=4096)
def _cached_score(
    text: str,
    gt: str,
    compat: Compat,
    boxes: tuple[Box, ...] | None,
    image_size: int,
    format_weight: float,
) -> dict[str, float]:
    return xray_score(
        text, gt, compat=compat, gt_boxes=boxes, image_size=image_size, format_weight=format_weight
    )


def make_reward_funcs(
    compat: Compat = "deepmedix",
    *,
    answer_column: str = "answer",
    boxes_column: str = "boxes",
    format_weight: float = 0.1,
    image_size: int = 512,
) -> list[Callable[..., list[float]]]:
    r"""The three reward terms as TRL ``GRPOTrainer`` reward callables, named ``format``,
    ``accuracy`` and ``coordinate``.

    Each callable is ``f(prompts, completions, **columns) -> list[float]`` and returns its
    **weighted contribution**: :math:`w\,\mathrm{fmt}`, :math:`(1-w)\,\mathrm{acc}` and
    :math:`\mathrm{coord}`, so that with TRL's default ``reward_weights`` (all 1) their sum is
    exactly :func:`xray_score`'s ``overall``. The ground truth comes from the data set column
    ``answer_column``; ``compat="fixed"`` also reads ground-truth boxes from ``boxes_column`` when
    the data set has it. A completion that fails the format check is logged (DEBUG) and scored
    like any other; nothing raises on model output.

    Raises:
        ConfigError: the batch has no ``answer_column`` (a data set/config mismatch).
    """
    if compat not in _MODES:
        raise ConfigError("unknown reward mode", expected=list(_MODES), found=compat)

    def scores(completions: Sequence[Any], columns: Mapping[str, Any]) -> list[dict[str, float]]:
        if answer_column not in columns:
            raise ConfigError(
                "the reward needs the ground-truth answer column",
                expected=answer_column,
                found=sorted(columns),
                fix="pass answer_column= the name of the answer column of the training set",
            )
        answers = columns[answer_column]
        boxes = columns.get(boxes_column) if compat == "fixed" else None
        out = []
        for i, completion in enumerate(completions):
            text = completion_text(completion)
            gt = "" if answers[i] is None else str(answers[i])
            try:
                gt_boxes = _boxes_of(boxes[i]) if boxes is not None else None
            except (TypeError, ValueError):
                log.warning("row %d: unreadable ground-truth boxes %r; ignored", i, boxes[i])
                gt_boxes = None
            s = _cached_score(text, gt, compat, gt_boxes, image_size, format_weight)
            if s["format"] == 0.0:
                log.debug("completion %d fails the <think>/\\boxed{} format: %.80r", i, text)
            out.append(s)
        return out

    def format(prompts: Any = None, completions: Sequence[Any] = (), **columns: Any) -> list[float]:  # noqa: A001
        return [format_weight * s["format"] for s in scores(completions, columns)]

    def accuracy(
        prompts: Any = None, completions: Sequence[Any] = (), **columns: Any
    ) -> list[float]:
        return [(1 - format_weight) * s["accuracy"] for s in scores(completions, columns)]

    def coordinate(
        prompts: Any = None, completions: Sequence[Any] = (), **columns: Any
    ) -> list[float]:
        return [s["coordinate"] for s in scores(completions, columns)]

    funcs = [format, accuracy, coordinate]
    for f in funcs:
        f.__qualname__ = f.__name__
    return funcs
