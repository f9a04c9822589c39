"""The render stage: no torch, escaped user strings, a strict mkdocs build with images."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from generator.config import load_config
from generator.pipeline.run import run_report
from generator.render.images import colourise, overlay, scale_map
from generator.render.text import md_escape


@pytest.fixture()
def built(tiny_report: Path) -> Path:
    config = load_config(tiny_report)
    run_report(config, show_progress=False)
    return tiny_report


def test_render_imports_no_torch(built: Path):
    code = (
        "import sys\n"
        "from generator.config import load_config\n"
        "from generator.render.site import render_site\n"
        f"site = render_site(load_config({str(built)!r}))\n"
        "assert 'torch' not in sys.modules, 'the renderer imported torch'\n"
        "print(site)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=Path(__file__).parents[1])
    assert proc.returncode == 0, proc.stderr
    site = Path(proc.stdout.strip())
    assert (site / "index.html").exists()


def test_site_pages_images_and_escaping(built: Path):
    from generator.render.site import render_site

    config = load_config(built)
    site = render_site(config)
    index = (site / "index.html").read_text()
    # User strings are shown, never interpreted.
    assert "<script>alert(1)</script>" not in index
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in index
    assert "<b>bold</b>" not in index and "&lt;b&gt;bold&lt;/b&gt;" in index
    assert "Testing | escaping" in index  # the Markdown escape of "|" is not shown
    # Missing card fields are named together, once per model, not one line each.
    assert index.count("Not provided:") == 1 and "contact" in index.split("Not provided:")[1][:400]
    pages = sorted(p.relative_to(site).as_posix() for p in site.rglob("*.html"))
    for expected in ["index.html", "run.html", "data/index.html", "models/tiny.html",
                     "outcome/tiny/pics/index.html", "outcome/tiny/pics/predictions.html",
                     "outcome/tiny/pics/method-saliency.html", "outcome/tiny/pics/method-gradcam.html"]:
        assert expected in pages
    image_pages = [p for p in pages if p.startswith("outcome/tiny/pics/image-")]
    assert len(image_pages) == 4
    # Every image a page refers to exists.
    import re

    for page in site.rglob("*.html"):
        for src in re.findall(r'<img[^>]+src="([^"]+)"', page.read_text()):
            if src.startswith(("http", "data:")):
                continue
            assert (page.parent / src).resolve().exists(), f"{page}: missing image {src}"
    run_page = (site / "run.html").read_text()
    assert "broken.jpg" in run_page  # the skipped file is reported


def test_md_escape_neutralises_markup():
    assert str(md_escape("<img src=x onerror=alert(1)>")) == "&lt;img src=x onerror=alert\\(1\\)&gt;"
    assert str(md_escape("a|b*c_d[e]")) == "a\\|b\\*c\\_d\\[e\\]"
    assert str(md_escape(None)) == ""


def test_heatmap_scaling_conventions():
    signed = np.array([[-2.0, 0.0], [1.0, 2.0]])
    s = scale_map(signed, signed=True)
    assert s[0, 1] == pytest.approx(0.5) and s[1, 1] > 0.99 and s[0, 0] < 0.01
    unsigned = np.array([[0.0, 1.0], [2.0, 4.0]])
    u = scale_map(unsigned, signed=False)
    assert u[0, 0] == 0 and u[1, 1] == pytest.approx(1.0)
    rgb = colourise(unsigned, signed=False)
    assert rgb.shape == (2, 2, 3) and rgb.dtype == np.uint8
    pixels = np.full((4, 4, 1), 100, np.uint8)
    out = overlay(pixels, unsigned, signed=False)
    assert out.shape == (4, 4, 3)  # grayscale input, resized map


def test_render_without_run_says_what_to_do(tmp_path: Path, tiny_report: Path):
    from generator.render.manifest import ManifestMissing
    from generator.render.site import render_site

    with pytest.raises(ManifestMissing, match="modelcard run"):
        render_site(load_config(tiny_report))


def test_site_images_jpeg_for_photographic_png_for_small(tmp_path: Path):
    from PIL import Image

    from generator.render.images import picture_suffix, save_image

    rng = np.random.default_rng(0)
    big = rng.integers(0, 256, (96, 96, 3), dtype=np.uint8)
    small = rng.integers(0, 256, (28, 28, 1), dtype=np.uint8)
    assert picture_suffix(big) == ".jpg" and picture_suffix(small) == ".png"
    save_image(tmp_path / "a.jpg", big)
    save_image(tmp_path / "b.jpg", big)
    save_image(tmp_path / "s.png", small)
    assert (tmp_path / "a.jpg").read_bytes() == (tmp_path / "b.jpg").read_bytes()  # deterministic
    with Image.open(tmp_path / "a.jpg") as im:
        assert im.format == "JPEG" and im.size == (96, 96)
        # quality 90 without chroma subsampling stays close to the pixels
        assert np.abs(np.asarray(im, dtype=int) - big.astype(int)).mean() < 12
    with Image.open(tmp_path / "s.png") as im:
        assert im.format == "PNG" and np.array_equal(np.asarray(im), small[:, :, 0])
    with pytest.raises(ValueError, match="gif"):
        save_image(tmp_path / "c.gif", big)


def test_card_precedence_model_then_report_then_embedded():
    from types import SimpleNamespace

    from generator.config import CardMetadata
    from generator.models.cards import embedded_card
    from generator.render.site import card_summary, merged_card

    config = SimpleNamespace(card=CardMetadata(licence="report licence", limitations="report limits"))
    embedded = embedded_card("embedded:efficientnet_lite0")
    card = merged_card(config, {"licence": None, "owners": ["the user"], "citation": ""}, embedded)
    assert card["owners"] == ["the user"]  # the model's config wins
    assert card["licence"] == "report licence"  # then the report's config
    assert card["citation"].startswith("Tan, M. and Le, Q. V. (2019)")  # then what is known
    assert card["training_data"].startswith("ImageNet-1k")
    assert card["contact"] is None  # known to nobody: stays empty
    shown, missing = card_summary(card)
    assert "contact" in missing and "owners" not in missing and "intended use" in missing
    assert dict(shown)["Model details"][:2] == ["description", "owners"]
    assert all(fields for _, fields in shown)  # a section with nothing known is left out
    assert embedded_card("timm:resnet50") == {}
    assert embedded_card("embedded:fashion_mnist_cnn")["training_data"].startswith("Fashion-MNIST training split")
