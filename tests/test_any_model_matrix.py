"""Every attribution method on every kind of model a user is likely to bring.

Tiny, fast instances (random weights; BatchNorm statistics calibrated on random images so
activations neither vanish nor explode) of timm's ViT, DeiT (distillation token), a ViT with
register tokens (as DINOv2 and EVA), Swin and ConvNeXt, and torchvision's DenseNet-121,
MobileNetV3, EfficientNet-B0, RegNet and ResNet-18. For each model and each registered method
the outcome is one of two, never a third:

* finite maps of the input's size that pass the method's own axiom where it has one
  (integrated gradients: completeness within 2 %; LRP: a map flagged reliable really conserves
  the logit within 10 %, and NaN never appears; Grad-CAM and friends: non-negative), and agree
  with Captum where Captum supports the case (saliency and integrated gradients);
* :class:`~generator.capability.Unsupported` with a one-line reason.

The model is unchanged afterwards (same outputs, no hooks left).
"""

from __future__ import annotations

from typing import Callable, Dict

import pytest
import torch
from torch import nn

from generator.capability import Unsupported
from generator.methods.attribution import ATTRIBUTION_METHODS
from generator.methods.attribution.gradient import COMPLETENESS_TOLERANCE
from generator.models.spec import ModelSpec

_BN = nn.modules.batchnorm._BatchNorm


def _calibrate(model: nn.Module, size: int) -> nn.Module:
    norms = [m for m in model.modules() if isinstance(m, _BN)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    if norms:
        model.train()
        with torch.no_grad():
            model(torch.randn(8, 3, size, size, generator=torch.Generator().manual_seed(5)))
    for m in norms:
        m.momentum = 0.1
    return model.eval()


def _timm(name: str, **kw) -> Callable[[], nn.Module]:
    def make() -> nn.Module:
        import timm

        torch.manual_seed(0)
        return timm.create_model(name, pretrained=False, num_classes=5, **kw)
    return make


def _tv(name: str) -> Callable[[], nn.Module]:
    def make() -> nn.Module:
        import torchvision

        torch.manual_seed(0)
        return getattr(torchvision.models, name)(weights=None, num_classes=5)
    return make


VIT = dict(img_size=32, patch_size=8, depth=2, embed_dim=32, num_heads=2)
MODELS: Dict[str, Callable[[], nn.Module]] = {
    "timm_vit": _timm("vit_tiny_patch16_224", **VIT),
    "timm_deit_distilled": _timm("deit_tiny_distilled_patch16_224", **VIT),
    "timm_vit_registers": _timm("vit_tiny_patch16_224", reg_tokens=4, **VIT),
    "timm_swin": _timm("swin_tiny_patch4_window7_224", img_size=32, window_size=4, embed_dim=16, depths=(1, 1),
                       num_heads=(1, 2)),
    "timm_convnext": _timm("convnext_atto", dims=(8, 16, 32, 64), depths=(1, 1, 1, 1)),
    "densenet121": _tv("densenet121"),
    "mobilenet_v3_small": _tv("mobilenet_v3_small"),
    "efficientnet_b0": _tv("efficientnet_b0"),
    "regnet_x_400mf": _tv("regnet_x_400mf"),
    "resnet18": _tv("resnet18"),
}
SIZE = 32
#: Networks whose function is smooth along the path (GELU, LayerNorm, softmax; no ReLU kinks).
RELU_NETS = {"densenet121", "regnet_x_400mf", "resnet18"}
ATTENTION_NETS = {"timm_vit", "timm_deit_distilled", "timm_vit_registers"}
SMOOTH = {"timm_vit", "timm_deit_distilled", "timm_vit_registers", "timm_swin", "timm_convnext"}
#: Cheap settings of the costly methods; the axioms are checked at these settings.
PARAMS = {
    "integrated_gradients": {"steps": 64},
    "smoothgrad": {"n_samples": 4}, "smoothgrad_sq": {"n_samples": 4}, "vargrad": {"n_samples": 4},
    "occlusion": {"window": 8, "stride": 8},
}
_BUILT: Dict[str, nn.Module] = {}
gaps: Dict[str, float] = {}


def _model(name: str) -> nn.Module:
    if name not in _BUILT:
        _BUILT[name] = _calibrate(MODELS[name](), SIZE)
    return _BUILT[name]


def _spec(name: str, model: nn.Module) -> ModelSpec:
    """The spec the project's own loaders would give (default layers, token layout)."""
    from generator.models import sources

    layers, cam = sources._default_layers(model)
    spec = ModelSpec(id=name, source="test", input_size=(3, SIZE, SIZE), mean=(0.5, 0.5, 0.5),
                     std=(0.25, 0.25, 0.25), class_names=[f"c{i}" for i in range(5)], layers=layers,
                     cam_layer=cam)
    sources._fill_token_layout(model, spec, keep_cam=False)
    return spec


X = torch.rand(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1)) * 4 - 2
TARGET = torch.tensor([2])


