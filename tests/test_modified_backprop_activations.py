"""Guided backprop, deconvnet and DeepLIFT find every non-linearity (modules and function
calls) and refuse, with a reason, networks where their rule is undefined; rules reach
functional ReLUs, match hand-derived formulas, and leave the model bit-identical."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from generator.capability import Unsupported
from generator.engine.activations import find_nonlinearities
from generator.methods.attribution import ATTRIBUTION_METHODS
from generator.models.spec import ModelSpec

RULED = ("guided_backprop", "deconvnet", "deeplift")
T = torch.tensor([1, 2])


def spec(size: int = 16, classes: int = 4) -> ModelSpec:
    return ModelSpec(id="t", source="test", input_size=(3, size, size), mean=(0.5,) * 3, std=(0.25,) * 3,
                     class_names=[f"c{i}" for i in range(classes)])


class TinyConvNeXt(nn.Module):
    """Patchify stem, two blocks (depthwise conv, LayerNorm, MLP with nn.GELU, residual), head."""

    def __init__(self, dim: int = 8, classes: int = 4):
        super().__init__()
        self.stem = nn.Conv2d(3, dim, 4, stride=4)
        self.blocks = nn.ModuleList(nn.ModuleDict({
            "dw": nn.Conv2d(dim, dim, 3, padding=1, groups=dim), "norm": nn.LayerNorm(dim),
            "fc1": nn.Linear(dim, 2 * dim), "act": nn.GELU(), "fc2": nn.Linear(2 * dim, dim)}) for _ in range(2))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, x):
        x = self.stem(x)
        for b in self.blocks:
            y = b["norm"](b["dw"](x).permute(0, 2, 3, 1))
            x = x + b["fc2"](b["act"](b["fc1"](y))).permute(0, 3, 1, 2)
        return self.head(self.norm(x.mean((2, 3))))


class TwoLayer(nn.Module):
    """y = W2 relu(W1 x + b1) + b2 on flattened pixels; ``functional`` applies the ReLU as
    ``F.relu(..., inplace=True)``, otherwise as an ``nn.ReLU`` module."""

    def __init__(self, functional: bool, pixels: int = 3 * 4 * 4, hidden: int = 12, classes: int = 4):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(pixels, hidden), nn.Linear(hidden, classes)
        self.functional = functional
        self.act = nn.ReLU()

    def forward(self, x):
        z = self.fc1(x.flatten(1))
        return self.fc2(F.relu(z, inplace=True) if self.functional else self.act(z))


class Gated(nn.Module):
    """A functional ReLU, a sigmoid gate (a product of two activations) and a Tensor-method relu."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.gate = nn.Conv2d(4, 4, 1)
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        h = F.relu(self.conv(x))
        h = h * torch.sigmoid(self.gate(h))
        return self.fc(h.relu().mean((2, 3)))


