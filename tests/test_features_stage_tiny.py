"""The features stage on the tiny report: artifact shapes and descriptions, numbers checked
against independent recomputations (objective values, brute-force dataset examples, a
hand-written deconvnet, predicted classes), determinism and reuse on a second run."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from generator.config import load_config
from generator.pipeline.run import run_report
from generator.render.manifest import Manifest

FEATURES = textwrap.dedent("""
    outcome:
      enabled: false
    features:
      enabled: true
      profile: quick
      steps: 4
      channels: 3
      diversity: 2
      examples: 3
      deepdream_images: 2
      max_classes: 2
""")


def make_features_report(root: Path) -> Path:
    """The conftest tiny CNN on the conftest image folder, with a tiny features section."""
    from conftest import TINY_MODEL_MODULE, write_image_folder

    folder = write_image_folder(root / "images")
    (root / "tinymodel.py").write_text(TINY_MODEL_MODULE)
    (root / "pages").mkdir(exist_ok=True)  # no hand-written pages (the project's refer to the default report)
    report = root / "report.yaml"
    report.write_text(textwrap.dedent(f"""
        title: "Tiny <features> report"
        device: cpu
        site_src: [pages]
        models:
          - id: tiny
            source: python:tinymodel:build
            title: "Tiny <script>alert(1)</script> CNN"
        datasets:
          - id: pics
            source: folder:{folder}
    """) + FEATURES)
    return report


@pytest.fixture(scope="module")
def featured(tmp_path_factory):
    root = tmp_path_factory.mktemp("features")
    config = load_config(make_features_report(root))
    summary = run_report(config, show_progress=False)
    return config, Manifest.load(config.work_dir), summary


def _loaded(config):
    """The tiny model and spec exactly as the run loads them."""
    from generator.artifacts.store import ArtifactStore
    from generator.models.sources import LoadContext, load_model
    from generator.pipeline.run import model_request

    store = ArtifactStore(config.work_dir / "artifacts")
    lm = load_model(model_request(config, config.models[0]), LoadContext(store=store, device=torch.device("cpu")))
    return lm.module.eval(), lm.spec


def _display(config, spec):
    from generator.data.sources import load_dataset
    from generator.pipeline.inputs import displayed

    dc = config.datasets[0]
    ds = load_dataset(dc.id, dc.source, dc.options)
    return ds, displayed(spec, ds, len(ds))


def test_galleries_shapes_descriptions_values(featured):
    from generator.methods import featurevis as fv

    config, manifest, _ = featured
    real = [f for f in manifest.failures if "broken.jpg" not in f["what"]]
    assert not real, real
    model, spec = _loaded(config)
    galleries = {a.record["layer"]: a for a in manifest.find("features_gallery", model="tiny")}
    assert sorted(galleries) == ["relu1", "relu2"]  # the tiny CNN's two activation layers
    for layer, width in (("relu1", 8), ("relu2", 16)):
        art = galleries[layer]
        rec, arrays = art.record, art.load_npz("images")
        chans = fv.spread_channels(width, 3)
        assert rec["channels"] == chans and rec["layer_channels"] == width
        assert arrays["images"].shape == (3, 32, 32, 3) and arrays["images"].dtype == np.uint8
        assert rec["descriptions"] == [fv.channel(layer, c).description for c in chans]
        assert rec["settings"]["steps"] == 4 and rec["settings"]["seed"] == config.seed
        # the stored values are the objective on the final images (up to uint8 rounding)
        again = fv.evaluate(model, spec, fv.channel(layer, chans), arrays["images"].astype(np.float32) / 255)
        np.testing.assert_allclose(again, arrays["values"], rtol=0.03, atol=0.02)
        # deterministic: the same call with the same seed gives the same pixels
        direct = fv.channel_gallery(model, spec, layer, chans, profile=fv.get_profile("quick").with_(steps=4),
                                    seed=config.seed)
        np.testing.assert_array_equal(np.clip(direct.images * 255 + 0.5, 0, 255).astype(np.uint8), arrays["images"])


def test_diversity_and_negative(featured):
    from generator.methods import featurevis as fv

    config, manifest, _ = featured
    model, spec = _loaded(config)
    div = manifest.one("features_diversity", model="tiny", layer="relu2")
    imgs = div.load_npz("images")["images"]
    assert imgs.shape == (3, 2, 32, 32, 3) and div.record["per_unit"] == 2
    assert "diversity(relu2, groups of 2)" in div.record["descriptions"][0]
    neg = manifest.one("features_negative", model="tiny", layer="relu2")
    arrays = neg.load_npz("images")
    assert arrays["images"].shape == (3, 32, 32, 3)
    assert all(d.startswith("−") for d in neg.record["descriptions"])
    # a negative's value is minus the channel's mean activation on its image
    chans = neg.record["channels"]
    mean_act = fv.evaluate(model, spec, fv.channel("relu2", chans), arrays["images"].astype(np.float32) / 255)
    np.testing.assert_allclose(-mean_act, arrays["values"], rtol=0.03, atol=0.02)


def _brute_force_top(model, spec, display, layer, channels, k):
    from generator.pipeline.inputs import model_input

    acts = {}
    handle = dict(model.named_modules())[layer].register_forward_hook(lambda m, i, o: acts.__setitem__("a", o))
    with torch.no_grad():
        model(model_input(spec, display, torch.device("cpu")))
    handle.remove()
    a = acts["a"][:, channels].flatten(2)  # (N, C, HW)
    score = a.max(dim=2).values.T.numpy()  # (C, N)
    order = np.argsort(-score, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(score, order, axis=1), order


def test_dataset_examples_match_brute_force(featured):
    config, manifest, _ = featured
    model, spec = _loaded(config)
    ds, display = _display(config, spec)
    for layer in ("relu1", "relu2"):
        art = manifest.one("features_examples", model="tiny", layer=layer, dataset="pics")
        rec, arrays = art.record, art.load_npz("examples")
        values, order = _brute_force_top(model, spec, display, layer, rec["channels"], 3)
        np.testing.assert_allclose(arrays["values"], values, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(rec["values"], values, atol=1e-5)
        # ties (dead units give zeros everywhere) may order differently; compare where distinct
        distinct = np.abs(np.diff(np.sort(values, axis=1), axis=1)).min(axis=1) > 1e-6
        np.testing.assert_array_equal(arrays["indices"][distinct], order[distinct])
        assert rec["items"] == [[ds.items[i].id for i in row] for row in arrays["indices"]]
        for j in range(len(rec["channels"])):
            for r in range(3):
                t, l, b, rr = arrays["boxes"][j, r]
                np.testing.assert_array_equal(arrays["crops"][j, r], display[arrays["indices"][j, r], t:b, l:rr])
        np.testing.assert_array_equal(arrays["thumbs"], display[arrays["shown"]])


class _DeconvReLU(torch.autograd.Function):
    """Zeiler & Fergus's backward ReLU, written independently of the rule engine."""

    @staticmethod
    def forward(ctx, x):
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx, g):
        return g.clamp(min=0)


