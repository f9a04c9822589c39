"""LRP on the models a user brings: torchvision DenseNet-121, MobileNetV3, EfficientNet-B0,
ResNet-18 and VGG-11 (random weights, BatchNorm calibrated on random images, 64x64 inputs).

Every composite either gives finite maps whose relevance is accounted for (conserved within
10 % where the rule claims it, with biases zeroed; with biases, the per-image ``reliable`` flag
says whether the claim holds) or is refused with ``Unsupported`` and a reason. The model is
bit-identical after every call. A toy network checks the rules for functional calls against
LRP written out by hand in matrix form.
"""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from generator.capability import Unsupported
from generator.engine.functional import ACTIVATION, LINEAR, trace_functional_calls
from generator.methods.attribution import ATTRIBUTION_METHODS
from generator.models.spec import ModelSpec

COMPOSITES = ["lrp_epsilon", "lrp_alpha_beta", "lrp_zplus_flat"]
MODELS = ["resnet18", "vgg11", "densenet121", "mobilenet_v3_small", "efficientnet_b0"]
SIZE = 64
TARGETS = torch.tensor([3, 7])
_BN = nn.modules.batchnorm._BatchNorm


def _calibrated(name: str) -> nn.Module:
    """A torchvision model with random weights whose BatchNorm statistics are the exact mean
    and variance of its activations on random images (momentum None: a cumulative average), so
    activations neither vanish nor explode as they do with the initial running statistics."""
    import torchvision

    torch.manual_seed(0)
    model = getattr(torchvision.models, name)(weights=None)
    norms = [m for m in model.modules() if isinstance(m, _BN)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    with torch.no_grad():
        for _ in range(2):
            model(torch.randn(8, 3, SIZE, SIZE))
    for m in norms:
        m.momentum = 0.1
    return model.eval()


def _zero_biases(model: nn.Module) -> nn.Module:
    """Every bias zero, BatchNorm shifts and means included: then no rule absorbs relevance."""
    model = copy.deepcopy(model)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(getattr(m, "bias", None), torch.Tensor):
                m.bias.zero_()
            if isinstance(m, _BN):
                m.running_mean.zero_()
    return model


_CACHE: dict = {}


def _model(name: str, zero_bias: bool) -> nn.Module:
    if (name, zero_bias) not in _CACHE:
        base = _CACHE.setdefault((name, False), _calibrated(name))
        if zero_bias:
            _CACHE[(name, True)] = _zero_biases(base)
    return _CACHE[(name, zero_bias)]


def _input(seed: int = 1) -> torch.Tensor:
    return torch.randn(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


def _snapshot(model: nn.Module):
    return {
        "state": {k: v.clone() for k, v in model.state_dict().items()},
        "params": [(id(p), p.requires_grad) for p in model.parameters()],
        "modules": [(n, type(m), m.training, getattr(m, "inplace", None)) for n, m in model.named_modules()],
    }


def _assert_identical(model: nn.Module, snap, x: torch.Tensor, before: torch.Tensor) -> None:
    """Parameters, buffers, flags, module tree and hooks as before, and the same outputs."""
    state = model.state_dict()
    assert state.keys() == snap["state"].keys()
    assert all(torch.equal(state[k], v) for k, v in snap["state"].items())
    assert [(id(p), p.requires_grad) for p in model.parameters()] == snap["params"]
    assert [(n, type(m), m.training, getattr(m, "inplace", None)) for n, m in model.named_modules()] == snap["modules"]
    for m in model.modules():
        assert not (m._forward_hooks or m._forward_pre_hooks or m._backward_hooks or m._forward_hooks_always_called
                    or m._forward_hooks_with_kwargs or m._forward_pre_hooks_with_kwargs), type(m).__name__
        assert "forward" not in m.__dict__
    with torch.no_grad():
        assert torch.equal(model(x), before)


def _unexplained(extras) -> torch.Tensor:
    """The relevance lost or created outside any rule's own account, as a share of the
    relevance that flows (the logit, or what biases take when that is larger: a logit near 0
    would make any rounding look large)."""
    shares = extras["bias_share"] + extras["stabiliser_share"] + extras["one_sign_share"]
    scale = torch.maximum(torch.ones_like(shares), shares.abs())
    return (1 - extras["conservation"] - shares) / scale


def _run(name: str, composite: str, zero_bias: bool):
    model = _model(name, zero_bias)
    x = _input()
    with torch.no_grad():
        before = model(x)
    snap = _snapshot(model)
    r = ATTRIBUTION_METHODS.get(composite)(model).attribute(x, TARGETS)
    _assert_identical(model, snap, x, before)
    assert torch.isfinite(r.maps).all() and torch.isfinite(r.raw).all()
    # the forward the rules ran computes the model's function (BatchNorm folding only rounds differently)
    torch.testing.assert_close(r.extras["target_logit"], before.gather(1, TARGETS.view(-1, 1)).squeeze(1),
                               rtol=1e-3, atol=1e-3)
    e = r.extras
    assert len(e["reliable"]) == len(e["reliability_note"]) == 2
    for ok, note, c, b in zip(e["reliable"], e["reliability_note"], e["conservation"], e["bias_share"]):
        assert ok == bool(abs(float(c + b) - 1) <= 0.1)
        assert bool(note) != ok, note
    return r


@pytest.mark.parametrize("composite", COMPOSITES)
@pytest.mark.parametrize("name", MODELS)
def test_conserved_with_zero_biases(name, composite):
    """With every bias zero, no relevance leaves through a path no rule accounts for; the
    epsilon composite conserves within 10 % everywhere, and alpha-beta/z+ do wherever their
    convolution units have contributions of both signs (the claim of alpha - beta = 1)."""
    e = _run(name, composite, zero_bias=True).extras
    assert (e["bias_share"].abs() < 1e-3).all(), e["bias_share"]
    assert (_unexplained(e).abs() < 0.01).all(), (_unexplained(e), e["reliability_note"])
    claimed = (e["one_sign_share"] + e["stabiliser_share"]).abs() < 0.1  # where the rules claim conservation
    if composite == "lrp_epsilon" or name in ("densenet121", "resnet18", "vgg11"):
        assert claimed.all()
    for i, is_claimed in enumerate(claimed):
        if is_claimed:
            assert abs(float(e["conservation"][i]) - 1) <= 0.1, e["conservation"]
        else:  # depthwise convolutions: units with one sign only; flagged and explained
            assert not e["reliable"][i] and "one sign" in e["reliability_note"][i]


@pytest.mark.parametrize("name", MODELS)
def test_biased_models_flag_what_they_cannot_claim(name):
    """With biases, every composite still gives finite maps; ``reliable`` is the claim
    ``sum R + bias share = 1 +- 10 %`` and the note says why when it fails."""
    for composite in COMPOSITES:
        e = _run(name, composite, zero_bias=False).extras
        assert (_unexplained(e).abs() < 0.01).all(), (composite, _unexplained(e))


def test_densenet_conservation_before_and_after():
    """DenseNet-121 ends in F.relu, F.adaptive_avg_pool2d and torch.flatten in its forward: the
    functional ReLU and pooling now get rules (they lost 8-13 % of the relevance before)."""
    model = _model("densenet121", zero_bias=True)
    trace = trace_functional_calls(model, _input()[:1])
    root = [(c.op.rsplit(".", 1)[-1], c.kind) for c in trace.calls if c.where == ""]
    assert ("relu", ACTIVATION) in root and ("adaptive_avg_pool2d", LINEAR) in root
    assert not trace.unsupported and not trace.custom_functions
    r = ATTRIBUTION_METHODS.get("lrp_epsilon")(model).attribute(_input(), TARGETS)
    assert ((r.extras["conservation"] - 1).abs() < 0.01).all(), r.extras["conservation"]


# ------------------------------------------------------------------------------ toy networks

class Functional(nn.Module):
    """Functional calls after hooked modules: an in-place ReLU, an in-place residual sum, a
    gate broadcast over its signal, a mean. No biases, so LRP-epsilon conserves relevance."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(3)
        self.l1 = nn.Linear(4, 6, bias=False)
        self.relu = nn.ReLU(inplace=True)
        self.l2 = nn.Linear(6, 6, bias=False)
        self.l3 = nn.Linear(6, 3, bias=False)

    def forward(self, x):
        h = self.relu(self.l1(x.flatten(1)))
        r = F.relu(self.l2(h), inplace=True)
        r += h  # in place on a hooked module's output
        g = torch.sigmoid(r.mean(1, keepdim=True))
        return self.l3(r * g)


def _lrp_by_hand(model: Functional, x: torch.Tensor, target: int, eps: float = 1e-9) -> torch.Tensor:
    """LRP-epsilon written out with the weight matrices (Bach et al. 2015, eq. 56):
    ``R_i = sum_j x_i w_ij R_j / z_j`` per linear layer; the residual sum splits in proportion to
    the summands; activations pass relevance; the gate's relevance all goes to the signal."""
    W1, W2, W3 = model.l1.weight.double(), model.l2.weight.double(), model.l3.weight.double()
    x = x.flatten(1).double()
    h = torch.relu(x @ W1.T)
    a2 = h @ W2.T
    r = torch.relu(a2) + h
    g = torch.sigmoid(r.mean(1, keepdim=True))
    s_in = r * g
    z3 = s_in @ W3.T
    R3 = torch.zeros_like(z3)
    R3[:, target] = z3[:, target]
    R_sig = s_in * ((R3 / (z3 + eps)) @ W3)  # relevance of r * g: all of it to the signal r
    R_r = R_sig
    R_relu2, R_h_skip = torch.relu(a2) / (r + eps) * R_r, h / (r + eps) * R_r
    R_h = h * ((R_relu2 / (a2 + eps)) @ W2) + R_h_skip  # the functional ReLU passes relevance
    z1 = x @ W1.T
    return x * ((R_h / (z1 + eps)) @ W1)


def test_functional_rules_match_lrp_by_hand():
    model = Functional().eval()
    x = torch.randn(3, 1, 2, 2, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        before = model(x)
    snap = _snapshot(model)
    r = ATTRIBUTION_METHODS.get("lrp_epsilon")(model, None, epsilon=1e-9).attribute(x, 1)
    _assert_identical(model, snap, x, before)
    expected = _lrp_by_hand(model, x, 1).float().view_as(r.raw)
    torch.testing.assert_close(r.raw, expected, rtol=1e-4, atol=1e-5)
    assert ((r.extras["conservation"] - 1).abs() < 1e-4).all() and all(r.extras["reliable"])


class WithLayerNorm(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.norm = nn.LayerNorm(4)
        self.fc = nn.Linear(4, 5)

    def forward(self, x):
        y = self.conv(x).mean((2, 3))
        return self.fc(torch.softmax(self.norm(y), 1))


class SameShapeProduct(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4, 5)

    def forward(self, x):
        y = self.conv(x)
        return self.fc((y * torch.tanh(y)).mean((2, 3)))  # a self-gated activation written out


def _spec(channels=3, size=16) -> ModelSpec:
    return ModelSpec(id="toy", source="test", input_size=(channels, size, size), mean=(0.5,) * channels,
                     std=(0.5,) * channels, class_names=[str(i) for i in range(5)])


@pytest.mark.parametrize("cls,what", [(WithLayerNorm, r"layer_norm in norm \(LayerNorm\)"),
                                      (SameShapeProduct, "product of two activations of the same shape")])
def test_unsupported_is_refused_when_bound(cls, what):
    model = cls().eval()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        before = model(x)
    snap = _snapshot(model)
    for composite in COMPOSITES:
        with pytest.raises(Unsupported, match=rf"^{composite} is not defined for {cls.__name__}: no LRP rule for .*"):
            ATTRIBUTION_METHODS.get(composite)(model, _spec())  # refused when bound (the spec gives a size)
        _assert_identical(model, snap, x, before)
    with pytest.raises(Unsupported, match=what):  # without a spec: at the first call, before any backward
        ATTRIBUTION_METHODS.get("lrp_epsilon")(model).attribute(x, 0)
    _assert_identical(model, snap, x, before)


def test_supported_model_binds_and_torchscript_is_refused():
    model = _model("resnet18", zero_bias=False)
    spec = ModelSpec(id="r18", source="test", input_size=(3, SIZE, SIZE), mean=(0.5,) * 3, std=(0.5,) * 3,
                     class_names=[str(i) for i in range(1000)])
    ATTRIBUTION_METHODS.get("lrp_zplus_flat")(model, spec)  # the check passes on a supported model
    scripted = torch.jit.script(WithLayerNorm().eval())
    with pytest.raises(Unsupported, match="^lrp_epsilon is not defined for a TorchScript module: "):
        ATTRIBUTION_METHODS.get("lrp_epsilon")(scripted)


def test_nan_map_is_never_returned():
    """A zero image with epsilon 0: every denominator is 0, relevance 0/0. The method raises
    instead of returning a NaN map, and leaves the model as it was."""
    model = Functional().eval()
    x = torch.zeros(2, 1, 2, 2)
    with torch.no_grad():
        before = model(x)
    snap = _snapshot(model)
    with pytest.raises(FloatingPointError, match=r"lrp_epsilon: the relevance of image\(s\) \[0, 1\] is not finite"):
        ATTRIBUTION_METHODS.get("lrp_epsilon")(model, None, epsilon=0.0).attribute(x, 0)
    _assert_identical(model, snap, x, before)


def test_reliability_reaches_the_record():
    """The per-image flags and notes survive the outcome stage's selection of extras."""
    from generator.pipeline.stages.outcome import _scalars

    model = _model("mobilenet_v3_small", zero_bias=True)
    r = ATTRIBUTION_METHODS.get("lrp_alpha_beta")(model).attribute(_input(), TARGETS)
    kept = _scalars(r.extras)
    for key in ("conservation", "bias_share", "one_sign_share", "stabiliser_share", "reliable", "reliability_note"):
        assert len(kept[key]) == 2, key
    assert kept["reliable"] == r.extras["reliable"] and kept["reliability_note"] == r.extras["reliability_note"]
