"""The compare stage and pages on a tiny report of two tiny models with different input sizes,
crops, class sets and method lists (``outcome.methods_by_model``), run and rendered through the
project's own functions (strict mkdocs build): the pages exist and show every model, a model
title is escaped, and every number of the summary equals one recomputed here from the stored
artifacts (scipy's Spearman, top-k sets by sorting, top-1 agreement from the predictions, the
common-grid maps re-derived from the stored attribution maps by point sampling)."""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from generator.config import load_config
from generator.pipeline.run import run_report
from generator.render.manifest import Manifest
from generator.render.text import slug

OTHER_MODEL = textwrap.dedent('''
    import torch
    from torch import nn

    def build():
        torch.manual_seed(1)
        model = nn.Sequential()
        model.add_module("conv1", nn.Conv2d(3, 6, 3, padding=1))
        model.add_module("relu1", nn.ReLU())
        model.add_module("conv2", nn.Conv2d(6, 8, 3, padding=1, stride=2))
        model.add_module("relu2", nn.ReLU())
        model.add_module("pool", nn.AdaptiveAvgPool2d(1))
        model.add_module("flatten", nn.Flatten())
        model.add_module("fc", nn.Linear(8, 3))
        return model, {"input_size": (3, 40, 28), "resize": 44, "class_names": ["Cat", "dog", "eel"],
                       "layers": ["relu1", "relu2"], "cam_layer": "relu2"}
''')

TITLE = "<b>x</b>"


def write_compare_report(root: Path) -> Path:
    """Two tiny models on the conftest image folder, with different input sizes, crops, class sets
    (sharing "cat" and "dog") and method lists, and a few class visualisations; returns the config."""
    from conftest import TINY_MODEL_MODULE, write_image_folder

    folder = write_image_folder(root / "images")
    (root / "tinymodel.py").write_text(TINY_MODEL_MODULE)
    (root / "othermodel.py").write_text(OTHER_MODEL)
    (root / "pages").mkdir(exist_ok=True)
    report = root / "report.yaml"
    report.write_text(textwrap.dedent(f'''
        title: "Two tiny models"
        device: cpu
        site_src: [pages]
        models:
          - id: tiny
            source: python:tinymodel:build
            title: "Tiny CNN"
          - id: other
            source: python:othermodel:build
            title: "{TITLE}"
        datasets:
          - id: pics
            source: folder:{folder}
        outcome:
          methods: [saliency, gradcam]
          methods_by_model: {{tiny: [saliency, gradcam, gradient_x_input]}}
          images: 4
        evaluation: {{enabled: false}}
        features:
          enabled: true
          profile: quick
          layers: {{tiny: [relu2], other: [relu2]}}
          channels: 1
          steps: 2
          diversity: 0
          negative: false
          examples: 0
          deepdream_images: 0
          filters: false
          deconvnet: false
          classes: {{tiny: [cat, dog], other: [Cat, eel]}}
        compare: {{top_k: 0.2}}
    '''))
    return report


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    from generator.render.site import render_site

    config = load_config(write_compare_report(tmp_path_factory.mktemp("compare")))
    run_report(config, show_progress=False)
    render_site(config, build=True, strict=True)
    return config, Manifest.load(config.work_dir)


def _top(values: np.ndarray, fraction: float) -> set:
    """The top cells by sorting (ties at the threshold in; a threshold at the minimum: only above it)."""
    flat = values.ravel()
    n = max(1, int(round(fraction * flat.size)))
    threshold = np.sort(flat)[::-1][n - 1]
    if threshold == flat.min():
        return set(np.flatnonzero(flat > threshold))
    return set(np.flatnonzero(flat >= threshold))


def test_methods_by_model_decides_what_each_model_computes(built):
    config, manifest = built
    methods = {m: sorted(a.record["method"] for a in manifest.find("attribution", model=m, dataset="pics"))
               for m in ("tiny", "other")}
    assert methods == {"tiny": ["gradcam", "gradient_x_input", "saliency"], "other": ["gradcam", "saliency"]}
    rec = manifest.one("compare", dataset="pics").rec
    assert rec.methods == ["saliency", "gradcam"]  # the methods both models have
    outcome = (config.work_dir / "docs" / "outcome" / "other" / "pics" / "index.md").read_text()
    assert "method-gradient_x_input" not in outcome


