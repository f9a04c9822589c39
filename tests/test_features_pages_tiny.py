"""The features pages on the tiny report: a strict mkdocs build, gallery -> unit links, dataset
examples on the page equal to the artifact's, escaping, and ``modelcard:`` references from a
hand-written page resolving to the generated images."""

from __future__ import annotations

import re
import textwrap

import numpy as np
import pytest
from PIL import Image
from test_features_stage_tiny import make_features_report

from generator.config import load_config
from generator.pipeline.run import run_report
from generator.render import images as img
from generator.render.manifest import Manifest


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """Run and render the tiny features report once, with a hand-written page that embeds
    generated figures through stable references."""
    from generator.render.site import render_site

    root = tmp_path_factory.mktemp("features_pages")
    config = load_config(make_features_report(root))
    run_report(config, show_progress=False)
    manifest = Manifest.load(config.work_dir)
    cls = manifest.one("features_classes", model="tiny").record["classes"][0]
    item = manifest.one("features_deepdream", model="tiny").record["items"][0]
    (root / "pages" / "notes.md").write_text(textwrap.dedent(f"""
        # Notes

        ![unit](modelcard:features/tiny/relu2/0)
        ![dream](modelcard:deepdream/tiny/{item}/relu1)
        ![class](modelcard:classvis/tiny/{cls})
        [gallery](modelcard:page/features/tiny/relu2/index)
    """))
    (root / "pages" / "nav.yml").write_text("- Notes: notes.md\n")
    render_site(config, build=True, strict=True)
    return config, manifest


def test_pages_exist_and_link(site):
    config, manifest = site
    docs, out = config.work_dir / "docs", config.site_dir
    base = docs / "features" / "tiny"
    for page in ("index.md", "classes.md", "deepdream.md", "filters.md", "relu1/index.md", "relu2/index.md"):
        assert (base / page).exists(), page
        assert (out / "features" / "tiny" / page.replace(".md", ".html")).exists(), page
    for layer in ("relu1", "relu2"):
        gallery = (base / layer / "index.md").read_text()
        chans = manifest.one("features_gallery", model="tiny", layer=layer).record["channels"]
        for c in chans:
            assert f"(unit-{c}.md)" in gallery  # every channel image links to its unit page
            assert (base / layer / f"unit-{c}.md").exists()
    text = "".join(p.read_text() for p in base.rglob("*.md"))
    assert "<script>" not in text and "&lt;script&gt;" in text  # the model title is escaped
    deep = (base / "deepdream.md").read_text()
    assert "What kind of differences do you see as you go deeper?" in deep
    assert deep.index("`relu1`") < deep.index("`relu2`")  # rows shallow to deep


def test_unit_page_examples_equal_artifact(site):
    config, manifest = site
    docs = config.work_dir / "docs"
    for layer in ("relu1", "relu2"):
        ex = manifest.one("features_examples", model="tiny", layer=layer, dataset="pics")
        crops = ex.load_npz("examples")["crops"]
        for j, c in enumerate(ex.record["channels"]):
            page = (docs / "features" / "tiny" / layer / f"unit-{c}.md").read_text()
            shown = re.findall(r'<span class="activation" data-item="([^"]*)">([^<]*)</span>', page)
            assert [s[0] for s in shown] == ex.record["items"][j]
            assert [float(s[1]) for s in shown] == pytest.approx(ex.record["values"][j], abs=5e-4)
            assert all(s[1][0] in "+-" for s in shown)  # signed
            # the crops on the page are the artifact's crops (enlarged with nearest neighbours)
            # (the examples table only: the deconvnet figure shows the top crop again beside its projection)
            table = page[page.index("## Dataset examples"):page.index("## Deconvnet projection")]
            pngs = re.findall(r"!\[[^\]]*\]\(([^)]*%s/c%d-\d\.png)\)" % (ex.key, c), table)
            assert len(pngs) == len(shown)
            for r, rel_png in enumerate(pngs):
                pixels = np.asarray(Image.open((docs / "features" / "tiny" / layer / rel_png).resolve()))
                want = img.upscale(crops[j, r], 96)
                np.testing.assert_array_equal(pixels.reshape(want.shape), want)
            assert "Deconvnet projection" in page and "Diversity" in page and "Negative" in page


def test_references_resolve_to_generated_images(site):
    config, manifest = site
    docs = config.work_dir / "docs"
    notes = (docs / "notes.md").read_text()
    assert "modelcard:" not in notes
    targets = re.findall(r"\]\(([^)]+)\)", notes)
    assert len(targets) == 4 and all((docs / t).exists() for t in targets)
    # the unit reference shows exactly the gallery image of channel 0 of relu2
    gal = manifest.one("features_gallery", model="tiny", layer="relu2")
    j = gal.record["channels"].index(0)
    pixels = np.asarray(Image.open(docs / targets[0]))
    np.testing.assert_array_equal(pixels, img.upscale(gal.load_npz("images")["images"][j], 112))
    assert (config.site_dir / "notes.html").exists()
