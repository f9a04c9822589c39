"""Figures of the outcome pages on a tiny report with photo-sized (64 px) inputs, run and built
through the project's own functions (strict mkdocs build): every map carries a labelled colour
scale whose printed end equals the 99.5th percentile recomputed here from the stored maps;
photographic overlays are WebP; figure pages hide the table of contents; the CAM threshold sweep
includes the Grad-CAM paper's 15 %; Grad-CAM pages name the layer used; H1s name the model and
dataset; numeric tables stay out of the search index."""

from __future__ import annotations

import json
import re
import textwrap
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from generator.config import load_config
from generator.pipeline.stages.segmentation import sweep_thresholds
from generator.render import images as img
from generator.render.manifest import Manifest
from generator.render.pages.outcome import picture, shown_params
from generator.render.site import SiteWriter, environment
from generator.render.text import slug

PHOTO_MODEL = textwrap.dedent('''
    import torch
    from torch import nn

    def build():
        torch.manual_seed(0)
        model = nn.Sequential()
        model.add_module("conv1", nn.Conv2d(3, 6, 3, padding=1))
        model.add_module("relu1", nn.ReLU())
        model.add_module("conv2", nn.Conv2d(6, 8, 3, padding=1, stride=4))
        model.add_module("relu2", nn.ReLU())
        model.add_module("pool", nn.AdaptiveAvgPool2d(1))
        model.add_module("flatten", nn.Flatten())
        model.add_module("fc", nn.Linear(8, 3))
        return model, {"input_size": (3, 64, 64), "resize": 72, "class_names": ["ant", "bee", "cat"],
                       "layers": ["relu1", "relu2"], "cam_layer": "relu2"}
''')

METHODS = ["saliency", "gradient_x_input", "gradcam", "integrated_gradients", "interior_gradients"]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    from PIL import Image

    from generator.pipeline.run import run_report
    from generator.render.site import render_site

    root = tmp_path_factory.mktemp("figures")
    rng = np.random.default_rng(3)
    for cls in ("bee", "cat"):
        (root / "images" / cls).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(rng.integers(0, 255, (80 + 8 * i, 96, 3), dtype=np.uint8)).save(
                root / "images" / cls / f"photo{i}.png")
    (root / "photomodel.py").write_text(PHOTO_MODEL)
    (root / "report.yaml").write_text(textwrap.dedent(f'''
        title: "Figures"
        device: cpu
        models:
          - id: photo
            source: python:photomodel:build
            title: "Photo CNN"
        datasets:
          - id: snaps
            source: folder:{root / "images"}
        outcome:
          methods: [{", ".join(METHODS)}]
          images: 4
          params: {{interior_gradients: {{alphas: [0.25, 0.5, 1.0]}}, integrated_gradients: {{steps: 8}}}}
        evaluation:
          enabled: true
          segmentation: {{enabled: true, thresholds: [0.1, 0.5, 0.9]}}
          selectivity: {{enabled: false}}
          sensitivity: {{enabled: false}}
          sanity: {{enabled: false}}
          roar: {{enabled: false}}
    '''))
    config = load_config(root / "report.yaml")
    run_report(config, show_progress=False)
    render_site(config, build=True, strict=True)
    return config, Manifest.load(config.work_dir)


def _docs(config) -> Path:
    return config.work_dir / "docs" / "outcome" / "photo" / "snaps"


def _site(config) -> Path:
    return config.site_dir / "outcome" / "photo" / "snaps"


def _scale_labels(signed: bool, values: np.ndarray):
    end = f"{float(np.percentile(np.abs(values), 99.5)):.3g}"
    if signed:
        return f'<span class="mc-scale__min">−{end} against</span>', f'<span class="mc-scale__max">+{end} for</span>'
    return '<span class="mc-scale__min">0</span>', f'<span class="mc-scale__max">{end}</span>'


