"""Building Blocks pages on the tiny report: strict mkdocs build, expected elements, the hover data
as a script (no fetch: the pages work from file://), quality verdicts, titles, colour scales, and
the JavaScript in headless Chromium over http and file://, by hover and by tap at phone width
(skipped when chromium or playwright is missing)."""

from __future__ import annotations

import html
import json
import re
import shutil
from pathlib import Path

import pytest
from _blocks_report import write_blocks_report
from site_server import CHROMIUM_ARGS, serve

from generator.config import load_config
from generator.pipeline.run import run_report
from generator.render import verdicts

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
        script = (site / PAGES / f"{name}.data.js").read_text()
        prefix = "window.modelcardBlocks = "
        assert script.startswith(prefix) and script.rstrip().endswith(";")
        data = json.loads(script.strip()[len(prefix):-1])
        assert not (site / PAGES / f"{name}.json").exists()  # nothing left to fetch
        for page in (dictionary, attribution, groups):
            # the data script comes before the interaction script, both as <script src>
            assert re.search(rf'<script src="{name}\.data\.js"></script>\s*<script src="(\.\./)+assets/blocks/'
                             r'blocks\.js"></script>', page)
        assert set(data["layers"]) == {"relu2", "pool"}
        assert len(data["layers"]["relu2"]["cells"]) == 256
        assert data["layers"]["relu2"]["icons"]["url"].startswith("../../../assets/gen/")
        assert (site / PAGES / data["layers"]["relu2"]["icons"]["url"]).resolve().exists()
    shipped = (site / "assets/blocks/blocks.js").read_text()
    assert "fetch(" not in shipped and "window.modelcardBlocks" in shipped
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


def _text(page: str) -> str:
    """The visible text of a page (tags dropped, entities decoded, whitespace collapsed)."""
    page = re.sub(r"<script.*?</script>|<style.*?</style>", " ", page, flags=re.S)
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", page)).split())


def _summaries(site: Path):
    work = site.parent / ".modelcard"
    manifest = json.loads((work / "manifest.json").read_text())
    return [json.loads((work / "artifacts" / e["path"] / "summary.json").read_text())
            for e in manifest["artifacts"] if e["kind"] == "blocks"]


def test_every_finding_carries_its_quality_figure_and_verdict(site: Path):
    summaries = _summaries(site)
    assert summaries
    texts = {name: {kind: _text((site / PAGES / f"{name}-{kind}.html").read_text())
                    for kind in ("dictionary", "attribution", "groups")} for name in _images(site)}
    for s in summaries:
        expected = verdicts.nmf(s["group_error"], len(s["groups"]))
        groups = [t["groups"] for t in texts.values()]
        # the NMF's relative error and its verdict, on the groups page of that image
        assert any(expected.text in g for g in groups), expected.text
        if expected.weak:
            assert any("Weak: read with care" in g for g in groups)
    for t in texts.values():
        assert "squared activation norm at that position" in t["dictionary"]  # the dictionary's figure
        assert "Quality of the ranking" in t["attribution"]
        assert "of the net total" in t["attribution"] or "The class's net attribution here is" in t["attribution"]
        # the group flow's numbers: unit and share of the total they are part of
        assert "activation units" in t["groups"] and "Upper group totals: G0" in t["groups"]
        assert re.search(r"Strongest link: G\d+ → G\d+, [+-][\d.e+]+ = -?\d+% of [+-]", t["groups"])
        assert re.search(r"-?\d+% of upper group G\d+'s total", t["groups"])