@pytest.mark.parametrize("name", list(MODELS))
def test_every_method_runs_with_its_axiom_or_says_why_not(name: str) -> None:
    model = _model(name)
    spec = _spec(name, model)
    with torch.no_grad():
        before = model(X)
    ran: list = []
    refused: Dict[str, str] = {}
    for method in sorted(ATTRIBUTION_METHODS.names()):
        cls = ATTRIBUTION_METHODS.get(method)
        try:
            result = cls(model, spec, **PARAMS.get(method, {})).attribute(X, TARGET)
        except Unsupported as why:
            reason = str(why)
            assert reason and "\n" not in reason.strip(), (method, reason)
            refused[method] = reason
            continue
        ran.append(method)
        maps = result.maps
        assert maps.shape == (1, SIZE, SIZE), (method, tuple(maps.shape))
        assert torch.isfinite(maps).all(), f"{method} on {name}: non-finite map"
        e = result.extras
        if method == "integrated_gradients":
            gap = float(e["completeness_gap"][0])
            # within 2 % where the path integral converges at these steps; otherwise flagged, with why
            assert gap <= 0.02 or (not e["reliable"][0] and e["reliability_note"][0]), (name, gap)
            assert e["reliable"][0] == (gap <= COMPLETENESS_TOLERANCE)
            if name in SMOOTH:  # GELU and LayerNorm: the integrand is smooth and the quadrature converges
                assert gap <= 0.02, (name, gap)
            gaps[name] = gap
        if "conservation" in e:
            for ok, c, b in zip(e["reliable"], e["conservation"], e.get("bias_share", [0.0] * len(e["reliable"]))):
                # a map presented as reliable really accounts for the logit
                assert (abs(float(c) + float(b) - 1) <= 0.1) == bool(ok), (method, name, float(c), float(b))
        if not result.signed:
            assert float(maps.min()) >= 0, (method, name)
    # the gradient methods need nothing from the architecture: they run on every model; and each
    # family runs where it is defined, so a method cannot pass this test by refusing everything
    expected = {"saliency", "integrated_gradients", "smoothgrad", "occlusion", "gradcam", "gradcam_pp"}
    if name in RELU_NETS:
        expected |= {"guided_backprop", "deconvnet", "deeplift", "lrp_epsilon", "lrp_zplus_flat"}
    if name in ATTENTION_NETS:
        expected |= {"attention_rollout", "attention_gradient", "lrp_transformer"}
    if name in SMOOTH:
        expected |= {"lrp_transformer"}
    missing = {m: refused.get(m) for m in expected if m not in ran}
    assert not missing, (name, missing)
    if name not in ATTENTION_NETS:
        assert {"attention_rollout", "attention_gradient"} <= set(refused), name
    # the model is unchanged: same outputs, no hooks left behind
    with torch.no_grad():
        assert torch.equal(model(X), before)
    for m in model.modules():
        assert not (m._forward_hooks or m._forward_pre_hooks or m._backward_hooks), (name, type(m).__name__)


@pytest.mark.parametrize("name", ["timm_vit", "timm_swin", "timm_convnext", "densenet121", "mobilenet_v3_small"])
def test_gradient_methods_agree_with_captum(name: str) -> None:
    captum_attr = pytest.importorskip("captum.attr")
    model = _model(name)
    spec = _spec(name, model)
    ours = ATTRIBUTION_METHODS.get("saliency")(model, spec).attribute(X, TARGET)
    theirs = captum_attr.Saliency(model).attribute(X.clone().requires_grad_(True), target=int(TARGET), abs=True)
    torch.testing.assert_close(ours.maps, theirs.amax(1), rtol=1e-4, atol=1e-6)

    ig = ATTRIBUTION_METHODS.get("integrated_gradients")(model, spec, steps=32, baseline="zeros").attribute(X, TARGET)
    ref = captum_attr.IntegratedGradients(model).attribute(X, baselines=torch.zeros_like(X), target=int(TARGET),
                                                           n_steps=32, method="gausslegendre")
    torch.testing.assert_close(ig.maps, ref.sum(1), rtol=1e-3, atol=1e-5)
