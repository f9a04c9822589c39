"""The outcome, CAM-segmentation and evaluation stages on the tiny report: artifact shapes,
segmentation against a direct computation, evaluation numbers against a recomputation from
the stored curves, and the pages in a strict mkdocs build."""

from __future__ import annotations

import numpy as np
import pytest

from generator.config import load_config
from generator.pipeline.run import run_report
from generator.render.manifest import Manifest

METHODS = ["saliency", "gradient_x_input", "smoothgrad", "vargrad", "interior_gradients", "integrated_gradients",
           "gradcam", "counterfactual_gradcam", "lrp_epsilon", "deeplift", "occlusion"]

EXTRA = f"""
outcome:
  methods: [{", ".join(METHODS)}]
  images: 4
  params:
    smoothgrad: {{n_samples: 3}}
    vargrad: {{n_samples: 3}}
    interior_gradients: {{alphas: [0.1, 0.5, 1.0]}}
    integrated_gradients: {{steps: 8}}
    occlusion: {{window: 0.25, stride: 0.25}}
evaluation:
  enabled: true
  selectivity: {{steps: 4, patch: 4, images: 3}}
  sensitivity: {{images: 3, threshold: 0.9}}
  sanity: {{images: 2}}
  segmentation: {{thresholds: [0.2, 0.5, 0.8]}}
"""


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    """The tiny report of ``tests/conftest.py`` with more methods and the evaluation section,
    run once for the module."""
    from conftest import TINY_MODEL_MODULE, write_image_folder

    root = tmp_path_factory.mktemp("evaluated")
    folder = write_image_folder(root / "images")
    (root / "tinymodel.py").write_text(TINY_MODEL_MODULE)
    report = root / "report.yaml"
    report.write_text(f"""
title: "Tiny evaluated report"
device: cpu
site_src: []
models:
  - id: tiny
    source: python:tinymodel:build
datasets:
  - id: pics
    source: folder:{folder}
""" + EXTRA)
    config = load_config(report)
    run_report(config, show_progress=False)
    return config, Manifest.load(config.work_dir)


def _direct_segmentation(cam: np.ndarray, t: float):
    mask = (cam >= t * max(cam.max(), 1e-12)) & (cam > 0)
    if not mask.any():
        return mask, [-1, -1, -1, -1]
    ys, xs = np.nonzero(mask)
    return mask, [xs.min(), ys.min(), xs.max(), ys.max()]


def test_stage_artifacts(evaluated):
    from generator.render.pages.outcome import unpack_masks

    config, manifest = evaluated
    real = [f for f in manifest.failures if "broken.jpg" not in f["what"]]  # the fixture's corrupt file
    assert not real, real
    found = {a.record["method"]: a for a in manifest.find("attribution", model="tiny", dataset="pics")}
    assert sorted(found) == sorted(METHODS)
    for a in found.values():
        assert a.load_npz("maps")["maps"].shape == (4, 32, 32)
    sweep = found["interior_gradients"].load_npz("maps")["extra_sweep"]
    assert sweep.shape == (3, 4, 32, 32)
    # the sweep at alpha = 1 is gradient x (input - baseline): its total equals IG's end-point
    # difference only approximately, but the map at the chosen alpha must be one of the sweep's
    ig = found["integrated_gradients"].record["extras"]
    assert len(ig["completeness_gap"]) == 4 and all(np.isfinite(ig["completeness_gap"]))
    assert len(found["lrp_epsilon"].record["extras"]["conservation"]) == 4

    seg = manifest.one("cam_segmentation", model="tiny", dataset="pics")
    arrays = seg.load_npz("segmentation")
    masks = unpack_masks(arrays)
    # the configured thresholds, plus any the stage always adds (Grad-CAM's own 15 %)
    assert {0.2, 0.5, 0.8} <= set(seg.record["thresholds"])
    assert masks.shape == (len(seg.record["thresholds"]), 4, 32, 32)
    cams = found["gradcam"].load_npz("maps")["maps"]
    np.testing.assert_array_equal(arrays["cams"], cams)  # reuses the outcome stage's Grad-CAM
    for ti, t in enumerate(seg.record["thresholds"]):
        for b in range(4):
            mask, box = _direct_segmentation(cams[b].astype(np.float32), t)
            np.testing.assert_array_equal(masks[ti, b], mask)
            assert list(arrays["boxes"][ti, b]) == box
            assert seg.record["area"][ti][b] == pytest.approx(mask.mean(), abs=1e-5)


