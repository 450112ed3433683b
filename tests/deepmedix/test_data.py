"""DeepMedix data: JSONL/Parquet records, errors naming the row, the default radiograph."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clinfuse.core.errors import DataError
from clinfuse.methods.deepmedix.data import (
    ReportRecord,
    XrayRecord,
    default_image,
    default_records,
    load_records,
    records_to_frame,
    report_records_to_xray,
)
from clinfuse.methods.deepmedix.prompt import build_prompt

ROWS = [
    {"image": "a.png", "question": "Is there an effusion?", "answer": "yes", "type": "presence"},
    {  # EasyR1 layout: problem / images / answer, no type, boxes given
        "problem": "Which findings?",
        "images": ["b.png", "c.png"],
        "answer": "edema | effusion",
        "boxes": [[1, 2, 30, 40]],
    },
    {"question": "Write the findings.", "answer": "The lungs are clear.", "image": None},
]


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return path


def test_jsonl_with_aliases_and_inferred_types(tmp_path):
    recs = load_records(write_jsonl(tmp_path / "d.jsonl", ROWS))
    a, b = str(tmp_path / "a.png"), str(tmp_path / "b.png")  # relative to the file's folder
    assert recs[0] == XrayRecord(a, "Is there an effusion?", "yes", "presence")
    assert recs[1] == XrayRecord(
        b, "Which findings?", "edema | effusion", "list", ((1.0, 2.0, 30.0, 40.0),)
    )
    assert recs[2].image is None and recs[2].type == "report"


def test_parquet_round_trip_through_records_to_frame(tmp_path):
    recs = load_records(write_jsonl(tmp_path / "d.jsonl", ROWS))
    frame = records_to_frame(recs)
    assert frame["prompt"].tolist() == [build_prompt(r.question) for r in recs]
    assert frame["boxes"].tolist() == [[], [[1.0, 2.0, 30.0, 40.0]], []]
    frame.to_parquet(tmp_path / "d.parquet")
    assert load_records(tmp_path / "d.parquet") == recs


@pytest.mark.parametrize(
    ("bad_line", "match"),
    [
        ("{not json", "line 2: invalid JSON"),
        (json.dumps({"question": "q?"}), "line 2: record without an answer"),
        (json.dumps({"question": "q?", "answer": "  "}), "line 2: record without an answer"),
        (json.dumps({"answer": "yes"}), "line 2: record without a question"),
        (json.dumps({"question": "q", "answer": "a", "boxes": [[5, 5, 1, 9]]}), "line 2: a box"),
        (json.dumps({"question": "q", "answer": "a", "boxes": [[1, 2, 3]]}), "line 2: boxes"),
        (json.dumps({"question": "q", "answer": "a", "image": {"bytes": "xx"}}), "line 2: image"),
        ("[1, 2]", "line 2: not a JSON object"),
    ],
)
def test_bad_rows_raise_data_errors_naming_the_row(tmp_path, bad_line, match):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(ROWS[0]) + "\n" + bad_line + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=match):
        load_records(path)


def test_file_level_errors(tmp_path):
    with pytest.raises(DataError, match="unsupported"):
        load_records(tmp_path / "d.csv")
    with pytest.raises(DataError, match="not found"):
        load_records(tmp_path / "missing.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n", encoding="utf-8")
    with pytest.raises(DataError, match="empty"):
        load_records(tmp_path / "empty.jsonl")
    (tmp_path / "junk.parquet").write_bytes(b"not parquet")
    with pytest.raises(DataError, match="parquet"):
        load_records(tmp_path / "junk.parquet")


def test_report_records_become_report_vqa_items():
    reps = [
        ReportRecord(None, "Lungs clear.", "Normal.", "CXR1"),
        ReportRecord(None, "", "X.", "2"),
    ]
    findings = report_records_to_xray(reps, "findings")
    assert [r.answer for r in findings] == ["Lungs clear."] and findings[0].type == "report"
    assert len(report_records_to_xray(reps, "impression")) == 2
    with pytest.raises(DataError):
        report_records_to_xray(reps, "history")


def test_default_image_is_the_inverted_monochrome1_radiograph():
    pydicom = pytest.importorskip("pydicom")
    img = default_image(128)
    assert img.size == (128, 128) and img.mode == "RGB"
    arr = np.asarray(img)
    assert (arr[..., 0] == arr[..., 1]).all() and (arr[..., 0] == arr[..., 2]).all()
    root = Path(next(iter(importlib.util.find_spec("data_store").submodule_search_locations)))
    raw = pydicom.dcmread(root / "data" / "RG1_UNCR.dcm").pixel_array.astype(np.float32)
    small = np.asarray(Image.fromarray(raw).resize((128, 128), Image.Resampling.BILINEAR))
    corr = np.corrcoef(small.ravel(), arr[..., 0].astype(float).ravel())[0, 1]
    assert corr < -0.9  # MONOCHROME1: stored high values are displayed dark
    # lungs (dark) are darker than the spine/mediastinum column between them
    lung = arr[20:90, 15:55, 0].mean()
    mediastinum = arr[20:90, 58:70, 0].mean()
    assert lung < mediastinum


def test_default_records_are_seeded_and_write_the_png(tmp_path):
    a = default_records(12, seed=3, image_dir=tmp_path)
    assert a == default_records(12, seed=3, image_dir=tmp_path)
    assert [r.question for r in a] != [r.question for r in default_records(12, seed=4)]
    assert len(a) == 12 and len({r.question for r in a[:10]}) == 10  # a permutation, then cycling
    assert {r.type for r in a} >= {"presence", "view", "short", "list"}
    png = Path(a[0].image)
    assert png.is_file() and all(r.image == str(png) for r in a)
    assert np.array_equal(
        np.asarray(Image.open(png).convert("RGB")), np.asarray(default_image(512))
    )
    for r in a:
        assert all(0 <= x1 < x2 <= 512 and 0 <= y1 < y2 <= 512 for x1, y1, x2, y2 in r.boxes)
    with pytest.raises(DataError):
        default_records(0)


def test_docstring_examples():
    import doctest

    from clinfuse.methods.deepmedix import data as module

    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
