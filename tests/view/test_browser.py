"""The sites of a demo run and of each demo build, opened in headless chromium: click through,
images load, the numbers on the page equal the Parquet values, no request leaves the machine."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from clinfuse.report.view import build_site, make_server


def _local_only(requests: list[str]) -> None:
    outside = [u for u in requests if not u.startswith(("file://", "data:"))]
    assert not outside, f"requests left the machine: {outside[:5]}"


def test_demo_index_links_every_system_and_renders_the_report(demo_dir, page, tmp_path):
    index = demo_dir / "site" / "index.html"
    assert index.is_file()
    page.open(index)
    names = page.page.locator("ul.systems a").all_inner_texts()
    assert names == ["dib", "medbanana", "meeti"]
    # the report's Markdown tables are tables, not raw `|` text
    assert page.page.locator("section.md table").count() >= 1
    assert "|---|" not in page.page.locator("section.md").inner_text()
    page.screenshot(tmp_path, "demo_index")
    _local_only(page.requests)
    assert not page.errors


def test_run_page_curves_metrics_plots_and_paged_predictions(demo_dir, page, tmp_path):
    page.open(demo_dir / "site" / "index.html")
    page.page.click("ul.systems a:text-is('dib')")
    page.ready()
    run = demo_dir / "dib"
    metrics = json.loads((run / "metrics.json").read_text())
    cell = page.page.locator("#metrics-table td[data-key='test_acc2']")
    assert float(cell.get_attribute("data-value")) == pytest.approx(metrics["test_acc2"])
    # one curve per default series, one point per epoch
    curves = page.page.locator(".chart polyline.curve")
    assert curves.count() >= 1
    n_epochs = len(pd.read_csv(run / "metrics.csv"))
    points = curves.first.get_attribute("points").split()
    assert len(points) == n_epochs
    for i in range(page.page.locator(".gallery img").count()):
        assert page.image_loaded(f".gallery figure:nth-child({i + 1}) img")
    # predictions: 25 rows a page, "next" pages on, values equal the Parquet file
    preds = pd.read_parquet(run / "predictions.parquet")
    table = page.page.locator("#predictions .datatable").first
    assert table.locator("tbody tr").count() == min(25, len(preds))
    assert f"({len(preds)} rows)" in table.locator(".pageinfo").inner_text()
    table.locator("button.next").click()
    second = table.locator("tbody tr").first.locator("td")
    col = list(preds.columns).index("pred")
    assert float(second.nth(col).get_attribute("data-value")) == pytest.approx(
        float(preds["pred"].iloc[25])
    )
    page.screenshot(tmp_path, "run")
    _local_only(page.requests)
    assert not page.errors


def test_meeti_record_list_filters_and_record_page_equal_the_parquet(demo_dir, page, tmp_path):
    build = demo_dir / "meeti"
    records = pd.read_parquet(build / "records.parquet")
    page.open(demo_dir / "site" / "meeti" / "index.html")
    rows = page.page.locator("#record-list tbody tr")
    assert rows.count() == len(records)
    # the HR filter keeps exactly the records the Parquet table says
    cut = float(records["hr_bpm"].median())
    page.page.fill("#f-hr-min", str(cut))
    page.page.dispatch_event("#f-hr-min", "input")
    assert rows.count() == int((records["hr_bpm"] >= cut).sum())
    page.page.fill("#f-hr-min", "")
    page.page.dispatch_event("#f-hr-min", "input")
    page.screenshot(tmp_path, "meeti_index")
    # click through to the first record
    study = page.page.locator("#record-list tbody tr a").first.inner_text()
    page.page.locator("#record-list tbody tr a").first.click()
    page.ready()
    assert page.image_loaded("#ecg-image")
    rec = records.set_index("study_id").loc[study]
    for key in ("hr_bpm", "pr_ms", "qrs_ms", "qtc_bazett_ms", "qrs_axis_deg"):
        shown = page.page.locator(f"#params td[data-key='{key}']")
        assert float(shown.get_attribute("data-value")) == pytest.approx(float(rec[key]))
        assert shown.inner_text() == f"{float(rec[key]):.6g}"
    beats = pd.read_parquet(build / rec["path_beats"])
    first_lead = page.page.locator("#lead-medians tbody tr").first
    lead = first_lead.locator("th").inner_text()
    qrs_col = page.page.locator("#lead-medians thead th").all_inner_texts().index("qrs_ms")
    median = float(beats[beats["lead"] == lead]["qrs_ms"].median())
    got = first_lead.locator("td").nth(qrs_col - 1).get_attribute("data-value")
    assert float(got) == pytest.approx(median)
    text = json.loads((build / rec["path_text"]).read_text())["text"]
    assert page.page.locator("#interpretation").inner_text().strip() == text.strip()
    page.screenshot(tmp_path, "meeti_record")
    _local_only(page.requests)
    assert not page.errors


def test_medbanana_task_page_shows_every_attempt_and_verdict(demo_dir, page, tmp_path):
    build = demo_dir / "medbanana"
    tasks = pd.read_parquet(build / "tasks.parquet")
    attempts = pd.read_parquet(build / "attempts.parquet")
    page.open(demo_dir / "site" / "medbanana" / "index.html")
    assert page.page.locator("#tasks-data").count() == 1
    links = page.page.locator(".datatable tbody tr td a")
    assert links.count() >= len(tasks)
    accepted = tasks[tasks["status"] == "success"]["task_id"].iloc[0]
    page.screenshot(tmp_path, "medbanana_index")
    page.page.locator(f"a:text-is('{accepted}')").click()
    page.ready()
    assert page.image_loaded("#source-image") and page.image_loaded("#accepted-image")
    mine = attempts[attempts["task_id"] == accepted].sort_values("round")
    cards = page.page.locator("article.attempt")
    assert cards.count() == len(mine)
    for i, (_, a) in enumerate(mine.iterrows()):
        card = cards.nth(i)
        verdict = "accepted" if a["qualified"] else "failed"
        assert card.locator(".verdict").inner_text().lower() == verdict
        assert card.locator(".reason-code").inner_text() == a["reason_code"]
        assert a["instruction"] in card.locator(".prompt").inner_text()
        for s in ("compliance", "realism"):
            if pd.notna(a[s]):
                got = card.locator(f"td[data-key='{s}']").get_attribute("data-value")
                assert float(got) == pytest.approx(float(a[s]))
    page.screenshot(tmp_path, "medbanana_task")
    _local_only(page.requests)
    assert not page.errors


def test_script_in_a_record_text_shows_as_text(demo_dir, page, tmp_path):
    """An interpretation holding <script> and an image path outside the build are harmless."""
    import shutil

    build = tmp_path / "meeti"
    shutil.copytree(demo_dir / "meeti", build, ignore=shutil.ignore_patterns("site"))
    records = pd.read_parquet(build / "records.parquet")
    first = records.iloc[0]
    evil = "<script>window.__pwned = 1</script><img src=x onerror='window.__pwned=2'>"
    interp = json.loads((build / first["path_text"]).read_text())
    interp["text"] = evil
    (build / first["path_text"]).write_text(json.dumps(interp))
    records.loc[0, "path_image"] = "../../../../etc/hostname"
    records.to_parquet(build / "records.parquet", index=False)
    index = build_site(build)
    page.open(index)
    assert page.page.evaluate("window.__pwned") is None
    rhythm_cells = page.page.locator("#record-list tbody td").all_inner_texts()
    assert any("<script>" in c for c in rhythm_cells)
    page.page.locator("#record-list tbody tr a").first.click()
    page.ready()
    assert page.page.evaluate("window.__pwned") is None
    assert page.page.locator("#interpretation").inner_text() == evil
    assert page.page.locator("#ecg-image").count() == 0  # the path outside is not linked
    _local_only(page.requests)


def test_serve_is_loopback_and_read_only(demo_dir, page):
    import threading
    import urllib.error
    import urllib.request

    server = make_server(demo_dir / "meeti", port=0)
    host, port = server.server_address[:2]
    assert host == "127.0.0.1"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        build_site(demo_dir / "meeti")
        base = f"http://127.0.0.1:{port}/"
        page.page.goto(base + "site/index.html")
        page.ready()
        assert page.page.locator("#record-list tbody tr").count() >= 1
        req = urllib.request.Request(base + "site/index.html", data=b"x", method="POST")
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(req)
        assert err.value.code == 501
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(base + "files/")
        assert err.value.code == 403
    finally:
        server.shutdown()
        server.server_close()
