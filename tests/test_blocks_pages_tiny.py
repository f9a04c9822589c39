"""Building Blocks pages on the tiny report: strict mkdocs build, expected elements, hover JSON,
and the JavaScript in headless Chromium (skipped when chromium or playwright is missing)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from _blocks_report import write_blocks_report
from site_server import CHROMIUM_ARGS, serve

from generator.config import load_config
from generator.pipeline.run import run_report

CHROMIUM = "/usr/bin/chromium"
PAGES = "blocks/tiny/pics"


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    from generator.render.site import render_site

    config = load_config(write_blocks_report(tmp_path_factory.mktemp("blocks_pages")))
    run_report(config, show_progress=False)
    return render_site(config)  # mkdocs build --strict


def _images(site: Path):
    return sorted(p.name[: -len("-dictionary.html")] for p in (site / PAGES).glob("*-dictionary.html"))


def test_pages_exist_with_grids_legends_flow_and_script(site: Path):
    images = _images(site)
    assert len(images) == 2
    for name in images:
        dictionary = (site / PAGES / f"{name}-dictionary.html").read_text()
        # relu2 is a 16 x 16 grid, pool a 1 x 1 grid: each shown as the plain and the icon grid
        assert dictionary.count('data-role="grid"') == 2 and dictionary.count('data-role="dictionary"') == 2
        assert len(re.findall(r'class="bb-cell" data-cell="\d+"', dictionary)) == 2 * (256 + 1)
        assert 'data-kind="cell"' in dictionary and "What a reader learns" in dictionary
        assert re.search(r'<script src="(\.\./)+assets/blocks/blocks\.js"></script>', dictionary)
        attribution = (site / PAGES / f"{name}-attribution.html").read_text()
        assert "Two competing classes" in attribution and 'data-role="upper"' in attribution
        assert attribution.count("<figure>") == 2 * 3  # top-3 class maps per layer
        groups = (site / PAGES / f"{name}-groups.html").read_text()
        assert "<svg" in groups and 'data-node="0-0"' in groups and "<path" in groups
        assert len(re.findall(r'class="bb-card" data-group="\d+"', groups)) >= 2
        # user strings are escaped (the model title holds a script tag)
        assert "<script>alert(1)</script>" not in dictionary + attribution + groups
        data = json.loads((site / PAGES / f"{name}.json").read_text())
        assert set(data["layers"]) == {"relu2", "pool"}
        assert len(data["layers"]["relu2"]["cells"]) == 256
        assert data["layers"]["relu2"]["icons"]["url"].startswith("../../../assets/gen/")
        assert (site / PAGES / data["layers"]["relu2"]["icons"]["url"]).resolve().exists()
    assert (site / "assets/blocks/blocks.js").exists()
    index = (site / PAGES / "index.html").read_text()
    assert "Building blocks" in index and "for " in index


def test_hover_updates_the_legend_in_headless_chromium(site: Path, tmp_path: Path):
    if not Path(CHROMIUM).exists() and not shutil.which("chromium"):
        pytest.skip("chromium is not installed")
    sync_api = pytest.importorskip("playwright.sync_api")
    name = _images(site)[0]
    errors: list = []
    with serve(site) as base, sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1300, "height": 1400})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(f"{base}/{PAGES}/{name}-dictionary.html")
            page.wait_for_selector("html[data-bb-ready='1']", timeout=10000)
            legend = page.locator('.bb-legend[data-layer="relu2"][data-kind="cell"] h4').first
            before = legend.inner_text()
            page.hover('.bb-stage[data-layer="relu2"][data-role="grid"] .bb-cell[data-cell="17"]')
            after = legend.inner_text()
            assert after != before and after.startswith("Position (1, 1)")
            assert page.locator('.bb-stage[data-layer="relu2"] .bb-cell.bb-on').count() >= 1
            page.screenshot(path=str(tmp_path / "dictionary.png"), full_page=False)
            # groups: hovering a card rewrites the group legend and paints the group's positions
            page.goto(f"{base}/{PAGES}/{name}-groups.html")
            page.wait_for_selector("html[data-bb-ready='1']", timeout=10000)
            last = page.locator('.bb-groups[data-layer="relu2"] [data-group]').count() - 1
            page.hover(f'.bb-groups[data-layer="relu2"] [data-group="{last}"]')
            title = page.locator('.bb-legend[data-layer="relu2"][data-kind="group"] h4').first.inner_text()
            assert title.endswith(f"G{last}")
            painted = (page.locator('.bb-stage[data-layer="relu2"][data-role="groups"] .bb-cell')
                       .first.get_attribute("style"))
            assert painted and "rgba" in painted
            page.screenshot(path=str(tmp_path / "groups.png"))
        finally:
            browser.close()
    assert (tmp_path / "dictionary.png").stat().st_size > 1000
    assert errors == [], errors
