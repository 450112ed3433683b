"""DeepMedix-R1 data: xraybench-style VQA records, report records, and an embedded default set.

Formats read by :func:`load_records` (``.jsonl`` one JSON object per line, or ``.parquet``):

=============  ========================================================================
column         meaning
=============  ========================================================================
``question``   the question or instruction (aliases ``problem``, ``query``, ``prompt``)
``answer``     the ground truth (aliases ``solution``, ``ground_truth``); a list answer
               joins its items with ``|``; a report answer is free text. Required.
``image``      an image path, or ``null`` (aliases ``images`` / ``image_path``; a list
               keeps its first element; a Hugging Face image cell ``{"path": ...}``
               keeps its path); relative to the record file's folder, and refused when
               it lies outside that folder unless ``allow_outside=True``
``type``       question type (``presence``, ``view``, ``report``...); inferred from the
               answer (:func:`infer_type`) when absent
``boxes``      optional ground-truth boxes ``[[x1, y1, x2, y2], ...]`` in the pixel
               frame of the 512 x 512 model input
=============  ========================================================================

xraybench's exact column names were not available offline; the aliases cover EasyR1's
``problem`` / ``answer`` / ``images`` layout [inferred].

:func:`default_image` is the real CR chest PA radiograph that pydicom-data ships
(``RG1_UNCR.dcm``, MONOCHROME1, 1955 x 1841, 15 bit), and :func:`default_records` a small VQA set
about it whose answers come from its DICOM header (view PA, body part chest, sex F) and from its
visible bilateral rounded opacities (our reading of the image [inferred]). Its lung boxes are
hand-placed on the 512 x 512 image [inferred].
"""

from __future__ import annotations

import functools
import json
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from clinfuse.core.errors import DataError, reads_untrusted, require
from clinfuse.core.packages import package_dir
from clinfuse.core.paths import input_path
from clinfuse.core.runs import atomic_path
from clinfuse.methods.deepmedix.prompt import build_prompt

__all__ = [
    "XrayRecord",
    "ReportRecord",
    "infer_type",
    "load_records",
    "records_to_frame",
    "report_records_to_xray",
    "REPORT_QUESTIONS",
    "default_image",
    "default_image_path",
    "default_records",
]

log = logging.getLogger(__name__)

Box = tuple[float, float, float, float]

_ALIASES: dict[str, tuple[str, ...]] = {
    "question": ("question", "problem", "query", "prompt"),
    "answer": ("answer", "solution", "ground_truth"),
    "image": ("image", "images", "image_path"),
    "type": ("type", "question_type", "category"),
    "boxes": ("boxes", "bboxes", "gt_boxes"),
}


@dataclass(frozen=True)
class XrayRecord:
    """One VQA or report-generation item in the xraybench layout."""

    image: str | None
    """Path of the image, or None for text-only use."""
    question: str
    """The question (without the DeepMedix suffix; :func:`build_prompt` adds it)."""
    answer: str
    """Ground truth: a short answer, ``|``-joined list items, or a report."""
    type: str
    """Question type (``presence``, ``view``, ``short``, ``list``, ``report``...)."""
    boxes: tuple[Box, ...] = ()
    """Ground-truth boxes ``(x1, y1, x2, y2)`` in model-input pixels, if the data has them."""


@dataclass(frozen=True)
class ReportRecord:
    """One radiology report, split into its FINDINGS and IMPRESSION sections."""

    image: str | None
    """Path of the image, or None (OPEN-I reports ship without images here)."""
    findings: str
    """The FINDINGS section ("" when missing)."""
    impression: str
    """The IMPRESSION section ("" when missing)."""
    study: str
    """Study identifier (OPEN-I: ``CXR<n>``)."""


def infer_type(answer: str) -> str:
    """``list`` for ``|``-joined answers, ``short`` for at most two words, else ``report``.

    Example:
        >>> infer_type("effusion | edema"), infer_type("PA"), infer_type("No acute disease.")
        ('list', 'short', 'report')
    """
    if "|" in answer:
        return "list"
    return "short" if len(answer.split()) <= 2 else "report"