def test_titles_name_the_model_and_the_dataset_and_scales_are_labelled(site: Path):
    for name in _images(site):
        for kind in ("dictionary", "attribution", "groups"):
            page = (site / PAGES / f"{name}-{kind}.html").read_text()
            title = re.search(r"<title>(.*?)</title>", page, re.S).group(1)
            # the model title is escaped (it holds a script tag) and named with the dataset
            assert "Tiny &lt;script&gt;alert(1)&lt;/script&gt; CNN on pics" in title, title
            h1 = _text(re.search(r"<h1.*?</h1>", page, re.S).group(0))
            assert "Tiny <script>alert(1)</script> CNN on pics" in h1
            # every colour bar sits in a labelled scale, never inside a link
            scales = re.findall(r'<span class="mc-scale">.*?</span></span>', page, re.S)
            bars = re.findall(r'class="mc-scale__bar', page)
            assert len(bars) == len(scales) and (kind == "dictionary" or scales)
            for sc in scales:
                low = re.search(r'mc-scale__min">([^<]+)<', sc).group(1)
                high = re.search(r'mc-scale__max">([^<]+)<', sc).group(1)
                assert low.strip() and high.strip()
            assert not re.search(r"<a [^>]*>(?:(?!</a>).)*mc-scale", page, re.S)
        # photographic overlays and photos as WebP / JPEG, not PNG
        attribution = (site / PAGES / f"{name}-attribution.html").read_text()
        assert re.search(r'src="[^"]+/class-0\.webp"', attribution) and re.search(r'src="[^"]+/photo\.jpg"',
                                                                                  attribution)
        assert not re.search(r'src="[^"]+/(class-\d+|group-\d+|l2l-[\w-]+|photo)\.png"', attribution)
    index = (site / PAGES / "index.html").read_text()
    assert "Building blocks: Tiny &lt;script&gt;alert(1)&lt;/script&gt; CNN on pics" in \
        re.search(r"<title>(.*?)</title>", index, re.S).group(1)


def test_tap_and_file_url_at_phone_width(site: Path):
    """Opened from disk (file://, where fetch is refused) at 390 px on a touch screen: the data
    loads, a tap selects a cell and a group, and the page does not scroll sideways."""
    if not Path(CHROMIUM).exists() and not shutil.which("chromium"):
        pytest.skip("chromium is not installed")
    sync_api = pytest.importorskip("playwright.sync_api")
    name = _images(site)[0]
    errors: list = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            ctx = browser.new_context(viewport={"width": 390, "height": 844}, has_touch=True, is_mobile=True)
            page = ctx.new_page()
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto((site / PAGES / f"{name}-dictionary.html").resolve().as_uri())
            page.wait_for_selector("html[data-bb-ready='1']", timeout=10000)
            assert page.evaluate("document.documentElement.scrollWidth") <= 390
            grid = page.locator('.bb-stage[data-layer="relu2"][data-role="grid"]')
            assert grid.bounding_box()["width"] <= 390
            page.locator('.bb-stage[data-layer="relu2"][data-role="grid"] .bb-cell[data-cell="35"]').tap()
            legend = page.locator('.bb-legend[data-layer="relu2"][data-kind="cell"]')
            assert legend.locator("h4").first.inner_text().startswith("Position (2, 3)")
            assert "of the squared activation norm at this position" in legend.inner_text()
            # on a phone the legend goes below the pictures
            pics = page.locator('.bb-wrap:has(.bb-stage[data-layer="relu2"]) .bb-pics').first.bounding_box()
            assert legend.bounding_box()["y"] >= pics["y"] + pics["height"] - 1
            page.goto((site / PAGES / f"{name}-groups.html").resolve().as_uri())
            page.wait_for_selector("html[data-bb-ready='1']", timeout=10000)
            assert page.evaluate("document.documentElement.scrollWidth") <= 390
            last = page.locator('.bb-groups[data-layer="relu2"] [data-group]').count() - 1
            page.locator(f'.bb-groups[data-layer="relu2"] [data-group="{last}"]').tap()
            title = page.locator('.bb-legend[data-layer="relu2"][data-kind="group"] h4').first.inner_text()
            assert title.endswith(f"G{last}")
        finally:
            browser.close()
    assert errors == [], errors


def test_legend_is_beside_the_grid_and_sticky_on_a_desktop(site: Path):
    if not Path(CHROMIUM).exists() and not shutil.which("chromium"):
        pytest.skip("chromium is not installed")
    sync_api = pytest.importorskip("playwright.sync_api")
    name = _images(site)[0]
    with serve(site) as base, sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 700})
            page.goto(f"{base}/{PAGES}/{name}-dictionary.html")
            page.wait_for_selector("html[data-bb-ready='1']", timeout=10000)
            legend = page.locator('.bb-legend[data-layer="relu2"][data-kind="cell"]')
            grid = page.locator('.bb-stage[data-layer="relu2"][data-role="grid"]')
            g, leg = grid.bounding_box(), legend.bounding_box()
            assert leg["x"] >= g["x"] + g["width"] and leg["y"] < g["y"] + g["height"]  # beside, not below
            assert legend.evaluate("e => getComputedStyle(e).position") == "sticky"
            # click works as well as hover
            page.locator('.bb-stage[data-layer="relu2"][data-role="dictionary"] .bb-cell[data-cell="0"]').click()
            assert legend.locator("h4").first.inner_text().startswith("Position (0, 0)")
        finally:
            browser.close()