def relu_cnn(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(inplace=True),
                         nn.Conv2d(6, 6, 3, padding=1), nn.ReLU6(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                         nn.Linear(24, 4)).eval()


def snapshot(model: nn.Module, x: torch.Tensor):
    with torch.no_grad():
        out = model(x)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    flags = [(m.training, getattr(m, "inplace", None)) for m in model.modules()]
    grads = [p.requires_grad for p in model.parameters()]
    return out, state, flags, grads


def assert_untouched(model: nn.Module, x: torch.Tensor, snap) -> None:
    out, state, flags, grads = snap
    sd = model.state_dict()
    assert sd.keys() == state.keys() and all(torch.equal(sd[k], state[k]) for k in state)
    assert [(m.training, getattr(m, "inplace", None)) for m in model.modules()] == flags
    assert [p.requires_grad for p in model.parameters()] == grads
    if not isinstance(model, torch.jit.ScriptModule):
        assert all(not m._forward_hooks and not m._forward_pre_hooks and not m._backward_hooks
                   for m in model.modules())
    with torch.no_grad():
        assert torch.equal(model(x), out)


def test_finder_sees_modules_function_calls_and_products():
    found = find_nonlinearities(Gated().eval(), torch.randn(1, 3, 8, 8))
    kinds = found.kinds()
    assert kinds["relu"] == 2 and kinds["sigmoid"] == 1 and kinds["product"] == 1
    assert all(not c.in_leaf and c.module_type == "Gated" for c in found.calls)
    convnext = find_nonlinearities(TinyConvNeXt().eval(), torch.randn(1, 3, 16, 16))
    gelu = [c for c in convnext.calls if c.kind == "gelu"]
    assert [c.module for c in gelu] == ["blocks.0.act", "blocks.1.act"] and all(c.in_leaf for c in gelu)
    assert convnext.kinds()["normalization"] == 3 and "product" not in convnext.kinds()
    assert convnext.describe(["gelu"]) == "GELU (2 calls in 2 nn.GELU modules)"


def _convnext_models():
    yield TinyConvNeXt().eval(), 16
    timm = pytest.importorskip("timm")
    yield timm.create_model("test_convnext", pretrained=False).eval(), 32


@pytest.mark.parametrize("name", RULED)
def test_gelu_networks_are_refused_with_the_reason(name):
    for model, size in _convnext_models():
        x = torch.randn(2, 3, size, size)
        snap = snapshot(model, x)
        cls = ATTRIBUTION_METHODS.get(name)
        expected = "normalization" if name == "deeplift" else r"defined for ReLU networks.*GELU \(\d+ calls in \d+"
        with pytest.raises(Unsupported, match=expected):
            cls(model, spec(size))
        bound = cls(model)  # without a spec, the first batch is traced instead
        with pytest.raises(Unsupported, match=expected):
            bound.attribute(x, T)
        assert_untouched(model, x, snap)


@pytest.mark.parametrize("name", RULED)
def test_torchscript_is_refused_at_binding(name):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scripted = torch.jit.trace(relu_cnn(), torch.randn(1, 3, 16, 16))
    x = torch.randn(2, 3, 16, 16)
    snap = snapshot(scripted, x)
    with pytest.raises(Unsupported, match=r"the TorchScript model applies ReLU x1 and ReLU6 x1"):
        ATTRIBUTION_METHODS.get(name)(scripted, spec())
    with pytest.raises(Unsupported, match="TorchScript"):
        ATTRIBUTION_METHODS.get(name)(scripted)  # no spec needed: the graph is read, nothing run
    assert_untouched(scripted, x, snap)


def _hand_derived(model: TwoLayer, x: torch.Tensor, ref: torch.Tensor, target: torch.Tensor):
    """Guided backprop, deconvnet and DeepLIFT of y = W2 relu(W1 x + b1) + b2, from the formulas."""
    w1, b1, w2 = model.fc1.weight, model.fc1.bias, model.fc2.weight
    z, zr = x.flatten(1) @ w1.T + b1, ref.flatten(1) @ w1.T + b1
    up = w2[target]  # gradient of the target logit at the hidden layer, (B, hidden)
    guided = ((z > 0).float() * up.clamp(min=0)) @ w1
    deconv = up.clamp(min=0) @ w1
    slope = (z.relu() - zr.relu()) / (z - zr)
    deeplift = (x - ref).flatten(1) * ((slope * up) @ w1)
    return [v.view_as(x) for v in (guided, deconv, deeplift)]


def test_rules_reach_functional_relu_and_match_the_formulas():
    torch.manual_seed(0)
    functional = TwoLayer(functional=True).eval()
    modular = TwoLayer(functional=False).eval()
    modular.load_state_dict(functional.state_dict())
    x = torch.randn(3, 3, 4, 4)
    t = torch.tensor([0, 2, 3])
    ref = torch.zeros_like(x)
    snap = snapshot(functional, x)
    expected = _hand_derived(functional, x, ref, t)
    for name, want in zip(RULED, expected):
        params = {"baseline": "zeros"} if name == "deeplift" else {}
        a = ATTRIBUTION_METHODS.get(name)(functional, spec(4), **params).attribute(x, t)
        b = ATTRIBUTION_METHODS.get(name)(modular, spec(4), **params).attribute(x, t)
        torch.testing.assert_close(a.raw, want, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(a.raw, b.raw, rtol=1e-5, atol=1e-7)
        if name == "deeplift":
            assert float(a.extras["completeness_gap"].max()) < 1e-4
    saliency = ATTRIBUTION_METHODS.get("saliency")(functional).attribute(x, t).raw
    assert not torch.allclose(saliency, expected[0], atol=1e-4)  # the rule did something
    assert_untouched(functional, x, snap)


def test_densenet_functional_relu_is_ruled():
    """torchvision's DenseNet applies its last ReLU with F.relu; guided backprop reaches it
    (a two-block DenseNet: the same class and forward as densenet121, a fraction of the time)."""
    from torchvision.models import DenseNet

    from generator.engine.activations import ClampedGradient, activation_rules

    torch.manual_seed(0)
    model = DenseNet(growth_rate=8, block_config=(2, 2), num_init_features=8, bn_size=2, num_classes=10).eval()
    x = torch.randn(1, 3, 32, 32)
    snap = snapshot(model, x)
    found = find_nonlinearities(model, x)
    inline = [c for c in found.calls if c.kind == "relu" and not c.in_leaf]
    assert [c.module_type for c in inline] == ["DenseNet"]
    with activation_rules({"relu": ClampedGradient()}) as applied:
        model(x.clone().requires_grad_(True)).sum().backward()
    assert applied["relu"] == found.kinds()["relu"]
    r = ATTRIBUTION_METHODS.get("guided_backprop")(model, spec(32, 10)).attribute(x, 3)
    assert torch.isfinite(r.raw).all() and r.raw.abs().sum() > 0
    assert_untouched(model, x, snap)


def test_relu_cnn_still_runs_and_is_untouched():
    model = relu_cnn()
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    snap = snapshot(model, x)
    for name in RULED:
        r = ATTRIBUTION_METHODS.get(name)(model, spec()).attribute(x, T)
        assert torch.isfinite(r.maps).all() and r.maps.abs().sum() > 0
        if name == "deeplift":  # ReLU, ReLU6, no max-pooling: summation to delta is exact
            # (absolute: a relative gap is ill-conditioned where f(x) - f(reference) is near zero)
            assert float((r.raw.flatten(1).sum(1) - r.extras["delta"]).abs().max()) < 1e-5
    assert_untouched(model, x, snap)


def test_network_without_relu_is_refused():
    model = nn.Sequential(nn.Flatten(), nn.Linear(48, 4)).eval()
    with pytest.raises(Unsupported, match="applies none"):
        ATTRIBUTION_METHODS.get("guided_backprop")(model, spec(4))


class Folded(nn.Module):
    """Applies its ReLU with channels folded into the first dimension (as window or token
    reshapes do): DeepLIFT cannot pair input and reference there."""

    def __init__(self):
        super().__init__()
        self.conv, self.fc = nn.Conv2d(3, 4, 3, padding=1), nn.Linear(4, 4)

    def forward(self, x):
        h = self.conv(x)
        h = F.relu(h.reshape(-1, *h.shape[2:])).reshape(h.shape)
        return self.fc(h.mean((2, 3)))


def test_deeplift_refuses_activations_off_the_batch_dimension():
    model = Folded().eval()
    x = torch.randn(2, 3, 8, 8)
    snap = snapshot(model, x)
    with pytest.raises(Unsupported, match=r"ReLU to a tensor of shape \(16, 8, 8\).*batch of 4"):
        ATTRIBUTION_METHODS.get("deeplift")(model, spec(8)).attribute(x, T)
    assert_untouched(model, x, snap)


class _FunctionalReluCNN(nn.Module):
    """The same computation as :func:`_module_relu_cnn` with the ReLUs written as function calls."""

    def __init__(self, convs: nn.ModuleList) -> None:
        super().__init__()
        self.convs = convs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv in self.convs:
            x = F.relu(conv(x))
        return x


def _module_relu_cnn(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(4, 3, 3, padding=1), nn.ReLU()).eval()


def test_deconv_projection_rectifies_functional_relus_and_refuses_gelu():
    """Feature visualisation's deconvnet projection gets the rule at ReLU function calls too,
    matches the backward signal rectified by hand, and refuses a GELU network below the layer."""
    from generator.methods.featurevis.deconv import deconv_projection

    seq = _module_relu_cnn()
    convs = nn.ModuleList([seq[0], seq[2], seq[4]])
    functional = _FunctionalReluCNN(convs).eval()
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    pos = [(3, 4), (5, 1)]
    by_module = deconv_projection(seq, "5", x, [1, 2], pos)
    by_call = deconv_projection(functional, "convs.2", x, [1, 2], pos)  # read before its ReLU
    # by hand: the unit's one-hot signal passed down, ReLUs rectifying it (not masking it)
    expected = []
    for c, (py, px) in zip([1, 2], pos):
        r = torch.zeros(1, 3, 8, 8)
        r[0, c, py, px] = 1.0
        r = torch.nn.grad.conv2d_input((1, 4, 8, 8), seq[4].weight, r, padding=1).clamp(min=0)
        r = torch.nn.grad.conv2d_input((1, 4, 8, 8), seq[2].weight, r, padding=1).clamp(min=0)
        r = torch.nn.grad.conv2d_input((1, 3, 8, 8), seq[0].weight, r, padding=1)
        expected.append(r[0].permute(1, 2, 0).detach().numpy())
    np.testing.assert_allclose(by_call, np.stack(expected), rtol=1e-5, atol=1e-6)
    # the module network's unit is read after its last ReLU, so its own signal is rectified too
    assert by_module.shape == by_call.shape and np.abs(by_module).max() > 0

    gelu = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.GELU(), nn.Conv2d(4, 4, 3, padding=1), nn.ReLU()).eval()
    with pytest.raises(Unsupported, match="GELU"):
        deconv_projection(gelu, "3", x, [0, 1], pos)
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in gelu.modules())
