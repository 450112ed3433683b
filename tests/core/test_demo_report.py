"""The demo report's table: one row per system, seconds matched to the registered name."""

from __future__ import annotations

from clinfuse.core.learner import DemoResult
from clinfuse.report.demo import write_report


def test_rows_with_a_qualified_system_name_get_their_seconds(tmp_path):
    rows = [
        DemoResult("procon (procon_wu)", "builtin", "mean cos", 0.95, "no drift", 1.0),
        DemoResult("dib", "synthetic_mosi", "acc", 0.9, "ridge", 0.8),
    ]
    md, html = write_report(
        rows, {"tunsr": "boom"}, tmp_path, {"procon": 42.4, "dib": 7.0, "tunsr": 3}
    )
    table = [line for line in md.read_text().splitlines() if line.startswith("| ")]
    assert (
        table[1] == "| procon (procon_wu) | builtin | mean cos | 0.9500 | no drift | 1.0000 | 42 |"
    )
    assert table[2].endswith("| 7 |") and table[3] == "| tunsr | - | FAILED | - | - | - | 3 |"
    assert html.is_file()