def test_pages_exist_and_show_every_model(built):
    config, manifest = built
    rec = manifest.one("compare", dataset="pics").rec
    docs, site = config.work_dir / "docs" / "compare" / "pics", config.site_dir / "compare" / "pics"
    pages = ["index.md"] + [f"image-{slug(i.id)}.md" for i in rec.images] \
        + [f"method-{m}.md" for m in rec.methods]
    for page in pages:
        assert (docs / page).exists(), page
        assert (site / page.replace(".md", ".html")).exists(), page  # use_directory_urls: false
    escaped = "&lt;b&gt;x&lt;/b&gt;"
    for path in (docs / page for page in pages):  # (similarity.md, if any, is another page builder's)
        text = path.read_text()
        assert TITLE not in text, path.name
        assert "nan" not in text.lower().replace("nan&", ""), path.name
    for image in rec.images:
        page = (docs / f"image-{slug(image.id)}.md").read_text()
        for title in ("Tiny CNN", escaped):  # one section per model, linking to its outcome page
            assert sum(line.startswith((f"## [{title}](", f"## {title}")) for line in page.splitlines()) == 1
        for row in image.models:  # the class each model predicts and explains is named
            assert f"{row.top_class} (" in page and f"{row.explains} (" in page
    for page in pages:  # the built HTML shows the title as text, never as markup
        html = (site / page.replace(".md", ".html")).read_text()
        assert "&lt;b&gt;x&lt;/b&gt;" in html and "<b>x</b>" not in html, page


def test_summary_numbers_equal_a_recomputation_from_the_stored_maps(built):
    config, manifest = built
    art = manifest.one("compare", dataset="pics")
    rec = art.rec
    json.loads(art.path.joinpath("record.json").read_text(),
               parse_constant=lambda c: pytest.fail(f"record holds {c}"))
    arrays = art.load_npz("maps")
    ids = [m.id for m in rec.models]
    overview = (config.work_dir / "docs" / "compare" / "pics" / "index.md").read_text()
    means = []
    for pair in rec.pairs:
        a, b = (ids.index(m) for m in pair.models)
        for agreement in pair.methods:
            k = rec.methods.index(agreement.method)
            rho, iou = [], []
            for i in range(len(rec.images)):
                ga, gb = arrays[f"map_{i}_{a}_{k}"].astype(float), arrays[f"map_{i}_{b}_{k}"].astype(float)
                if np.ptp(ga) == 0 or np.ptp(gb) == 0:
                    rho.append(None)
                    iou.append(None)
                    assert agreement.undefined[i].startswith("undefined (constant map")
                    continue
                rho.append(stats.spearmanr(ga.ravel(), gb.ravel()).statistic)
                ta, tb = _top(ga, rec.top_k), _top(gb, rec.top_k)
                iou.append(len(ta & tb) / len(ta | tb))
            for got, want in ((agreement.spearman, rho), (agreement.topk_iou, iou)):
                assert [g is None for g in got] == [w is None for w in want]
                assert [g for g in got if g is not None] == pytest.approx([w for w in want if w is not None], abs=2e-6)
            defined = [r for r in rho if r is not None]
            assert agreement.defined == len(defined) and agreement.undefined_count == len(rho) - len(defined)
            if defined:
                assert agreement.mean_spearman == pytest.approx(np.mean(defined), abs=2e-6)
                assert f"ρ {np.mean(defined):.2f}<br>IoU {np.mean([v for v in iou if v is not None]):.2f}" in overview
            means.append(rho)
        # top-1 agreement, by class name (the class sets differ but share "cat" and "dog")
        assert pair.classes == "shared_names" and pair.shared_classes == 2
        tops = {m: {r["id"]: r["top"][0]["name"].lower()
                    for r in manifest.one("predictions", model=m, dataset="pics").record["shown"]}
                for m in pair.models}
        agree = [tops[pair.models[0]][im.id] == tops[pair.models[1]][im.id] for im in rec.images]
        assert pair.top1_agree == agree
        assert pair.top1_agreement == pytest.approx(np.mean(agree))
        assert f"{100 * np.mean(agree):.1f}% of {len(agree)}" in overview
    # images ordered by their mean over pairs and methods, lowest first
    per_image = [np.mean([r[i] for r in means if r[i] is not None]) for i in range(len(rec.images))]
    assert rec.order == [rec.images[i].id for i in np.argsort(per_image, kind="stable")]
    positions = [overview.index(f"](image-{slug(im.id)}.md)") for im in rec.images]
    assert positions  # every image is listed on the overview
    listed = sorted(range(len(rec.images)), key=lambda i: positions[i])
    assert [rec.images[i].id for i in listed] == rec.order


