r"""Synthetic grounded reasoning samples for the stage-2 cold start.

The paper cold-starts its reasoning format on 3.9K synthetic reasoning samples whose generator is
described neither in the paper's available text nor in the official repository
(DeepReasoning/DeepMedix-R1 holds only the prompt and the reward). This module writes templated
stand-ins [inferred]: for each record, a reasoning passage that inspects one to three image
regions, each cited as a box ``[x1, y1, x2, y2]``, followed by the boxed answer:

.. code-block:: text

    <think>The question asks about ... The upper right zone [0, 0, 171, 171] ... </think>
    The answer is: \boxed{<answer>}

Regions are the record's ground-truth boxes when it has some, else seeded cells of a
``grid x grid`` partition of the ``image_size``-pixel input. For ``grid=3`` the cells are named
anatomically (rows upper / middle / lower; columns the patient's right / central / left, as on
a PA film where the patient's right is the image's left); other grids use row/column numbers.

Every completion passes the format check and scores full accuracy under
:func:`~clinfuse.methods.deepmedix.rewards.xray_score` in both modes, except for answers the
official tag normalisation alters (``"a / b"``: spaces around ``/``, ``<`` or ``>``), which cannot
score full accuracy under ``compat="deepmedix"`` whatever the model writes.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from clinfuse.core.errors import DataError
from clinfuse.methods.deepmedix.data import XrayRecord
from clinfuse.methods.deepmedix.prompt import build_prompt, format_box

__all__ = ["grid_cells", "reasoning_samples"]

Box = tuple[float, float, float, float]

_ROWS3 = ("upper", "middle", "lower")
_COLS3 = ("right", "central", "left")  # patient's side on a PA image

_LOOK = (
    "The {zone} zone {box} is examined first.",
    "Next, I inspect the {zone} zone {box}.",
    "I focus on the {zone} region {box} and compare it with the surrounding tissue.",
    "The {zone} area {box} is reviewed for density, contour and symmetry.",
)
_CLOSE = {
    "list": "Taking the regions together, the items that apply are: {items}.",
    "report": "These regional observations are summarised in the report.",
    "short": "Combining these observations, the answer is {answer}.",
}


def grid_cells(image_size: int = 512, grid: int = 3) -> list[tuple[str, Box]]:
    """The ``grid x grid`` cells of the image as ``(name, box)``, row-major, integer pixels.

    Example:
        >>> grid_cells(512, 3)[0]
        ('upper right', (0.0, 0.0, 171.0, 171.0))
        >>> grid_cells(512, 3)[-1][1]
        (341.0, 341.0, 512.0, 512.0)
    """
    if grid < 1 or image_size < grid:
        raise DataError("bad grid", expected="1 <= grid <= image_size", found=(grid, image_size))
    edges = np.round(np.linspace(0, image_size, grid + 1)).astype(int)
    cells = []
    for r in range(grid):
        for c in range(grid):
            name = f"{_ROWS3[r]} {_COLS3[c]}" if grid == 3 else f"row {r + 1} column {c + 1}"
            box = (float(edges[c]), float(edges[r]), float(edges[c + 1]), float(edges[r + 1]))
            cells.append((name, box))
    return cells


def _zone_of(box: Sequence[float], image_size: int) -> str:
    """Anatomical name of the 3 x 3 cell that holds a box's centre."""
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    col = min(int(3 * cx / image_size), 2)
    row = min(int(3 * cy / image_size), 2)
    return f"{_ROWS3[max(row, 0)]} {_COLS3[max(col, 0)]}"


def _clean_question(question: str) -> str:
    text = re.sub(r"<[^>]*>|\\boxed", " ", question)
    return " ".join(text.replace("<", " ").replace(">", " ").split())


def _kind(record: XrayRecord) -> str:
    if "|" in record.answer:
        return "list"
    return "report" if record.type == "report" or len(record.answer.split()) > 2 else "short"


def reasoning_samples(
    records: Sequence[XrayRecord],
    *,
    seed: int = 0,
    image_size: int = 512,
    grid: int = 3,
) -> list[dict[str, str | None]]:
    r"""One ``{"prompt", "completion", "image"}`` dict per record (see the module docstring).

    ``prompt`` is :func:`~clinfuse.methods.deepmedix.prompt.build_prompt` of the question, the
    completion is ``<think>...</think> The answer is: \boxed{answer}``, ``image`` the record's
    image path (or None). Deterministic given ``seed``.

    Raises:
        DataError: an answer contains ``{`` or ``}`` (it could not be boxed unambiguously).

    Example:
        >>> rec = XrayRecord(None, "Is there an effusion?", "no", "presence")
        >>> s = reasoning_samples([rec], seed=0)[0]
        >>> s["completion"].endswith(r"</think> The answer is: \boxed{no}")
        True
    """
    cells = grid_cells(image_size, grid)
    rng = np.random.default_rng(seed)
    out: list[dict[str, str | None]] = []
    for i, rec in enumerate(records):
        if "{" in rec.answer or "}" in rec.answer:
            raise DataError(
                f"record {i}: the answer contains a brace",
                expected=r"an answer that can stand inside \boxed{}",
                found=rec.answer,
                fix="remove or replace { and } in the ground truth",
            )
        if rec.boxes:
            regions = [(_zone_of(b, image_size), b) for b in rec.boxes]
        else:
            k = int(rng.integers(1, min(3, len(cells)) + 1))
            regions = [cells[j] for j in rng.choice(len(cells), size=k, replace=False)]
        looks = rng.choice(len(_LOOK), size=len(regions), replace=True)
        parts = [f"The question asks: {_clean_question(rec.question)}"]
        parts += [
            _LOOK[t].format(zone=name, box=format_box(box))
            for t, (name, box) in zip(looks, regions, strict=True)
        ]
        kind = _kind(rec)
        items = ", ".join(s.strip() for s in rec.answer.split("|") if s.strip())
        parts.append(_CLOSE[kind].format(items=items, answer=rec.answer))
        reasoning = " ".join(parts)
        out.append(
            {
                "prompt": build_prompt(rec.question),
                "completion": f"<think>{reasoning}</think> The answer is: \\boxed{{{rec.answer}}}",
                "image": rec.image,
            }
        )
    return out
