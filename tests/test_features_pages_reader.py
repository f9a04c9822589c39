"""The features pages as a reader meets them, on the tiny report: what the number under each
gallery image is, how much of the layer a gallery shows and the setting that shows all of it,
the caveat of dataset examples drawn from a handful of images, DeepDream as one row per photo,
captioned deconvnet pairs, labelled grey scales, no right-hand table of contents on figure
pages, titles that name the model, numeric tables kept out of the search index, and pages that
show thumbnails with the full size only behind the lightbox."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser

import numpy as np
import pytest
from PIL import Image
from test_features_stage_tiny import make_features_report

from generator.config import load_config
from generator.pipeline.run import run_report
from generator.render.manifest import Manifest
from generator.render.pages import features as fp
from generator.render.text import md_escape

TITLE = "Tiny &lt;script&gt;alert\\(1\\)&lt;/script&gt; CNN"  # the model title as the Markdown escapes it


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    from generator.render.site import render_site

    root = tmp_path_factory.mktemp("features_reader")
    config = load_config(make_features_report(root))
    run_report(config, show_progress=False)
    render_site(config, build=True, strict=True)
    return config, Manifest.load(config.work_dir)


def _md(config, page: str) -> str:
    return (config.work_dir / "docs" / "features" / "tiny" / page).read_text()


def _html(config, page: str) -> str:
    return (config.site_dir / "features" / "tiny" / page).read_text()


def test_gallery_says_what_the_number_is_and_numbers_match(site):
    config, manifest = site
    for layer in ("relu1", "relu2"):
        gal = manifest.one("features_gallery", model="tiny", layer=layer)
        page = _md(config, f"{layer}/index.md")
        assert "**The number under each image** is the channel's mean activation over all positions" in page
        assert "Compare numbers between\nchannels of this layer only" in page
        shown = [float(v) for v in re.findall(r"\]\(unit-\d+\.md\) · (-?\d+\.\d\d)", page)]
        assert shown == pytest.approx(gal.record["values"], abs=5e-3)  # the record's final values, in order


def test_coverage_line_names_counts_and_the_setting(site):
    config, manifest = site
    for layer in ("relu1", "relu2"):
        rec = manifest.one("features_gallery", model="tiny", layer=layer).record
        n, total = len(rec["channels"]), rec["layer_channels"]
        assert n == 3 and total > n  # the tiny report asks for 3 channels of each layer
        for page in (_md(config, f"{layer}/index.md"), _md(config, "index.md")):
            assert f"**{n} of {total} channels** of the layer" in page
            assert "`channels: all`" in page and "`features: {channels: all}`" in page and "`profile: full`" in page
    # a layer shown whole says so and names no setting
    whole = {"layer": "x", "units": [{"channel": c} for c in range(4)], "coverage": fp.coverage(4, 4)}
    from generator.render.site import environment

    macros = environment().get_template("features_macros.md.j2").module
    assert str(macros.coverage(whole)).strip() == "All 4 channels of the layer."
    assert fp.coverage(3, 8) == {"shown": 3, "total": 8, "complete": False}


def test_dataset_examples_caveat_with_n(site):
    config, manifest = site
    n = manifest.one("dataset", dataset="pics").record["count"]
    assert n < fp.FEW_IMAGES
    ex = manifest.one("features_examples", model="tiny", layer="relu2", dataset="pics").record
    k = ex["k"]
    unit = _md(config, f"relu2/unit-{ex['channels'][0]}.md")
    assert '!!! warning "Too few images to show selectivity"' in unit
    assert f"drawn from only {n} images" in unit and f"the top {k} are {round(100 * k / n)} %" in unit
    assert "`features: {examples_dataset: {MODEL: DATASET}}`" in unit
    assert f"come from only {n} images" in _md(config, "relu2/index.md")
    assert fp.few_images(n) and not fp.few_images(10_000) and not fp.few_images(None)


def test_deepdream_one_row_per_photo_layers_as_columns(site):
    config, manifest = site
    rec = manifest.one("features_deepdream", model="tiny").record
    page = _md(config, "deepdream.md")
    header = next(line for line in page.splitlines() if line.startswith("| Photo |"))
    assert re.findall(r"`([^`]+)`", header) == rec["layers"]  # shallow to deep, left to right
    assert "(shallow)" in header and "(deep)" in header
    rows = [line for line in page.splitlines() if line.startswith("| ![")]
    assert len(rows) == len(rec["items"])
    for row, title in zip(rows, rec["titles"]):
        cells = row.strip("| ").split(" | ")
        assert cells[0].endswith(md_escape(title))  # rows follow the record's photos
        assert len(cells) == 1 + len(rec["layers"])  # the photo, then one cell per layer
        for cell, layer in zip(cells[1:], rec["layers"]):
            assert f"dreamed at {layer}" in cell
    assert "<figcaption" in page and "One row per photo of" in page
    assert "DeepDream on pics" in page.splitlines()[5]  # the title names the dataset


def test_deconvnet_pair_captioned_with_a_labelled_scale(site):
    config, manifest = site
    dec = manifest.one("features_deconv", model="tiny", layer="relu2").record
    c, peak = dec["channels"][0], dec["peaks"][0]
    html = _html(config, f"relu2/unit-{c}.html")
    fig = re.search(r'<figure class="mc-fv-figure mc-fv-figure--pair">(.*?)</figure>', html, re.S).group(1)
    assert fig.count("<img") == 3  # input crop, projection crop, projection of the whole image
    for part in ("Left: the top example", "Middle: the deconvnet projection", "Right: the projection"):
        assert part in fig
    assert f"({peak:.3g})" in fig
    scale = re.search(r'<span class="mc-scale">(.*?)</span></span>', html, re.S).group(0)
    assert f"−{peak:.3g} (dark)" in scale and f"+{peak:.3g} (light)" in scale
    # the grey bar runs from black to white through the middle grey
    bar = np.asarray(Image.open(config.site_dir / fp.GREY_BAR))
    assert bar[0, 0].tolist() == [0, 0, 0] and bar[0, -1].tolist() == [255, 255, 255]
    assert abs(int(bar[0, bar.shape[1] // 2, 0]) - 128) <= 1


class _Scales(HTMLParser):
    """Colour bars outside a .mc-scale, and scales inside a link."""

    def __init__(self):
        super().__init__()
        self.stack, self.bad = [], []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        classes = (a.get("class") or "").split()
        if tag == "img" and "mc-scale__bar" in classes:
            if not any("mc-scale" in c for _, c in self.stack):
                self.bad.append("bar outside a scale")
            if any(t == "a" for t, _ in self.stack):
                self.bad.append("scale inside a link")
        if tag not in ("img", "br", "input", "meta", "link", "hr", "source"):
            self.stack.append((tag, a.get("class") or ""))

    def handle_endtag(self, tag):
        while self.stack:
            if self.stack.pop()[0] == tag:
                break


def test_figure_pages_hide_toc_and_titles_name_the_model(site):
    config, _ = site
    docs = config.work_dir / "docs" / "features" / "tiny"
    pages = sorted(p.relative_to(docs).as_posix() for p in docs.rglob("*.md"))
    assert len(pages) > 8
    for page in pages:
        text = _md(config, page)
        h1 = next(line for line in text.splitlines() if line.startswith("# "))
        assert TITLE in h1, page
        figure_page = page != "index.md"
        assert text.startswith("---\nhide:\n  - toc\n---\n") == figure_page, page
        html = _html(config, page.replace(".md", ".html"))
        toc_nav = re.search(r'<div class="md-sidebar md-sidebar--secondary"[^>]*hidden', html)
        assert bool(toc_nav) == figure_page, page  # mkdocs-material marks the hidden toc
        scales = _Scales()
        scales.feed(html)
        assert scales.bad == [], page
        assert 'class="mc-fv-page"' in html  # the marker features.css keys the H1 fix on


def test_numeric_tables_out_of_the_search_index(site):
    config, manifest = site
    index = json.loads((config.site_dir / "search" / "search_index.json").read_text())
    ex = manifest.one("features_examples", model="tiny", layer="relu2", dataset="pics").record
    c = ex["channels"][0]
    unit = [d for d in index["docs"] if d["location"].startswith(f"features/tiny/relu2/unit-{c}.html")]
    assert unit, "the unit page is indexed"
    text = " ".join(d["text"] for d in unit)
    assert "Rank" not in text and f"{ex['values'][0][0]:+.3f}" not in text  # the examples table is not
    assert "Too few images to show selectivity" in text  # the prose around it is
    gallery = " ".join(d["text"] for d in index["docs"] if d["location"].startswith("features/tiny/relu2/index.html"))
    assert "The number under each image" in gallery and " · " not in gallery  # the cards are not
    assert "<div markdown data-search-exclude>" in _md(config, f"relu2/unit-{c}.md")


def test_pixelated_small_images_and_thumbnails(site, tmp_path):
    config, manifest = site
    unit = _html(config, "relu2/unit-0.html")
    # the tiny model's 32 px renders are enlarged PNGs drawn pixelated
    assert re.search(r'<img[^>]*class="mc-fv-px"[^>]*src="[^"]*c0\.png"', unit) or \
        re.search(r'<img[^>]*src="[^"]*c0\.png"[^>]*class="mc-fv-px"', unit)

    # a photographic image: a WebP no larger than SHOWN_SIDE on the page, the JPEG behind the lightbox
    class _Writer:
        def __init__(self, docs):
            self.docs, self.refs = docs, {}

        def image(self, rel, pixels):
            from generator.render import images as img

            img.save_image(self.docs / rel, pixels)
            return rel

        def ref(self, name, rel):
            self.refs[name] = rel

    class _Site:
        writer = _Writer(tmp_path)

    # smooth, photograph-like content (pure noise trips Pillow's optimised JPEG encoder)
    yy, xx = np.mgrid[0:224, 0:224]
    big = np.stack([xx, yy, (xx + yy) // 2], axis=2).astype(np.uint8)
    p = fp._pic(_Site(), "a/big", big)
    assert p["src"].endswith(f"-{fp.SHOWN_SIDE}px.webp") and p["full"] == "a/big.jpg" and not p["small"]
    assert max(Image.open(tmp_path / p["src"]).size) == fp.SHOWN_SIDE
    assert Image.open(tmp_path / p["full"]).size == (224, 224)
    same = fp._pic(_Site(), "a/mid", big[:96, :96])
    assert same == {"src": "a/mid.webp", "full": None, "small": False}
    assert not (tmp_path / "a" / "mid.jpg").exists()  # no full size when nothing links to it
    ref = fp._pic(_Site(), "a/ref", big[:96, :96], ref="x")
    assert ref["full"] is None and _Site.writer.refs["x"] == "a/ref.jpg"
