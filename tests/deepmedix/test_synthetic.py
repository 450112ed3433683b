"""Synthetic stage-2 reasoning samples: format 1 and full accuracy under the reward, grid boxes."""

from __future__ import annotations

import pytest

from clinfuse.core.errors import DataError
from clinfuse.methods.deepmedix.data import XrayRecord, default_records, report_records_to_xray
from clinfuse.methods.deepmedix.openi import openi_report_records
from clinfuse.methods.deepmedix.prompt import build_prompt, parse_boxes
from clinfuse.methods.deepmedix.rewards import xray_score
from clinfuse.methods.deepmedix.synthetic import grid_cells, reasoning_samples


@pytest.fixture(scope="module")
def records():
    recs = default_records(10, seed=0)
    try:
        reports = openi_report_records(40)
    except DataError:
        reports = []
    recs += report_records_to_xray(reports, "findings") + report_records_to_xray(
        reports, "impression"
    )
    recs.append(XrayRecord("x.png", "Which devices?", "pacemaker | picc line | et tube", "list"))
    return recs


@pytest.mark.parametrize("compat", ["deepmedix", "fixed"])
def test_every_sample_scores_format_and_full_accuracy(records, compat):
    samples = reasoning_samples(records, seed=1)
    assert len(samples) == len(records)
    for rec, s in zip(records, samples, strict=True):
        assert s["prompt"] == build_prompt(rec.question) and s["image"] == rec.image
        score = xray_score(s["completion"], rec.answer, compat=compat, gt_boxes=rec.boxes or None)
        assert score["format"] == 1.0, s["completion"]
        assert score["accuracy"] == pytest.approx(1.5), (rec.answer, s["completion"])
        assert score["coordinate"] > 0


def test_boxes_are_grid_cells_or_the_records_boxes(records):
    cells = {box for _, box in grid_cells(512, 3)}
    for rec, s in zip(records, reasoning_samples(records, seed=2), strict=True):
        boxes = parse_boxes(s["completion"])
        if rec.boxes:
            assert tuple(boxes) == rec.boxes
        else:
            assert 1 <= len(boxes) <= 3 and set(boxes) <= cells and len(set(boxes)) == len(boxes)


def test_grid_partitions_the_image():
    for size, grid in ((512, 3), (448, 4), (100, 1)):
        cells = grid_cells(size, grid)
        assert len(cells) == grid * grid
        area = sum((x2 - x1) * (y2 - y1) for _, (x1, y1, x2, y2) in cells)
        assert area == size * size
    assert [n for n, _ in grid_cells(512, 3)][:3] == ["upper right", "upper central", "upper left"]
    with pytest.raises(DataError):
        grid_cells(2, 3)


def test_seeded_and_varied(records):
    a = reasoning_samples(records, seed=5)
    assert a == reasoning_samples(records, seed=5)
    assert a != reasoning_samples(records, seed=6)
    reasoning = [s["completion"].split("</think>")[0] for s in a]
    assert len(set(reasoning)) >= 0.8 * len(a)  # same question, same cells by chance otherwise
    assert {len(parse_boxes(s["completion"])) for s in a} == {1, 2, 3}


def test_brace_in_answer_is_rejected():
    with pytest.raises(DataError, match="brace"):
        reasoning_samples([XrayRecord(None, "q", "a {b}", "short")])


def test_docstring_examples():
    import doctest

    from clinfuse.methods.deepmedix import synthetic as module

    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