def test_common_grid_maps_resample_the_stored_attribution_maps(built):
    """Each stored grid cell is the mean of the model's map over the cell's area of the original
    image: re-derived by sampling 16 x 16 points per cell, each read from the map pixel it falls
    in through the crop each model reports."""
    config, manifest = built
    art = manifest.one("compare", dataset="pics")
    rec = art.rec
    arrays = art.load_npz("maps")
    for a, model in enumerate(rec.models):
        for k, method in enumerate(rec.methods):
            stored = manifest.one("attribution", model=model.id, dataset="pics", method=method)
            maps = stored.load_npz("maps")["maps"]
            for i, image in enumerate(rec.images):
                values = maps[stored.record["images"].index(image.id)]
                H, W = values.shape
                rx0, ry0, rx1, ry1 = image.models[a].region
                x0, y0, x1, y1 = image.region
                gh, gw = image.grid
                s = 16
                xs = x0 + (x1 - x0) * (np.arange(gw * s) + 0.5) / (gw * s)
                ys = y0 + (y1 - y0) * (np.arange(gh * s) + 0.5) / (gh * s)
                cols = np.clip(np.floor((xs - rx0) / (rx1 - rx0) * W).astype(int), 0, W - 1)
                rows = np.clip(np.floor((ys - ry0) / (ry1 - ry0) * H).astype(int), 0, H - 1)
                expected = values[np.ix_(rows, cols)].reshape(gh, s, gw, s).mean(axis=(1, 3))
                got = arrays[f"map_{i}_{a}_{k}"]
                assert got.shape == (gh, gw)
                scale = max(float(np.ptp(values)), 1e-12)
                assert np.abs(got - expected).max() <= 0.08 * scale, (model.id, method, image.id)
            # and the region each model reports is where its crop comes from (inside the image)
            assert all(0 <= im.models[a].region[0] < im.models[a].region[2] <= im.size[1] + 1e-6 for im in rec.images)


def test_every_map_has_its_scale_and_the_pages_hide_the_toc(built):
    """Each compared map is a captioned figure with its own labelled scale, whose printed end is
    the 99.5th percentile of the stored common-grid map; figure pages hide the table of contents."""
    config, manifest = built
    art = manifest.one("compare", dataset="pics")
    rec = art.rec
    arrays = art.load_npz("maps")
    docs = config.work_dir / "docs" / "compare" / "pics"
    for i, image in enumerate(rec.images):
        page = (docs / f"image-{slug(image.id)}.md").read_text()
        assert page.startswith("---\nhide:\n  - toc\n---\n")
        h1 = next(line for line in page.splitlines() if line.startswith("# "))
        assert "Tiny CNN" in h1 and "pics" in h1
        for a in range(len(rec.models)):
            for k, method in enumerate(rec.methods):
                values = arrays[f"map_{i}_{a}_{k}"]
                end = f"{float(np.percentile(np.abs(values), 99.5)) or float(np.abs(values).max()) or 1.0:.3g}"
                label = f'<span class="mc-scale__max">+{end} for</span>' if rec.signed[method] \
                    else f'<span class="mc-scale__max">{end}</span>'
                assert label in page, (image.id, a, method)
        assert page.count('class="mc-scale"') == len(rec.models) * len(rec.methods)
    html = (config.site_dir / "compare" / "pics" / "method-saliency.html").read_text()
    assert html.count("<figcaption") == html.count("<figure") > 0
    assert "colourbar" in html and not re.search(r"<a [^>]*>[^<]*<img[^>]*mc-scale__bar", html)


def test_class_visualisations_of_the_same_class_side_by_side(built):
    config, manifest = built
    overview = (config.work_dir / "docs" / "compare" / "pics" / "index.md").read_text()
    assert "## Feature visualisations across models" in overview
    section = overview.split("## Feature visualisations across models", 1)[1].split("##", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert [line.split("|")[1].strip() for line in rows] == ["cat"]  # "eel" and "dog" are in one model only
    for model in ("tiny", "other"):
        key = manifest.one("features_classes", model=model).key
        assert f"assets/gen/{key}/class-" in rows[0]
    similarity = config.work_dir / "docs" / "compare" / "pics" / "similarity.md"
    assert ("(similarity.md)" in overview) == similarity.exists()


def test_a_second_run_reuses_the_comparison_byte_for_byte(built):
    config, manifest = built
    art = manifest.one("compare", dataset="pics")
    before = {p.name: p.read_bytes() for p in art.path.iterdir()}
    summary = run_report(config, show_progress=False)
    assert f"compare/{art.key}" in summary.reused
    assert not [c for c in summary.computed if c.startswith("compare/")]
    assert {p.name: p.read_bytes() for p in art.path.iterdir()} == before