def test_deconvnet_matches_hand_written(featured):
    from generator.methods.featurevis import projection_image
    from generator.pipeline.inputs import model_input

    config, manifest, _ = featured
    model, spec = _loaded(config)
    _, display = _display(config, spec)
    ex = manifest.one("features_examples", model="tiny", layer="relu2", dataset="pics").load_npz("examples")
    dec = manifest.one("features_deconv", model="tiny", layer="relu2", dataset="pics")
    stored = dec.load_npz("projections")["images"]
    chans = dec.record["channels"]
    for j, c in enumerate(chans):
        x = model_input(spec, display[ex["indices"][j, 0]][None], torch.device("cpu")).requires_grad_(True)
        h = x
        for name, m in model.named_children():
            h = _DeconvReLU.apply(h) if isinstance(m, nn.ReLU) else m(h)
            if name == "relu2":
                break
        y, xx = ex["positions"][j, 0]
        (g,) = torch.autograd.grad(h[0, c, y, xx], x)
        want = projection_image(g[0].permute(1, 2, 0).numpy())
        assert np.abs(want.astype(int) - stored[j].astype(int)).max() <= 1
    examples = manifest.one("features_examples", model="tiny", layer="relu2", dataset="pics").record
    assert dec.record["items"] == [row[0] for row in examples["items"]]


def test_classes_deepdream_filters(featured):
    from generator.methods import featurevis as fv
    from generator.pipeline.inputs import model_input

    config, manifest, _ = featured
    model, spec = _loaded(config)
    ds, display = _display(config, spec)
    cls = manifest.one("features_classes", model="tiny")
    with torch.no_grad():
        pred = model(model_input(spec, display[:8], torch.device("cpu"))).argmax(1).tolist()
    assert cls.record["classes"] == list(dict.fromkeys(pred))[:2] and cls.record["source"] == "predicted"
    assert cls.record["names"] == [spec.class_names[c] for c in cls.record["classes"]]
    images = cls.load_npz("images")["images"]
    assert images.shape == (len(cls.record["classes"]), 32, 32, 3)
    logits = fv.evaluate(model, spec, fv.class_logit(cls.record["classes"]), images.astype(np.float32) / 255)
    np.testing.assert_allclose(logits, cls.record["values"], rtol=0.03, atol=0.02)

    dream = manifest.one("features_deepdream", model="tiny", dataset="pics")
    arrays = dream.load_npz("dreams")
    assert dream.record["layers"] == ["relu1", "relu2"]  # shallow to deep
    assert arrays["dreams"].shape == (2, 2, 32, 32, 3)
    np.testing.assert_array_equal(arrays["originals"], display[:2])
    assert not np.array_equal(arrays["dreams"][0], arrays["originals"])  # dreaming changed the photos

    filt = manifest.one("features_filters", model="tiny")
    assert filt.record["layer"] == "conv1" and filt.record["shape"] == [8, 3, 3, 3]
    grid = filt.load_npz("grid")["grid"]
    want = np.clip(fv.filter_grid(model, zoom=16) * 255 + 0.5, 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(grid, want)


def test_second_run_reuses_every_feature_artifact(featured):
    config, manifest, first = featured
    assert any(c.startswith("features_gallery/") for c in first.computed)
    again = run_report(config, show_progress=False)
    assert not [c for c in again.computed if c.startswith("features_")]
    kinds = {r.split("/")[0] for r in again.reused}
    assert {"features_gallery", "features_diversity", "features_negative", "features_examples", "features_deconv",
            "features_classes", "features_deepdream", "features_filters"} <= kinds


def test_unknown_model_in_settings_is_a_config_error(tmp_path):
    from generator.config import ConfigError

    report = make_features_report(tmp_path)
    report.write_text(report.read_text() + "  layers: {tiyn: [relu1]}\n")
    config = load_config(report)
    # Found before any model loads: file:line: field: message, with a suggestion.
    with pytest.raises(ConfigError) as info:
        run_report(config, show_progress=False)
    message = str(info.value)
    assert "did you mean 'tiny'" in message and "report.yaml:" in message and "features.layers.tiyn" in message
    assert not (tmp_path / ".modelcard" / "artifacts").exists()
