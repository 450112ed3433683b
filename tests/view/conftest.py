"""Fixtures of the `clinfuse view` tests: one small demo folder (a DIB run, a MEETI build and a
Med-Banana build) per session, and headless Debian chromium driven by Playwright."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from clinfuse.report.demo import run_demo

DEMO_SYSTEMS = ["dib", "meeti", "medbanana"]
DEMO_OVERRIDES = {
    "dib": ["epochs=2", "progress=false"],
    "meeti": ["n_simulated=2", "executor=serial", "progress=false"],
    "medbanana": ["executor=serial", "progress=false"],
}


@pytest.fixture(scope="session")
def demo_dir(tmp_path_factory) -> Path:
    """``clinfuse demo dib meeti medbanana`` (shortened), with its site."""
    root = tmp_path_factory.mktemp("demo")
    run_demo(DEMO_SYSTEMS, out=root, progress=False, overrides=DEMO_OVERRIDES)
    return root


def chromium_path() -> str:
    """Debian's chromium (``.ci/run`` installs it); ``CLINFUSE_CHROMIUM`` names another binary."""
    path = os.environ.get("CLINFUSE_CHROMIUM") or shutil.which("chromium")
    if not path:
        if os.environ.get("CLINFUSE_SKIP_BROWSER") == "1":
            pytest.skip("CLINFUSE_SKIP_BROWSER=1 and no chromium")
        pytest.fail("no chromium: `apt-get install -y chromium` (or set CLINFUSE_CHROMIUM)")
    return path


@pytest.fixture(scope="session")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=chromium_path(), args=["--no-sandbox"])
        yield b
        b.close()


class Page:
    """A browser page that records every request and every script error."""

    def __init__(self, browser) -> None:
        self.page = browser.new_page(viewport={"width": 1280, "height": 900})
        self.requests: list[str] = []
        self.errors: list[str] = []
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)

    def open(self, path: Path | str) -> None:
        url = path if str(path).startswith(("file:", "http:")) else Path(path).resolve().as_uri()
        self.page.goto(url)
        self.ready()

    def ready(self) -> None:
        self.page.wait_for_selector("body[data-ready='1']", timeout=15_000)

    def screenshot(self, folder: Path, name: str) -> Path:
        """A full-page screenshot into ``folder`` (and ``CLINFUSE_SCREENSHOTS`` when set)."""
        path = folder / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=False)
        extra = os.environ.get("CLINFUSE_SCREENSHOTS")
        if extra:
            Path(extra).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, Path(extra) / path.name)
        return path

    def image_loaded(self, selector: str) -> bool:
        return bool(
            self.page.eval_on_selector(
                selector, "img => img.complete && img.naturalWidth > 0 && img.naturalHeight > 0"
            )
        )


@pytest.fixture
def page(browser):
    p = Page(browser)
    yield p
    p.page.close()
