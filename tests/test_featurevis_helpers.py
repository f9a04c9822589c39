"""Site helpers: dataset examples, DeepDream, diversity sets, filters, default layers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from featurevis_toys import FashionCNN, gray_spec, rgb_spec, toy_cnn

from generator.methods import featurevis as fv


def _batches(images, size):
    for i in range(0, len(images), size):
        yield images[i : i + size], torch.zeros(min(size, len(images) - i))


@pytest.mark.parametrize("reduce", ["max", "mean"])
def test_dataset_examples_equal_brute_force(reduce):
    model, spec = toy_cnn(), rgb_spec()
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(37, 3, 32, 32, generator=gen)
    channels = [0, 4, 9, 15]
    ex = fv.top_activating(model, spec, "5", _batches(images, 8), channels=channels, k=5, reduce=reduce,
                           preprocessed=False)
    with torch.no_grad():
        x = fv.Normalizer.from_spec(spec)(images)
        acts = model[:6](x)[:, channels]  # the same network cut after module 5
    flat = acts.reshape(37, len(channels), -1)
    scores = flat.amax(dim=2) if reduce == "max" else flat.mean(dim=2)
    ref_vals, ref_idx = scores.T.sort(dim=1, descending=True)
    assert np.array_equal(ex.indices, ref_idx[:, :5].numpy())
    assert np.allclose(ex.values, ref_vals[:, :5].numpy(), atol=1e-5)
    assert ex.act_hw == (16, 16)
    # positions: the argmax of each chosen image's map
    for j in range(len(channels)):
        for r in range(5):
            amap = acts[ex.indices[j, r], j]
            y, x_ = ex.positions[j, r]
            assert torch.isclose(amap[y, x_], amap.max())
    boxes = ex.boxes(crop=8)
    assert boxes.shape == (4, 5, 4)
    assert (boxes[..., 2] - boxes[..., 0] == 8).all() and boxes.min() >= 0 and boxes[..., 2:].max() <= 32
    crops = ex.crops(images.permute(0, 2, 3, 1).numpy(), crop=8)
    assert crops.shape == (4, 5, 8, 8, 3)
    t, l, b, rr = boxes[1, 2]
    assert np.array_equal(crops[1, 2], images[ex.indices[1, 2]].permute(1, 2, 0).numpy()[t:b, l:rr])


def test_dataset_examples_all_channels_fewer_images_than_k():
    model, spec = FashionCNN(), gray_spec()
    images = torch.rand(3, 1, 28, 28)
    ex = fv.top_activating(model, spec, "act2", [images], k=5)
    assert ex.values.shape == (16, 3) and ex.indices.shape == (16, 3)
    assert (np.diff(ex.values, axis=1) <= 0).all()


def test_deepdream_raises_the_layer_objective():
    model, spec = toy_cnn(), rgb_spec()
    photos = np.random.default_rng(0).random((2, 32, 32, 3)).astype(np.float32)
    out = fv.deepdream(model, spec, photos, ["2", "5"], steps=4, octaves=2, jitter=2, precision="fp32")
    assert set(out) == {"2", "5"}
    for name, dream in out.items():
        assert dream.shape == photos.shape and dream.min() >= 0 and dream.max() <= 1
        before = fv.evaluate(model, spec, fv.layer(name), photos)
        after = fv.evaluate(model, spec, fv.layer(name), dream)
        assert (after > before).all()


def test_diversity_set_groups_and_descriptions():
    model, spec = toy_cnn(), rgb_spec()
    res = fv.diversity_set(model, spec, "5", [2, 7], n=3, steps=4, size=32, batch_size=4)
    assert res.images.shape == (6, 32, 32, 3)
    assert res.settings["batch_size"] == 3  # rounded down to whole groups
    assert res.descriptions[0].startswith("channel(5, 2) + ") and "diversity(5, groups of 3)" in res.descriptions[0]
    assert res.descriptions[3].startswith("channel(5, 7)")


def test_gallery_negative_and_class_helpers():
    model, spec = toy_cnn(), rgb_spec()
    prof = fv.get_profile("quick").with_(steps=3, size=32)
    g = fv.channel_gallery(model, spec, "5", profile=prof)
    assert len(g.descriptions) == prof.channels_per_layer
    assert g.descriptions[0] == "channel(5, 0)" and g.descriptions[-1] == "channel(5, 15)"
    n = fv.negative_gallery(model, spec, "5", [1], profile=prof)
    assert n.descriptions == ["−channel(5, 1)"]
    c = fv.class_visualisations(model, spec, ["class3", 1], profile=prof)
    assert c.descriptions == ["logit(3 “class3”)", "logit(1 “class1”)"]


def test_filter_grid():
    model = toy_cnn()
    grid = fv.filter_grid(model, zoom=4, pad=1)
    # 8 filters of 3x3 -> 3 columns, 3 rows of 12 px tiles
    assert grid.shape == (3 * 13 + 1, 3 * 13 + 1, 3)
    assert grid.min() >= 0 and grid.max() <= 1
    w = model[0].weight.detach()
    tile = grid[1:13, 1:13]
    ref = 0.5 + 0.5 * w[0] / w[0].abs().max()
    assert np.allclose(tile[::4, ::4], ref.permute(1, 2, 0).numpy(), atol=1e-6)
    gray = fv.filter_grid(FashionCNN(), zoom=1)
    assert gray.shape[-1] == 3


def test_default_layers():
    assert fv.default_layers(toy_cnn()) == ["2", "5", "7"]
    assert fv.default_layers(FashionCNN()) == ["act1", "act2"]
    import torchvision

    assert fv.default_layers(torchvision.models.resnet18()) == ["layer1", "layer2", "layer3", "layer4"]
    assert fv.default_layers(torchvision.models.resnet18(), max_layers=2) == ["layer1", "layer4"]
    timm = pytest.importorskip("timm")
    lite0 = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    assert fv.default_layers(lite0) == [f"blocks.{i}" for i in range(7)]
    assert fv.default_layers(torchvision.models.vgg11())[-1] == "features.19"


def test_profiles():
    quick, full = fv.get_profile("quick"), fv.get_profile("full")
    assert quick.steps == 64 and full.steps == 512 and full.size == 224 and full.channels_per_layer is None
    assert quick.size_for(gray_spec()) == 28 and full.size_for(rgb_spec(224)) == 224
    with pytest.raises(ValueError):
        fv.get_profile("qiuck")
    assert fv.spread_channels(16, 4) == [0, 5, 10, 15] and fv.spread_channels(3, None) == [0, 1, 2]


def test_project_fashion_cnn_gallery():
    fashion = pytest.importorskip("generator.models.fashion_cnn")
    torch.manual_seed(0)
    model = fashion.build_fashion_cnn().eval()
    assert fv.default_layers(model) == ["relu1", "relu2"]
    prof = fv.get_profile("quick").with_(steps=4, channels_per_layer=3)
    res = fv.channel_gallery(model, gray_spec(), "relu2", profile=prof)
    assert res.images.shape == (3, 28, 28, 1)
    assert res.descriptions == ["channel(relu2, 0)", "channel(relu2, 32)", "channel(relu2, 63)"]


def test_deconv_projection_chunks_equal_one_batch():
    """Chunking bounds memory; each projection is independent of the others in its batch."""
    model = toy_cnn()
    names = [n for n, m in model.named_children() if isinstance(m, torch.nn.ReLU)]
    torch.manual_seed(3)
    x = torch.randn(7, 3, 32, 32)
    chans = [0, 1, 2, 3, 0, 1, 2]
    pos = [(i % 4, (2 * i) % 5) for i in range(7)]
    whole = fv.deconv_projection(model, names[-1], x, chans, pos, max_batch=64)
    chunked = fv.deconv_projection(model, names[-1], x, chans, pos, max_batch=3)
    assert whole.shape == (7, 32, 32, 3) and np.abs(whole).max() > 0
    np.testing.assert_allclose(chunked, whole, rtol=1e-5, atol=1e-7)
