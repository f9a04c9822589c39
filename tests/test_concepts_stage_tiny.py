"""The concepts stage and pages on the tiny report: records validate, numbers are consistent
with the records' own definitions, labels reach other pages through unit_labels, the pages
render without torch and grey what is not significant."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from generator.config import load_config
from generator.pipeline.run import run_report
from generator.render.manifest import Manifest

CONCEPTS = textwrap.dedent("""
    outcome: {enabled: false}
    evaluation: {enabled: false}
    data: {enabled: false}
    features: {enabled: false}
    blocks: {enabled: false}
    compare: {enabled: false}
    concepts:
      enabled: true
      tcav: {builtin: [stripes, red], images: 6, random_sets: 3, classes: 2, fit: mean_difference}
      rcv: {images: 24}
      dissection: {images: 20, topup: 12, textures: 3, mask_side: 16, iou_threshold: 0.01}
""")


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    from conftest import TINY_MODEL_MODULE, write_image_folder

    root = tmp_path_factory.mktemp("concepts")
    folder = write_image_folder(root / "images")
    (root / "tinymodel.py").write_text(TINY_MODEL_MODULE)
    (root / "pages").mkdir()
    path = root / "report.yaml"
    path.write_text(textwrap.dedent(f"""
        title: "Tiny concepts report"
        device: cpu
        site_src: [pages]
        models:
          - id: tiny
            source: python:tinymodel:build
            title: "Tiny CNN"
        datasets:
          - id: pics
            source: folder:{folder}
    """) + CONCEPTS)
    config = load_config(path)
    run_report(config, show_progress=False)
    return config, Manifest.load(config.work_dir)


def test_records_and_numbers(report):
    config, manifest = report
    failures = [f for f in manifest.failures if "broken.jpg" not in f["what"]]
    assert not failures, failures
    tcav = manifest.one("concepts_tcav", model="tiny").rec
    assert tcav.layers == ["relu1", "relu2"] and [c.name for c in tcav.concepts] == ["stripes", "red"]
    assert tcav.tests == 2 * 2 * len(tcav.classes)
    for row in tcav.rows:
        for s in row.scores:
            assert 0 <= s.mean <= 1 and s.p <= s.p_adjusted <= 1
            assert s.significant == (s.p_adjusted < tcav.alpha)
    rcv = manifest.one("concepts_rcv", model="tiny").rec
    assert rcv.images == 24 and {r.measure for r in rcv.rows} == {"brightness", "contrast", "colourfulness",
                                                                 "texture_energy"}
    dis = manifest.one("concepts_dissection", model="tiny").rec
    assert dis.images == 7 + 12 + 3 * 4  # 7 readable images + 12 crops, and 3 images of each texture
    for entry in dis.layers:
        assert entry.units == {"relu1": 8, "relu2": 16}[entry.layer] and len(entry.labels) == entry.units
        assert entry.labelled == sum(lab.label is not None for lab in entry.labels)
        for lab in entry.labels:
            if lab.method == "iou":
                assert lab.best_iou >= dis.iou_threshold and lab.label.endswith(f"IoU {lab.best_iou:.2f}")
        assert sum(sum(v.values()) for v in entry.summary.values()) == entry.labelled


def test_pages_render_and_unit_labels(report, tmp_path):
    import sys

    from generator.render.pages.concepts import dissection_page, unit_labels
    from generator.render.site import render_site

    config, manifest = report
    labels = unit_labels(manifest, "tiny", "relu1")
    rec = manifest.one("concepts_dissection", model="tiny").rec
    expected = {lab.unit: lab.label for lab in rec.layers[0].labels if lab.label}
    assert labels == expected
    assert unit_labels(manifest, "tiny", "no-such-layer") == {}
    render_site(config, build=False)
    docs = Path(config.work_dir) / "docs"
    tcav = (docs / "concepts/tiny/pics/tcav.md").read_text()
    assert "random concepts" in tcav and "greyed" in tcav
    assert (docs / dissection_page("tiny", "pics", "relu2")).exists()
    assert (docs / "concepts/tiny/pics/rcv.md").exists()
    assert "torch" in sys.modules  # (the run imported it; the render module itself does not:)
    import generator.render.pages.concepts as pages

    assert "torch" not in pages.__dict__
