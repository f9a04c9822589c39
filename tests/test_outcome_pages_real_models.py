"""Every attribution method on the default report's two architectures (tf_efficientnet_lite0:
ReLU6, depthwise convolutions, residual blocks; the Fashion-MNIST CNN: BatchNorm, max-pool,
dropout), shared passes equal separate ones, and the segmentation drawing."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _attr_models import transformer_only

from generator.methods.attribution import ATTRIBUTION_METHODS, attribute_many
from generator.models.spec import ModelSpec

CHEAP = {"smoothgrad": {"n_samples": 2}, "smoothgrad_sq": {"n_samples": 2}, "vargrad": {"n_samples": 2},
         "integrated_gradients": {"steps": 4}, "interior_gradients": {"alphas": (0.1, 1.0)},
         "occlusion": {"window": 0.5, "stride": 0.5}}


def _spec(channels: int, size: int, cam_layer: str, classes: int) -> ModelSpec:
    return ModelSpec(id="m", source="test", input_size=(channels, size, size), mean=(0.5,) * channels,
                     std=(0.5,) * channels, class_names=[f"c{i}" for i in range(classes)], cam_layer=cam_layer)


def _lite0():
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    return timm.create_model("tf_efficientnet_lite0", pretrained=False).eval(), _spec(3, 40, "blocks.6", 1000)


def _fashion():
    from generator.models.fashion_cnn import build_fashion_cnn

    torch.manual_seed(0)
    model = build_fashion_cnn().eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics, as after training
        for bn in (model.bn1, model.bn2):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
    return model, _spec(1, 28, "relu2", 10)


@pytest.mark.parametrize("factory", [pytest.param(_lite0, marks=pytest.mark.slow), _fashion],
                         ids=["tf_efficientnet_lite0", "fashion_cnn"])
def test_every_method_on_real_architectures(factory):
    model, spec = factory()
    c, s = spec.input_size[0], spec.input_size[1]
    x = torch.randn(2, c, s, s, generator=torch.Generator().manual_seed(0))
    before = model(x).detach().clone()
    target = before.argmax(1)
    names = [n for n in ATTRIBUTION_METHODS.names() if n not in transformer_only()]  # these refuse CNNs
    methods = [ATTRIBUTION_METHODS.get(n)(model, spec, **CHEAP.get(n, {})) for n in names]
    results = attribute_many(methods, x, target)
    assert sorted(results) == sorted(names)
    for name, r in results.items():
        assert r.maps.shape == (2, s, s), name
        assert torch.isfinite(r.maps).all(), name
        assert r.maps.abs().sum() > 0 or name == "counterfactual_gradcam", name
    # hooks, canonizers and rules are gone: the model computes exactly what it did before
    assert torch.equal(model(x), before)
    gap = results["deeplift"].extras["completeness_gap"]
    assert torch.isfinite(gap).all()
    if not any(isinstance(m, torch.nn.MaxPool2d) for m in model.modules()):
        # summation to delta is exact for elementwise activations; max-pooling passes the plain
        # gradient (a documented simplification), so the CNN's gap is only reported
        assert float(gap.max()) < 1e-3


def test_shared_noise_equals_separate_runs():
    model, spec = _fashion()
    x = torch.randn(3, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([0, 3, 7])
    names = ["smoothgrad", "smoothgrad_sq", "vargrad"]
    params = {"n_samples": 4, "noise_level": 0.2, "seed": 5}
    shared = attribute_many([ATTRIBUTION_METHODS.get(n)(model, spec, **params) for n in names], x, t)
    for n in names:
        alone = ATTRIBUTION_METHODS.get(n)(model, spec, **params).attribute(x, t)
        torch.testing.assert_close(shared[n].maps, alone.maps, rtol=1e-5, atol=1e-7)


def test_occlusion_window_as_fraction_equals_pixels():
    model, spec = _fashion()
    x = torch.randn(2, 1, 28, 28, generator=torch.Generator().manual_seed(2))
    t = torch.tensor([1, 2])
    occ = ATTRIBUTION_METHODS.get("occlusion")
    frac = occ(model, spec, window=0.25, stride=0.125).attribute(x, t)
    pix = occ(model, spec, window=7, stride=4).attribute(x, t)
    torch.testing.assert_close(frac.maps, pix.maps)
    assert frac.extras["windows"] == 36


def test_draw_segmentation_box_and_mask():
    from generator.render.pages.outcome import BOX_COLOUR, draw_segmentation

    pixels = np.full((10, 12, 1), 100, np.uint8)
    mask = np.zeros((10, 12), bool)
    mask[3:6, 4:9] = True
    out = draw_segmentation(pixels, mask, (4, 3, 8, 5), factor=2)
    assert out.shape == (20, 24, 3)
    # the outline runs along the upscaled box: rows 6 and 11, columns 8 and 17
    assert (out[6, 8:18] == BOX_COLOUR).all() and (out[11, 8:18] == BOX_COLOUR).all()
    assert (out[6:12, 8] == BOX_COLOUR).all() and (out[6:12, 17] == BOX_COLOUR).all()
    inside, outside = out[8, 12].astype(int), out[0, 0].astype(int)
    assert inside[0] > outside[0]  # tinted mask brighter than the darkened background
    empty = draw_segmentation(pixels, np.zeros((10, 12), bool), (-1, -1, -1, -1))
    assert not (empty == BOX_COLOUR).all(-1).any()
