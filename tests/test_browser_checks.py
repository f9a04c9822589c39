"""Each check of the site's browser test (``tests/site_checks.py``) on a tiny bad page and a tiny
good page: every check is proven able to fail, and not to fail on a page that is fine.

The browser checks run in headless Chromium on pages opened from disk; they are skipped where
Chromium or Playwright is missing. The file checks (page weight, search index) always run.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
import yaml

from tests import site_checks as checks
from tests.site_server import CHROMIUM_ARGS, browser_unavailable, chromium_path, serve

needs_browser = pytest.mark.skipif(browser_unavailable() is not None, reason=str(browser_unavailable()))

SCALE = ('<span class="mc-scale"><span class="mc-scale__min">{lo}</span>'
         '<img class="mc-scale__bar no-lightbox" src="colourbar-signed.png" alt="scale">'
         '<span class="mc-scale__max">{hi}</span></span>')


def _html(body: str) -> str:
    return f'<!doctype html><html><head><meta charset="utf-8"><title>t</title></head><body>{body}</body></html>'


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if browser_unavailable() is not None:
        pytest.skip(str(browser_unavailable()))
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        launched = pw.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture()
def open_page(browser, tmp_path: Path):
    """``open_page(body, width=1280)`` -> a Playwright page showing ``body`` from a file."""
    from PIL import Image

    Image.fromarray(np.zeros((4, 40, 3), np.uint8)).save(tmp_path / "colourbar-signed.png")
    pages = []
    watches = []

    def _open(body: str, width: int = 1280):
        path = tmp_path / f"page{len(pages)}.html"
        path.write_text(_html(body))
        page = browser.new_page(viewport={"width": width, "height": 800})
        watches.append(checks.ConsoleWatch(page))
        page.goto(path.as_uri(), wait_until="load")
        pages.append(page)
        return page

    _open.watch = lambda: watches[-1]
    yield _open
    for page in pages:
        page.close()


@needs_browser
def test_colour_bar_check(open_page):
    assert checks.colour_bar_problems(open_page(SCALE.format(lo="0", hi="1"))) == []
    unlabelled = checks.colour_bar_problems(open_page('<p><img src="colourbar-signed.png" alt="bar"></p>'))
    assert len(unlabelled) == 1 and "outside a .mc-scale" in unlabelled[0]
    empty = checks.colour_bar_problems(open_page(SCALE.format(lo="0", hi=" ")))
    assert empty == ["colour bar colourbar-signed.png without a max label"]
    linked = checks.colour_bar_problems(open_page(f'<a href="big.png">{SCALE.format(lo="0", hi="1")}</a>'))
    assert linked == ["colour scale inside a link to big.png"]


@needs_browser
def test_entity_check(open_page):
    # "&amp;#39;" in the HTML shows as "&#39;": a string escaped twice
    found = checks.entity_problems(open_page("<p>Chelsea&amp;#39;s cat &amp;amp; dog</p>"))
    assert len(found) == 2 and "&#39;" in found[0] and "&amp;" in found[1]
    assert checks.entity_problems(open_page("<p>Chelsea&#39;s cat &amp; dog &lt;b&gt;</p>")) == []


@needs_browser
def test_overflow_check_at_phone_width(open_page):
    wide = '<div class="md-content"><p>text</p><div class="wide" style="width: 700px">wide</div></div>'
    found = checks.overflow_problems(open_page(wide, width=390))
    assert len(found) == 1 and found[0].startswith("div.wide reaches 7")
    scrolled = ('<div class="md-content"><div style="overflow-x: auto"><div style="width: 700px">wide</div>'
                '</div></div>')
    assert checks.overflow_problems(open_page(scrolled, width=390)) == []
    assert checks.overflow_problems(open_page(wide, width=1280)) == []


@needs_browser
def test_console_and_broken_image_checks(open_page, tmp_path: Path):
    page = open_page('<img src="missing.png" alt="x"><img src="gone.png" loading="lazy" style="margin-top: 3000px">'
                     '<script>console.error("boom")</script>')
    assert checks.broken_images(page) == ["broken image missing.png"]  # the lazy one is not fetched yet
    assert checks.broken_images(page, load_all=True) == ["broken image missing.png", "broken image gone.png"]
    page_file = tmp_path / "page0.html"
    assert checks.missing_images(tmp_path, page_file) == ["missing file missing.png", "missing file gone.png"]
    errors = open_page.watch().take()
    assert any("boom" in e for e in errors) and any("missing.png" in e for e in errors)
    page = open_page('<img src="colourbar-signed.png" alt="x"><script>console.log("fine")</script>')
    assert checks.broken_images(page) == [] and open_page.watch().take() == []


@pytest.fixture(scope="module")
def tiny_mkdocs_site(tmp_path_factory) -> Path:
    """A two-page site built with the project's mkdocs.yml and the renderer's worker polyfill."""
    from generator.render.site import BASE_MKDOCS, TEMPLATES, WORKER_POLYFILL

    root = tmp_path_factory.mktemp("tiny-site")
    docs = root / "docs"
    (docs / "methods").mkdir(parents=True)
    (docs / "index.md").write_text("# Tiny report\n\nA page about nothing in particular.\n")
    (docs / "methods" / "ig.md").write_text("# Integrated gradients on the tiny model\n\n"
                                           "Integrated gradients add up gradients along a path.\n")
    (docs / "assets").mkdir()
    shutil.copy(TEMPLATES / "assets" / Path(WORKER_POLYFILL).name, docs / WORKER_POLYFILL)
    config = yaml.safe_load(BASE_MKDOCS.read_text())
    config.update(site_name="Tiny", docs_dir=str(docs), site_dir=str(root / "site"),
                  nav=[{"Home": "index.md"}, {"IG": "methods/ig.md"}], extra={"polyfills": [WORKER_POLYFILL]})
    (root / "mkdocs.yml").write_text(yaml.safe_dump(config))
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "-q", "-f", str(root / "mkdocs.yml")],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    site = root / "site"
    assert (site / "search" / "search_index.js").is_file()  # the offline plugin's copy of the index
    assert "unpkg.com" not in (site / "index.html").read_text()  # no polyfill from a CDN
    return site


@needs_browser
def test_search_check_from_disk_and_http(browser, tiny_mkdocs_site: Path):
    with serve(tiny_mkdocs_site) as http_base:
        for base in (tiny_mkdocs_site.as_uri(), http_base):
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            watch = checks.ConsoleWatch(page)
            page.goto(f"{base}/methods/ig.html", wait_until="load")
            hits, line = checks.search_hits(page, "Integrated gradients")
            assert hits >= 1, (base, line)
            assert checks.search_hits(page, "zebrafinch")[0] == 0  # the check fails when nothing is found
            assert watch.take() == [], base
            page.close()


def test_page_weight_check(tmp_path: Path):
    (tmp_path / "big.jpg").write_bytes(b"\0" * 3_000_000)
    (tmp_path / "small.jpg").write_bytes(b"\0" * 1000)
    heavy = tmp_path / "heavy.html"
    # the same image twice counts once; a link to an image (lightbox) is not loaded with the page
    heavy.write_text(_html('<img src="big.jpg"><img src="big.jpg"><img srcset="small.jpg 1x, big2.jpg 2x">'
                           '<a href="huge.jpg">full size</a>'))
    light = tmp_path / "light.html"
    light.write_text(_html('<img src="small.jpg"><a href="big.jpg">full size</a>'))
    assert checks.page_weight_problem(tmp_path, light) is None
    assert checks.page_weight_problem(tmp_path, heavy) is None  # 3 MB: under the limit
    assert checks.page_weight_problem(tmp_path, heavy, limit=2_000_000).startswith("heavy.html weighs 3.0 MB")


def test_numeric_index_check():
    table = " ".join(f"{i} 0.{i:03d} {i * 7}%" for i in range(30))
    index = {"docs": [{"location": "eval.html#table", "title": "Selectivity", "text": f"<table>{table}</table>"},
                      {"location": "prose.html", "title": "Prose", "text": "Grad-CAM weighs 14 x 14 maps " * 20},
                      {"location": "short.html", "title": "Short", "text": "1 2 3 4 5"}]}
    found = checks.numeric_index_entries(index)
    assert found == ["eval.html#table: 90 of 90 words are numbers"]


def test_page_kind_groups_pages_of_one_template():
    assert checks.page_kind("outcome/lite0/photos/image-chelsea.html") == \
        checks.page_kind("outcome/cnn/fashion/image-test-00001.html")
    assert checks.page_kind("outcome/lite0/photos/image-chelsea.html") != \
        checks.page_kind("outcome/lite0/photos/method-gradcam.html")
    assert checks.page_kind("index.html") != checks.page_kind("run.html")


@needs_browser
def test_page_problems_runs_every_desktop_check_at_once(open_page):
    bad = open_page('<img src="missing.png" alt="x"><img src="colourbar-signed.png" alt="bar"><p>a&amp;amp;b</p>')
    found = checks.page_problems(bad)
    assert len(found) == 3, found
    assert found[0] == "broken image missing.png" and "outside a .mc-scale" in found[1] and "&amp;" in found[2]
    assert checks.page_problems(open_page(SCALE.format(lo="0", hi="1") + "<p>a &amp; b</p>")) == []


def test_broken_links_check(tmp_path: Path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "index.html").write_text(_html("sub"))
    (tmp_path / "there.html").write_text(_html("there"))
    page = tmp_path / "page.html"
    page.write_text(_html('<a href="there.html#part">ok</a><a href="sub/">folder</a><a href="#top">anchor</a>'
                          '<a href="https://example.org/x.html">away</a><a href="gone.html">gone</a>'))
    assert checks.broken_links(tmp_path, page) == ["broken link gone.html"]