def test_map_range_is_the_end_of_the_overlay_colours():
    rng = np.random.default_rng(0)
    signed = rng.normal(size=(20, 20)).astype(np.float32)
    r = img.map_range(signed, True)
    assert r["end"] == pytest.approx(np.percentile(np.abs(signed), 99.5), rel=1e-6)
    assert r["peak"] == pytest.approx(np.abs(signed).max()) and r["percentile"] and not r["zero"]
    # the colour at +end is the scale's last colour, at -end its first, at 0 its middle
    probe = np.array([[r["end"], -r["end"], 0.0]], np.float32)
    scaled = np.clip(0.5 + 0.5 * probe / r["end"], 0, 1)
    assert scaled.tolist() == [[1.0, 0.0, 0.5]]
    unsigned = np.abs(signed)
    assert img.scale_map(unsigned, False).max() == 1.0
    assert img.map_range(unsigned, False)["end"] == pytest.approx(np.percentile(unsigned, 99.5), rel=1e-6)
    zero = img.map_range(np.zeros((4, 4)), False)
    assert zero["zero"] and zero["end"] == 1.0
    sparse = np.zeros((20, 20))
    sparse[0, 0] = 3.0  # the percentile is 0: the scale ends at the maximum and says so
    assert img.map_range(sparse, False) == {"end": 3.0, "peak": 3.0, "percentile": False, "zero": False}


def test_every_map_shows_its_own_labelled_scale(built):
    config, manifest = built
    docs = _docs(config)
    for art in manifest.find("attribution", model="photo", dataset="snaps"):
        rec = art.rec
        maps = art.load_npz("maps")["maps"]
        method_page = (docs / f"method-{slug(rec.method)}.md").read_text()
        assert method_page.count('class="mc-scale"') == len(rec.images), rec.method
        for i, item in enumerate(rec.images):
            lo, hi = _scale_labels(rec.signed, maps[i])
            image_page = (docs / f"image-{slug(item)}.md").read_text()
            for page in (method_page, image_page):
                assert lo in page and hi in page, (rec.method, item)
            largest = f"largest |value| {float(np.abs(maps[i]).max()):.3g}"
            assert largest in method_page, (rec.method, item)
    assert "gradient_x_input" in {a.rec.method for a in manifest.find("attribution") if a.rec.signed}


def test_overlays_are_webp_and_colour_scales_are_never_links(built):
    config, manifest = built
    gen = config.work_dir / "docs" / "assets" / "gen"
    for art in manifest.find("attribution", model="photo", dataset="snaps"):
        files = sorted(p.name for p in (gen / art.key).iterdir())
        for item in art.rec.images:
            assert f"{slug(item)}.webp" in files, (art.rec.method, item)
        # charts stay PNG
        assert not [f for f in files if f.endswith(".png") and f != "sweep-totals.png"], art.rec.method
    seg = manifest.one("cam_segmentation", model="photo", dataset="snaps")
    assert {p.suffix for p in (gen / seg.key).iterdir() if p.name.startswith("seg-")} == {".webp"}

    class Links(HTMLParser):
        def __init__(self):
            super().__init__()
            self.depth, self.bars, self.linked = 0, 0, 0

        def handle_starttag(self, tag, attrs):
            a = dict(attrs)
            if tag == "a":
                self.depth += 1
            if tag == "img" and "mc-scale__bar" in (a.get("class") or ""):
                self.bars += 1
                self.linked += self.depth > 0

        def handle_endtag(self, tag):
            if tag == "a":
                self.depth -= 1

    for page in _site(config).glob("*.html"):
        parser = Links()
        parser.feed(page.read_text())
        assert parser.linked == 0, page.name
        if page.name.startswith(("image-", "method-", "interior", "cam-")):
            assert parser.bars > 0, page.name