def test_evaluation_numbers_match_curves(evaluated):
    config, manifest = evaluated
    sel = manifest.one("evaluation_selectivity", model="tiny", dataset="pics")
    curves = sel.load_npz("curves")
    M, n = len(METHODS), 3
    assert curves["deletion"].shape == (M, n, 5) and curves["insertion"].shape == (M, n, 5)
    np.testing.assert_allclose(curves["fractions"], np.linspace(0, 1, 5), atol=1e-6)
    rec = sel.record
    for mode in ("deletion", "insertion"):
        for i, m in enumerate(rec["methods"]):
            c = curves[mode][i].astype(np.float64)
            trapezoid = ((c[:, 1:] + c[:, :-1]) / 2 * np.diff(curves["fractions"])).sum(1)
            np.testing.assert_allclose(rec["auc"][mode][m], trapezoid, atol=1e-5)
            assert rec["mean_auc"][mode][m] == pytest.approx(trapezoid.mean(), abs=1e-5)
    # deletion starts and insertion ends at the unmodified image's probability
    np.testing.assert_allclose(curves["deletion"][:, :, 0], curves["insertion"][:, :, -1], atol=1e-5)
    scores = {m: rec["mean_auc"]["insertion"][m] - rec["mean_auc"]["deletion"][m] for m in rec["methods"]}
    # methods whose maps are mostly degenerate (empty, constant) are left out of the order
    ranked = [m for m in rec["methods"] if m not in rec["excluded"]]
    assert rec["ranking"] == sorted(ranked, key=lambda m: -scores[m])
    for m, maps in rec["degenerate"].items():
        assert all(d["problem"] in ("all zero", "constant", "non-finite values") for d in maps)
        assert (m in rec["excluded"]) == (2 * len(maps) > len(rec["images"]))

    sens = manifest.one("evaluation_sensitivity", model="tiny", dataset="pics").record
    for r in sens["per_method"].values():
        assert len(r["spearman_top2"]) == 3
        assert r["mean_spearman_top2"] == pytest.approx(np.mean(r["spearman_top2"]), abs=1e-5)
        assert r["class_insensitive"] == (np.mean(r["spearman_top2"]) > sens["threshold"])
    sanity = manifest.one("evaluation_sanity", model="tiny", dataset="pics").record
    assert sanity["layers"] == ["fc", "conv2", "conv1"]
    for r in sanity["per_method"].values():
        assert len(r["spearman_abs"]) == 3
        assert r["weight_insensitive"] == (r["spearman_abs"][-1] > sanity["threshold"])
        # the per-image values behind the flag average to the last step's mean
        assert len(r["final_per_image"]) == 2
        assert np.mean(r["final_per_image"]) == pytest.approx(r["spearman_abs"][-1], abs=1e-5)
    # ROAR only runs on the embedded Fashion-MNIST CNN
    assert manifest.one("evaluation_roar", model="tiny") is None


def test_pages_render_strict(evaluated):
    from generator.render.site import render_site

    config, _ = evaluated
    site = render_site(config)  # runs mkdocs build --strict
    base = site / "outcome" / "tiny" / "pics"
    sweep = (base / "interior-sweep.html").read_text()
    assert sweep.count("<img") >= 4 * 3
    seg = (base / "cam-segmentation.html").read_text()
    assert "mask area" in seg and seg.count("<img") >= 4 * 4
    image_page = next(base.glob("image-*.html")).read_text()
    assert "Counterfactual Grad-CAM" in image_page and "For and against" in image_page
    assert "completeness gap" in (base / "method-integrated_gradients.html").read_text()
    assert "conservation" in (base / "method-lrp_epsilon.html").read_text()
    evaluation = (site / "evaluation" / "tiny" / "pics.html").read_text()
    for text in ("Deletion AUC", "Class sensitivity", "cascading model-parameter randomisation", "Known limits",
                 "Not a ranking: 3 images"):
        assert text in evaluation