# ---------------------------------------------------------------------------------------------
# loading


def _missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return False


def _field(row: Mapping[str, Any], name: str) -> Any:
    for key in _ALIASES[name]:
        if key in row and not _missing(row[key]):
            return row[key]
    return None


def _image_of(value: Any, where: str) -> str | None:
    if _missing(value):
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping):
        if value.get("path"):
            return str(value["path"])
        raise DataError(
            f"{where}: image cell has no path (embedded image bytes are not read)",
            expected='an image path, or {"path": ...}',
            found=sorted(value),
            fix="save the images to files and store their paths in the image column",
        )
    if isinstance(value, Sequence | np.ndarray) and not isinstance(value, bytes):
        return _image_of(value[0], where) if len(value) else None
    raise DataError(
        f"{where}: unreadable image cell", expected="a path", found=type(value).__name__
    )


def _boxes_of(value: Any, where: str) -> tuple[Box, ...]:
    if _missing(value):
        return ()
    try:
        arr = np.asarray([np.asarray(b, dtype=float) for b in value], dtype=float)
    except (TypeError, ValueError) as exc:
        raise DataError(
            f"{where}: unreadable boxes", expected="[[x1, y1, x2, y2], ...]", found=repr(value)
        ) from exc
    if arr.size == 0:
        return ()
    if arr.ndim != 2 or arr.shape[1] != 4 or not np.isfinite(arr).all():
        raise DataError(
            f"{where}: boxes must be finite 4-vectors",
            expected="[[x1, y1, x2, y2], ...]",
            found=repr(value),
        )
    if (arr[:, 2] <= arr[:, 0]).any() or (arr[:, 3] <= arr[:, 1]).any():
        raise DataError(
            f"{where}: a box has x2 <= x1 or y2 <= y1",
            expected="x1 < x2 and y1 < y2",
            found=repr(value),
            fix="store boxes as [x_min, y_min, x_max, y_max]",
        )
    return tuple(tuple(float(v) for v in row) for row in arr)


def _record(
    row: Mapping[str, Any], where: str, root: Path, allow_outside: bool = False
) -> XrayRecord:
    if not isinstance(row, Mapping):
        raise DataError(f"{where}: not a JSON object", expected="{...}", found=type(row).__name__)
    question, answer = _field(row, "question"), _field(row, "answer")
    if question is None or not str(question).strip():
        raise DataError(
            f"{where}: record without a question",
            expected=f"one of the columns {list(_ALIASES['question'])}",
            found=sorted(row),
        )
    if answer is None or not str(answer).strip():
        raise DataError(
            f"{where}: record without an answer",
            expected=f"a non-empty value in one of {list(_ALIASES['answer'])}",
            found=sorted(row),
            fix="drop unlabelled rows or fill in their ground truth",
        )
    answer = str(answer).strip()
    kind = _field(row, "type")
    image = _image_of(_field(row, "image"), where)
    if image is not None:
        image = str(input_path(root, image, source=where, allow_outside=allow_outside))
    return XrayRecord(
        image=image,
        question=str(question),
        answer=answer,
        type=str(kind) if kind is not None else infer_type(answer),
        boxes=_boxes_of(_field(row, "boxes"), where),
    )


def _jsonl_rows(path: Path) -> Iterable[tuple[str, Any]]:
    with open(path, encoding="utf-8") as fh:
        for i, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            where = f"{path.name} line {i}"
            try:
                yield where, json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(
                    f"{where}: invalid JSON", expected="one JSON object per line", found=str(exc)
                ) from exc


def _parquet_rows(path: Path) -> Iterable[tuple[str, Any]]:
    try:
        frame = pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises several types on corrupt files
        raise DataError(
            f"{path}: unreadable parquet file", expected="a parquet table", found=str(exc)
        ) from exc
    for i, row in enumerate(frame.to_dict(orient="records")):
        yield f"{path.name} row {i}", row


_READERS = {".jsonl": _jsonl_rows, ".parquet": _parquet_rows}