def test_thumbnails_link_the_full_size_only_when_larger(tmp_path):
    site = SimpleNamespace(writer=SiteWriter(tmp_path, environment()))
    photo = np.random.default_rng(1).integers(0, 255, (400, 300, 3), dtype=np.uint8)
    pic = picture(site, "assets/gen/x/big", photo, photo, 320)
    assert pic["src"].endswith("big-320px.webp") and pic["full"] == "assets/gen/x/big.webp" and not pic["small"]
    from PIL import Image

    assert Image.open(tmp_path / pic["src"]).size == (240, 320)
    assert Image.open(tmp_path / pic["full"]).size == (300, 400)
    same = picture(site, "assets/gen/x/fits", photo[:200, :200], photo[:200, :200], 320)
    assert same == {"src": "assets/gen/x/fits.webp", "full": None, "small": False}
    tiny = np.zeros((28, 28, 1), np.uint8)
    small = picture(site, "assets/gen/x/fashion", img.upscale(tiny), tiny, 320)
    assert small == {"src": "assets/gen/x/fashion.png", "full": None, "small": True}


def test_figure_pages_hide_the_toc_and_name_model_and_dataset(built):
    config, _ = built
    docs = _docs(config)
    for page in docs.glob("*.md"):
        text = page.read_text()
        h1 = next(line for line in text.splitlines() if line.startswith("# "))
        assert "Photo CNN" in h1 and "snaps" in h1, page.name
        figure = page.name != "predictions.md"
        assert text.startswith("---\nhide:\n  - toc\n---\n") == figure, page.name
        html = (_site(config) / page.name.replace(".md", ".html")).read_text()
        toc = re.search(r'<div class="md-sidebar md-sidebar--secondary"[^>]*>', html).group(0)
        assert ("hidden" in toc) == figure, page.name
        if figure and page.name != "index.md":  # every map is a captioned figure
            assert html.count("<figure") == html.count("<figcaption") > 0, page.name


def test_cam_sweep_includes_the_papers_15_percent(built):
    assert sweep_thresholds([0.1, 0.5, 0.9]) == [0.1, 0.15, 0.5, 0.9]
    assert sweep_thresholds([0.15, 0.3, 0.15]) == [0.15, 0.3]
    config, manifest = built
    rec = manifest.one("cam_segmentation", model="photo", dataset="snaps").rec
    assert rec.thresholds == [0.1, 0.15, 0.5, 0.9]
    page = (_docs(config) / "cam-segmentation.md").read_text()
    assert "Thresholds shown: 10%, 15%, 50%, 90%." in page
    assert page.count("(Grad-CAM paper)") == len(rec.images)
    for t in rec.thresholds:  # every threshold of every image is shown
        assert page.count(f"**{100 * t:g}%**") == len(rec.images)


def test_gradcam_pages_name_the_layer_used(built):
    config, _ = built
    assert shown_params({"layer": None, "steps": 8}, {"layer": "blocks.6"}) == [
        {"key": "layer", "value": "blocks.6", "default": True}, {"key": "steps", "value": 8, "default": False}]
    assert shown_params({"layer": None}, {})[0]["value"] == "default"
    for page in config.site_dir.rglob("*.html"):
        assert "layer=None" not in page.read_text(), page
    html = (_site(config) / "method-gradcam.html").read_text()
    assert "<code>layer=relu2</code> (the default)" in html


def test_numeric_tables_stay_out_of_the_search_index(built):
    config, manifest = built
    index = json.loads((config.site_dir / "search" / "search_index.json").read_text())
    texts = " ".join(d["text"] for d in index["docs"] if "outcome/photo/snaps/method-integrated" in d["location"])
    assert "Numbers this method reports" in (_site(config) / "method-integrated_gradients.html").read_text()
    art = manifest.one("attribution", model="photo", dataset="snaps", method="integrated_gradients")
    gaps = art.rec.extras["completeness_gap"]
    html = (_site(config) / "method-integrated_gradients.html").read_text()
    for gap in gaps:
        cell = f"{float(gap):.4f}"
        assert f"<td>{cell}</td>" in html and cell not in texts
    # mkdocs-material drops the attribute from the HTML once it has left the block out
    assert "<div markdown data-search-exclude>" in (_docs(config) / "method-integrated_gradients.md").read_text()
