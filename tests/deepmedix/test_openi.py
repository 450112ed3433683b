"""OPEN-I reports from torchxrayvision's data files (never imported) and report corruptions."""

from __future__ import annotations

import importlib.util
import re

import pytest

from clinfuse.core.errors import DataError
from clinfuse.methods.deepmedix import openi
from clinfuse.methods.deepmedix.openi import (
    corrupt_report,
    has_cue,
    load_openi_reports,
    openi_report_records,
)


@pytest.fixture(scope="module")
def reports():
    try:
        return load_openi_reports()
    except DataError as exc:
        pytest.skip(str(exc))


def test_archive_contents(reports):
    assert list(reports.columns) == ["uid", "findings", "impression"]
    assert 3900 <= len(reports) <= 3955 and reports.uid.is_unique
    first = reports.iloc[0]
    assert first.uid == "CXR1"
    assert first.findings.startswith("The cardiac silhouette and mediastinum size are within")
    assert first.impression == "Normal chest x-XXXX."
    assert ((reports.findings != "") | (reports.impression != "")).all()
    assert not reports.findings.str.contains(r"\s\s|\n").any()
    assert (reports.findings != "").sum() > 3000


def test_head_and_records(reports):
    head = load_openi_reports(5)
    assert head.equals(reports.head(5))
    recs = openi_report_records(3)
    assert [r.study for r in recs] == reports.uid.head(3).tolist() and recs[0].image is None
    with pytest.raises(DataError):
        load_openi_reports(0)


def test_missing_torchxrayvision_is_a_data_error(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "torchxrayvision" else real(name, *a),
    )
    with pytest.raises(DataError, match="torchxrayvision"):
        openi.openi_archive()


@pytest.mark.parametrize(
    ("text", "kind", "expected"),
    [
        ("No pneumothorax.", "negation", "Pneumothorax."),
        ("There is no pleural effusion.", "negation", "There is pleural effusion."),
        ("Heart is not enlarged, without edema.", "negation", "Heart is enlarged, with edema."),
        ("Negative for acute disease.", "negation", "Positive for acute disease."),
        ("No effusion nor pneumothorax.", "negation", "Effusion and pneumothorax."),
        (
            "Left lower lobe opacity; right lung clear.",
            "laterality",
            "Right lower lobe opacity; left lung clear.",
        ),
        ("LEFT-sided PICC.", "laterality", "RIGHT-sided PICC."),
        ("Heart size normal. Lungs clear.", "negation", "Heart size normal. Lungs clear."),
        ("Heart size normal. Lungs clear.", "laterality", "Heart size normal. Lungs clear."),
        ("Nodule in the upper lobe.", "negation", "Nodule in the upper lobe."),  # "no" in a word
    ],
)
def test_corrupt_report(text, kind, expected):
    assert corrupt_report(text, kind) == expected
    assert has_cue(text, kind) == (text != expected)


def test_corruptions_on_real_reports(reports):
    texts = [t for t in reports.findings if t]
    for t in texts:
        swapped = corrupt_report(t, "laterality")
        assert corrupt_report(swapped, "laterality") == t  # an involution
        flipped = corrupt_report(t, "negation")
        assert (flipped != t) == has_cue(t, "negation")
        assert not re.search(r"\b(?:no|not)\s+\w", flipped, re.I)
    n_neg = sum(has_cue(t, "negation") for t in texts)
    n_lat = sum(has_cue(t, "laterality") for t in texts)
    assert n_neg > 2000 and n_lat > 800


def test_unknown_corruption():
    with pytest.raises(DataError):
        corrupt_report("No effusion.", "severity")  # type: ignore[arg-type]


def test_docstring_examples():
    import doctest

    from clinfuse.methods.deepmedix import openi as module

    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
