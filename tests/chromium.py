"""Debian's Chromium driven by playwright, for the tests that open a page the way a reader does."""

import re
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
# without the background-networking flags Chromium's own connections are refused here, and it stalls
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TIMEOUT_MS = 60_000


def require_chromium():
    """playwright's `sync_playwright`, failing the test (not skipping it) where Chromium or playwright is missing."""
    if not CHROMIUM.is_file():
        pytest.fail(f"{CHROMIUM} is required for the browser test but is missing; install it (and the playwright "
                    "package) with `make setup`")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("the playwright package is required for the browser test; install it with `make setup`")
    return sync_playwright


def markdown_links(readme: Path) -> set[str]:
    """The relative targets of a Markdown page's links and pictures."""
    return set(re.findall(r"\]\(([^)]+)\)", readme.read_text()))


def check_samples_page(folder: Path) -> tuple[int, int]:
    """Open `folder`/index.html (a `dualspeechlm-samples` page) in Chromium and assert that every `<audio>` player
    loads its file (no error, a positive duration), that there is exactly one player per WAV file README.md links, and
    that every picture shows. Returns (players, pictures)."""
    sync_playwright = require_chromium()
    wavs = {name for name in markdown_links(folder / "README.md") if name.endswith(".wav")}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page()
        page.goto((folder / "index.html").as_uri())
        sources = page.evaluate("[...document.querySelectorAll('audio')].map(a => a.getAttribute('src'))")
        assert sources and sorted(sources) == sorted(wavs), sorted(sources)
        page.wait_for_function("[...document.querySelectorAll('audio')].every(a => a.readyState >= 1 || a.error)",
                               timeout=TIMEOUT_MS)
        states = page.evaluate("[...document.querySelectorAll('audio')].map(a => [a.getAttribute('src'), "
                               "a.error && a.error.code, a.duration])")
        assert all(error is None and duration > 0 for _, error, duration in states), states
        images = page.evaluate("[...document.images].map(i => [i.getAttribute('src'), i.complete && "
                               "i.naturalWidth > 0])")
        assert all(shown for _, shown in images), images
        browser.close()
    return len(sources), len(images)
