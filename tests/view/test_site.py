"""The site writer without a browser: escaping, links kept inside the viewed folder, errors, and
the demo report's HTML (Markdown tables rendered)."""

from __future__ import annotations

import pytest

from clinfuse.cli import main
from clinfuse.core.errors import RunDirError
from clinfuse.core.learner import DemoResult
from clinfuse.core.runs import RunDir
from clinfuse.report.demo import write_report
from clinfuse.report.view import build_site
from clinfuse.report.view.markdown import markdown_to_html
from clinfuse.report.view.site import Site, page_name


def test_markdown_tables_and_text_are_escaped():
    out = markdown_to_html(
        "# T <b>\n\nintro `x<y`\n\n| policy | value |\n|---|---:|\n| <script>1</script> | 2 |\n"
    )
    assert "<h1>T &lt;b&gt;</h1>" in out and "<code>x&lt;y</code>" in out
    assert "<td>&lt;script&gt;1&lt;/script&gt;</td><td>2</td>" in out
    assert "|---|" not in out and "<script>" not in out


def test_demo_report_html_renders_the_notes_table(tmp_path):
    notes = "policies on the test set:\n\n| policy | WIS |\n|---|---|\n| DeepEN | 0.51 |\n"
    row = DemoResult("deepen", "sim", "WIS", 0.5, "clinician", 0.4, notes=notes)
    _, html = write_report([row], {}, tmp_path, {"deepen": 3.0})
    page = html.read_text()
    assert "<td>DeepEN</td><td>0.51</td>" in page
    assert "| DeepEN |" not in page and "|---|" not in page


def test_links_stay_inside_the_viewed_folder(tmp_path):
    root = tmp_path / "build"
    (root / "a").mkdir(parents=True)
    (root / "a" / "x.png").write_bytes(b"png")
    (tmp_path / "outside.png").write_bytes(b"png")
    site = Site(root=root, out=root / "site")
    assert site.link("a/x.png", root / "site") == "../a/x.png"
    assert site.link(root / "a" / "x.png", root / "site" / "records") == "../../a/x.png"
    assert site.link("../outside.png", root / "site") is None
    assert site.link(tmp_path / "outside.png", root / "site") is None
    assert site.link("a/missing.png", root / "site") is None
    assert site.link(None, root) is None and site.link(float("nan"), root) is None


def test_page_names_from_data_are_safe_and_unique():
    taken: set[str] = set()
    names = [page_name(s, taken) for s in ["../../etc/passwd", "A", "a", "<x>", "<x>"]]
    assert names == ["etc_passwd", "A", "a-2", "x", "x-2"]
    assert all("/" not in n and not n.startswith(".") for n in names)


def test_a_folder_that_is_not_a_run_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "some.txt").write_text("x")
    with pytest.raises(RunDirError, match="neither a clinfuse run"):
        build_site(tmp_path)
    assert main(["view", str(tmp_path / "nope")]) == 2
    assert "not a directory" in capsys.readouterr().err


def test_run_page_lists_config_history_and_tables(tmp_path):
    rd = RunDir.create(tmp_path / "run", "toy", {"lr": 0.1, "name": "<i>x</i>"})
    for e in (1, 2):
        rd.log_epoch({"epoch": e, "train_loss": 1.0 / e})
    rd.write_metrics({"test_auc": 0.8})
    import pandas as pd

    rd.write_predictions(pd.DataFrame({"id": range(3), "explanation": ["a | b", "c", "<d>"]}))
    (rd.path / "plots" / "curve.png").write_bytes(b"png")
    index = build_site(rd.path)
    page = index.read_text()
    assert index == rd.path / "site" / "index.html"
    assert "&lt;i&gt;x&lt;/i&gt;" in page and "<i>x</i>" not in page
    assert 'src="../plots/curve.png"' in page
    assert '"explanation"' in page and "\\u003cd\\u003e" in page  # JSON data, escaped
    assert (rd.path / "site" / "assets" / "site.js").is_file()
