"""The Building Blocks stage on the tiny report: artifacts, reference numbers, icons, caching."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from _blocks_report import write_blocks_report

from generator.config import load_config
from generator.pipeline.run import run_report
from generator.render.manifest import Manifest


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    config = write_blocks_report(tmp_path_factory.mktemp("blocks_stage"))
    summary = run_report(load_config(config), show_progress=False)
    # the fixture's image folder holds one unreadable file on purpose; nothing else may fail
    assert [f for f in summary.failed if "broken.jpg" not in f[0]] == []
    return config


def test_one_artifact_per_image_and_layer_with_icons_and_maps(report: Path):
    config = load_config(report)
    manifest = Manifest.load(config.work_dir)
    arts = manifest.find("blocks", model="tiny", dataset="pics")
    assert sorted((a.record["image"], a.record["layer"]) for a in arts) == sorted(
        (img, layer) for img in {a.record["image"] for a in arts} for layer in ("relu2", "pool"))
    assert len({a.record["image"] for a in arts}) == 2
    for a in arts:
        s, arr = a.load_json("summary"), a.load_npz("arrays")
        h, w = s["grid"]
        assert (h, w) == ((16, 16) if a.record["layer"] == "relu2" else (1, 1))
        assert arr["grid_icons"].dtype == np.uint8 and arr["grid_icons"].shape == (h * w, 32, 32, 3)
        k = len(s["groups"])
        assert arr["group_icons"].shape == (k, 32, 32, 3) and arr["group_maps"].shape == (k, h, w)
        assert arr["class_maps"].shape == (3, h, w) and arr["pixels"].shape == (32, 32, 3)
        # the stored spatial maps are the summary's (rounded to 4 significant digits there)
        for i, sa in enumerate(s["spatial_attribution"]):
            np.testing.assert_allclose(np.asarray(sa["map"]), arr["class_maps"][i], rtol=1e-3, atol=1e-6)
        if a.record["layer"] == "relu2":
            assert a.record["upper"] == "pool"
            assert arr["upper_group_icons"].shape[0] == len(s["flow"]["upper_groups"])
            assert arr["layer_to_layer"].shape == (1, h * w)
        else:
            assert a.record["upper"] is None and "flow" not in s


def test_summary_matches_a_direct_computation(report: Path):
    """Reference: building_blocks on the same model and input, outside the pipeline."""
    from generator.engine.preprocess import normalise
    from generator.methods.blocks import building_blocks
    from generator.models.sources import LoadContext, load_model
    from generator.pipeline.run import model_request

    config = load_config(report)
    manifest = Manifest.load(config.work_dir)
    art = next(a for a in manifest.find("blocks", layer="relu2"))
    s, arr = art.load_json("summary"), art.load_npz("arrays")
    loaded = load_model(model_request(config, config.models[0]), LoadContext())
    model, spec = loaded.module, loaded.spec
    x = normalise(arr["pixels"][None], spec, torch.device("cpu"))[0]
    bb = building_blocks(model, x, "relu2", top_k=3, n_channels=4, n_groups=3, upper_layer="pool", seed=0)
    assert s["top_classes"] == bb.top_classes
    np.testing.assert_allclose(arr["class_maps"], bb.attribution.spatial.numpy(), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(arr["magnitude"], bb.grid.magnitude.numpy(), rtol=1e-5)
    # activation x gradient summed over everything is the linear estimate of each logit; with
    # relu2 -> mean pool -> linear the network is affine in the activation, so it is exact:
    # logit(a) - logit(0) = logit(a) - bias.
    bias = model.fc.bias.detach().numpy()
    for k, c in enumerate(bb.attribution.classes):
        total = arr["class_maps"][k].sum()
        assert total == pytest.approx(float(bb.activations.logits[c]) - bias[c], rel=1e-4, abs=1e-5)


def test_channel_icons_cover_every_channel_shown(report: Path):
    from generator.pipeline.stages.blocks import used_channels

    config = load_config(report)
    manifest = Manifest.load(config.work_dir)
    icons = {a.record["layer"]: a for a in manifest.find("blocks-icons", model="tiny")}
    assert set(icons) == {"relu2", "pool"}
    need = {"relu2": set(), "pool": set()}
    for a in manifest.find("blocks", model="tiny"):
        own, up = used_channels(a.load_json("summary"))
        need[a.record["layer"]] |= own
        if a.record["upper"]:
            need[a.record["upper"]] |= up
    for layer, a in icons.items():
        data = a.load_npz("icons")
        assert set(data["channels"].tolist()) == need[layer]
        assert data["icons"].dtype == np.uint8 and data["icons"].shape[1:] == (32, 32, 3)


def test_second_run_reuses_every_blocks_artifact(report: Path):
    summary = run_report(load_config(report), show_progress=False)
    assert not any(k.startswith("blocks") for k in summary.computed)
    assert sum(k.startswith("blocks/") for k in summary.reused) == 4


def test_settings_device_defaults_and_class_names():
    from generator.pipeline.stages.blocks import resolve_classes
    from generator.settings.blocks import BlocksSettings

    s = BlocksSettings(enabled=True, classes=["cat", 1])
    assert s.icons_for("cpu")["steps"] < s.icons_for("cuda")["steps"]
    assert BlocksSettings(icon_steps=7).icons_for("cuda")["steps"] == 7

    class Spec:
        id, num_classes, class_names = "m", 4, ["ant", "bee", "cat", "dog"]

    assert resolve_classes(s, Spec()) == [2, 1]
    with pytest.raises(ValueError, match="not a class name"):
        resolve_classes(BlocksSettings(classes=["cow"]), Spec())