@reads_untrusted("xraybench-style records (.jsonl or .parquet)")
def load_records(path: str | Path, *, allow_outside: bool = False) -> list[XrayRecord]:
    """Read xraybench-style records from ``.jsonl`` or ``.parquet`` (columns in the module doc).

    Image paths are taken relative to the record file's folder; one that resolves outside it
    (``..``, an absolute path elsewhere, a symbolic link) is refused unless ``allow_outside``
    (the path policy of :mod:`clinfuse.core.paths`). No image is opened here.

    Raises:
        DataError: missing file, unknown suffix, invalid row (the message names the row), a
            record without a question or an answer, malformed boxes, or no records at all.
        UnsafePathError: an image path outside the record file's folder (a DataError).
    """
    path = Path(path)
    reader = _READERS.get(path.suffix.lower())
    if reader is None:
        raise DataError(
            "unsupported record file", expected=sorted(_READERS), found=path.suffix or str(path)
        )
    if not path.is_file():
        raise DataError("record file not found", expected="an existing file", found=str(path))
    root = path.parent
    records = [_record(row, where, root, allow_outside) for where, row in reader(path)]
    if not records:
        raise DataError("record file is empty", expected="at least one record", found=str(path))
    log.info("read %d records from %s", len(records), path)
    return records


def records_to_frame(records: Sequence[XrayRecord]) -> pd.DataFrame:
    """One row per record: ``image, question, answer, type, boxes`` plus ``prompt``.

    ``prompt`` is :func:`~clinfuse.methods.deepmedix.prompt.build_prompt` of the question;
    ``boxes`` is a list of ``[x1, y1, x2, y2]`` lists (empty when none), the layout TRL's reward
    callables receive as a column.

    Example:
        >>> df = records_to_frame([XrayRecord(None, "View?", "PA", "view")])
        >>> list(df.columns), df.loc[0, "boxes"]
        (['image', 'question', 'answer', 'type', 'boxes', 'prompt'], [])
    """
    return pd.DataFrame(
        {
            "image": [r.image for r in records],
            "question": [r.question for r in records],
            "answer": [r.answer for r in records],
            "type": [r.type for r in records],
            "boxes": [[list(b) for b in r.boxes] for r in records],
            "prompt": [build_prompt(r.question) for r in records],
        }
    )


REPORT_QUESTIONS = {
    "findings": (
        'Please act as an experienced radiologist and generate the "FINDINGS" section of an X-ray '
        "report based on the provided image(s). Carefully examine the image(s) and describe all "
        "observed anatomical structures and abnormalities in a systematic and objective manner."
    ),
    "impression": (
        'Please act as an experienced radiologist and generate the "IMPRESSION" section of an '
        "X-ray report based on the provided image(s)."
    ),
}
"""Report-generation instructions; the FINDINGS one is xraybench's (as quoted by RadVLM), the
IMPRESSION one is written by analogy [inferred]."""


def report_records_to_xray(
    reports: Sequence[ReportRecord], section: str = "findings"
) -> list[XrayRecord]:
    """Report records as ``type="report"`` XrayRecords for one section; empty sections dropped."""
    if section not in REPORT_QUESTIONS:
        raise DataError("unknown report section", expected=sorted(REPORT_QUESTIONS), found=section)
    out = []
    for r in reports:
        text = getattr(r, section).strip()
        if text:
            out.append(XrayRecord(r.image, REPORT_QUESTIONS[section], text, "report"))
    return out


# ---------------------------------------------------------------------------------------------
# the embedded default: a real chest radiograph from pydicom-data


def _pydicom_data_file(name: str) -> Path:
    root = package_dir("data_store")
    if root is None:
        raise DataError(
            "pydicom-data is not installed",
            expected="the data_store package (pip install pydicom-data)",
            found="no module data_store",
            fix="pip install pydicom-data, or pass your own images",
        )
    path = root / "data" / name
    if not path.is_file():
        raise DataError("pydicom-data file missing", expected=str(path), found="nothing")
    return path


@functools.lru_cache(maxsize=4)
def _default_array(size: int) -> np.ndarray:
    pydicom = require("pydicom", "llm")
    from PIL import Image

    ds = pydicom.dcmread(_pydicom_data_file("RG1_UNCR.dcm"))
    pixels = ds.pixel_array.astype(np.float32)
    lo, hi = np.percentile(pixels, [1.0, 99.0])
    pixels = np.clip((pixels - lo) / max(hi - lo, 1e-6), 0.0, 1.0)
    if str(ds.PhotometricInterpretation).upper() == "MONOCHROME1":
        pixels = 1.0 - pixels  # MONOCHROME1: high values are dark
    img = Image.fromarray(np.round(pixels * 255).astype(np.uint8))
    img = img.resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(img.convert("RGB"))


def default_image(size: int = 512):
    """pydicom-data's CR chest PA (``RG1_UNCR.dcm``) as a ``size x size`` RGB PIL image.

    Intensities are windowed to the 1st-99th percentile and inverted (MONOCHROME1), so the lungs
    are dark and bone is bright.

    Raises:
        DataError: pydicom-data is not installed.
    """
    from PIL import Image

    return Image.fromarray(_default_array(int(size)).copy())


def default_image_path(image_dir: str | Path, size: int = 512) -> Path:
    """Write :func:`default_image` as PNG into ``image_dir`` (atomically, once) and return it."""
    path = Path(image_dir) / f"rg1_uncr_{size}.png"
    if not path.exists():
        with atomic_path(path) as tmp:
            default_image(size).save(tmp, format="PNG")
    return path


# Boxes on the 512 x 512 image (patient's right lung is on the image's left in a PA view)
# [inferred].
_RIGHT_LUNG: Box = (60.0, 50.0, 245.0, 400.0)
_LEFT_LUNG: Box = (265.0, 50.0, 455.0, 400.0)

_DEFAULT_QA: tuple[tuple[str, str, str, tuple[Box, ...]], ...] = (
    ("Is this a chest radiograph?", "yes", "presence", ()),
    ("Are there rounded opacities in the lungs?", "yes", "presence", (_RIGHT_LUNG, _LEFT_LUNG)),
    ("Is this a lateral view?", "no", "view", ()),
    ("What is the view of this chest X-ray?", "PA", "view", ()),
    ("Is this an AP or a PA projection?", "PA", "view", ()),
    ("Which body part is shown in this image?", "chest", "short", ()),
    ("What is the sex of the patient?", "female", "short", ()),
    ("Which imaging modality produced this image?", "computed radiography", "short", ()),
    ("Which lungs contain opacities?", "left lung | right lung", "list", (_RIGHT_LUNG, _LEFT_LUNG)),
    ("List the view position and the body part.", "PA | chest", "list", ()),
)
"""(question, answer, type, boxes) about RG1_UNCR: header facts, plus the opacities [inferred]."""


def default_records(
    n: int = 8, seed: int = 0, image_dir: str | Path | None = None
) -> list[XrayRecord]:
    """A small VQA set on :func:`default_image`: presence / view / short / list questions.

    Items are drawn without replacement from a fixed pool of 10 (cycling when ``n`` is larger)
    in a seeded order. With ``image_dir`` the 512 x 512 PNG is written there and every record
    points to it; otherwise ``image`` is None. Boxes are in that image's pixels.

    Example:
        >>> recs = default_records(4, seed=1)
        >>> len(recs), all(r.image is None for r in recs)
        (4, True)
    """
    if n < 1:
        raise DataError("default_records needs n >= 1", expected=">= 1", found=n)
    image = str(default_image_path(image_dir)) if image_dir is not None else None
    rng = np.random.default_rng(seed)
    order: list[int] = []
    while len(order) < n:
        order.extend(rng.permutation(len(_DEFAULT_QA)).tolist())
    return [
        XrayRecord(image, q, a, t, boxes) for q, a, t, boxes in (_DEFAULT_QA[i] for i in order[:n])
    ]
