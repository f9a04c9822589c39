"""AttnLRP (Achtibat et al. 2024): each rule by hand on a toy and against a matrix-form
re-derivation; the ledger's closure (sum R + what biases and the softmax rule absorb = logit) on
tiny timm and torchvision ViTs, DeiT (distilled), a register-token ViT and ConvNeXt; forward values
and the model unchanged; reliability flags; refusals."""

import math

import pytest
import timm
import torch
import torch.nn.functional as F
import torchvision
from _attr_models import small_cnn
from torch import nn

from generator import catalogue
from generator.capability import Unsupported
from generator.engine.attnlrp import Ledger, attnlrp_rules
from generator.methods.attribution import ATTRIBUTION_METHODS
from generator.methods.attribution.lrp import TOLERANCE

METHOD = ATTRIBUTION_METHODS.get("lrp_transformer")


def relevance(fn, *inputs, seed=None, epsilon=0.0):
    """Relevance ``input * modified gradient`` of ``fn(*inputs)`` seeded with ``seed`` (default:
    all ones), and the ledger (batch = dim 0 of the first input)."""
    ledger = Ledger()
    ledger.start(inputs[0].shape[0])
    leaves = [t.clone().requires_grad_(True) for t in inputs]
    with torch.enable_grad():
        with attnlrp_rules(epsilon=epsilon, ledger=ledger):
            y = fn(*leaves)
        grads = torch.autograd.grad(y, leaves, torch.ones_like(y) if seed is None else seed)
    return [(t * g).detach() for t, g in zip(leaves, grads)], y.detach(), ledger


def part(ledger, name):
    return ledger.total(name, torch.device("cpu"))


# ----------------------------------------------------------------------------- (a) rules by hand


def test_layer_norm_identity_rule_by_hand():
    # x = [1,2,3,4]: mean 2.5, sigma = sqrt(1.25 + eps); seed on y_0 only. The rule holds sigma
    # constant: R(x_i) = x_i (delta_i0 - 1/4) / sigma = [0.75, -0.5, -0.75, -1] / sigma, summing to
    # y_0 = -1.5 / sigma; the bias (0.5 on y_0) absorbs 0.5.
    x = torch.tensor([[1.0, 2.0, 3.0, 4.0]], dtype=torch.float64)
    bias = torch.tensor([0.5, 0.0, 0.0, 0.0], dtype=torch.float64)
    seed = torch.tensor([[1.0, 0.0, 0.0, 0.0]], dtype=torch.float64)
    (r,), y, ledger = relevance(lambda t: F.layer_norm(t, (4,), None, bias, 1e-5), x, seed=seed)
    sigma = math.sqrt(1.25 + 1e-5)
    assert torch.allclose(r, torch.tensor([[0.75, -0.5, -0.75, -1.0]], dtype=torch.float64) / sigma)
    assert float(part(ledger, "bias")) == pytest.approx(0.5)
    assert float(r.sum()) + 0.5 == pytest.approx(float(y[0, 0]))


def test_layer_norm_rule_matches_its_matrix_form():
    # Zennit-style re-derivation: with sigma constant the map is y = C x + b with
    # C = diag(w) (I - 11^T/n) / sigma, so R(x) = x * (C^T g).
    g = torch.Generator().manual_seed(0)
    x, w, b, seed = (torch.randn(1, 6, generator=g, dtype=torch.float64) for _ in range(4))
    (r,), y, ledger = relevance(lambda t: F.layer_norm(t, (6,), w[0], b[0], 1e-5), x, seed=seed)
    sigma = torch.sqrt(x.var(unbiased=False) + 1e-5)
    c = torch.diag(w[0]) @ (torch.eye(6, dtype=torch.float64) - 1 / 6) / sigma
    assert torch.allclose(r, x * (seed @ c))
    assert float(part(ledger, "bias")) == pytest.approx(float((b * seed).sum()))


def test_gelu_identity_rule_by_hand():
    # R(x) = R(y) = gelu(x) with a unit seed; gelu(x) = x * Phi(x):
    # gelu(-1) = -0.158655, gelu(0.5) = 0.345731, gelu(2) = 1.954500; x = 0 passes 0.
    x = torch.tensor([[-1.0, 0.5, 2.0, 0.0]], dtype=torch.float64)
    (r,), y, ledger = relevance(F.gelu, x)
    assert torch.allclose(r, torch.tensor([[-0.158655, 0.345731, 1.954500, 0.0]], dtype=torch.float64), atol=1e-6)
    assert abs(float(part(ledger, "other"))) < 1e-12


def test_softmax_rule_by_hand():
    # x = [1, 1 + ln 3]: s = [1/4, 3/4]; seed on s_0: R(s) = [1/4, 0]. Proposition 3.1:
    # R(x_i) = x_i (R(s_i) - s_i sum_j R(s_j)) = [1 * (1/4 - 1/16), (1 + ln 3)(0 - 3/16)].
    # The Taylor bias term g_0 s_0 (1 - x_0 + s.x) = 1/4 + 3 ln(3)/16 is what the rule absorbs.
    ln3 = math.log(3.0)
    x = torch.tensor([[1.0, 1.0 + ln3]], dtype=torch.float64)
    (r,), s, ledger = relevance(lambda t: t.softmax(dim=-1), x, seed=torch.tensor([[1.0, 0.0]], dtype=torch.float64))
    assert torch.allclose(s, torch.tensor([[0.25, 0.75]], dtype=torch.float64))
    assert torch.allclose(r, torch.tensor([[3 / 16, -(1 + ln3) * 3 / 16]], dtype=torch.float64))
    assert float(part(ledger, "softmax")) == pytest.approx(0.25 + 3 * ln3 / 16)
    assert float(r.sum()) + float(part(ledger, "softmax")) == pytest.approx(0.25)


def test_uniform_rule_on_a_2x2_product_by_hand():
    # (A B)_00 = 1*5 + 2*7 = 19; each factor gets half of each term:
    # R(A) = [[2.5, 7], [0, 0]], R(B) = [[2.5, 0], [7, 0]]: 9.5 + 9.5 = 19.
    a = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]], dtype=torch.float64)
    b = torch.tensor([[[5.0, 6.0], [7.0, 8.0]]], dtype=torch.float64)
    seed = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]], dtype=torch.float64)
    (ra, rb), y, _ = relevance(lambda p, q: p @ q, a, b, seed=seed)
    assert torch.equal(ra, torch.tensor([[[2.5, 7.0], [0.0, 0.0]]], dtype=torch.float64))
    assert torch.equal(rb, torch.tensor([[[2.5, 0.0], [7.0, 0.0]]], dtype=torch.float64))
    # an elementwise product of two activations: half each
    (ra, rb), _, _ = relevance(lambda p, q: p * q, a, b)
    assert torch.equal(ra, a * b / 2) and torch.equal(rb, a * b / 2)


def test_linear_epsilon_rule_by_hand():
    # z = 3*1 + 1*2 + 1 = 6. eps = 0: R(x) = [3, 2], the bias absorbs 1. eps = 1: everything is
    # scaled by z / (z + eps) = 6/7: R(x) = [18/7, 12/7], bias 6/7, the stabiliser z - 6*6/7 = 6/7.
    x = torch.tensor([[1.0, 2.0]], dtype=torch.float64)
    w, b = torch.tensor([[3.0, 1.0]], dtype=torch.float64), torch.tensor([1.0], dtype=torch.float64)
    (r,), _, ledger = relevance(lambda t: F.linear(t, w, b), x)
    assert torch.allclose(r, torch.tensor([[3.0, 2.0]], dtype=torch.float64))
    assert float(part(ledger, "bias")) == pytest.approx(1.0)
    (r,), _, ledger = relevance(lambda t: F.linear(t, w, b), x, epsilon=1.0)
    assert torch.allclose(r, torch.tensor([[18 / 7, 12 / 7]], dtype=torch.float64))
    assert float(part(ledger, "bias")) == pytest.approx(6 / 7)
    assert float(part(ledger, "stabiliser")) == pytest.approx(6 / 7)


@pytest.mark.parametrize("causal", [False, True])
def test_fused_attention_equals_its_decomposition(causal):
    # F.scaled_dot_product_attention gets the rules of softmax(q k^T * scale + mask) v written out.
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(2, 2, 5, 4, generator=g, dtype=torch.float64) for _ in range(3))
    mask = torch.zeros(5, 5, dtype=torch.float64).masked_fill(~torch.ones(5, 5, dtype=torch.bool).tril(), -math.inf)

    def explicit(a, b, c):
        scores = (a * 0.5) @ b.transpose(-2, -1)
        return (scores + mask if causal else scores).softmax(dim=-1) @ c

    fused, y1, l1 = relevance(lambda a, b, c: F.scaled_dot_product_attention(a, b, c, is_causal=causal), q, k, v)
    expl, y2, l2 = relevance(explicit, q, k, v)
    assert torch.allclose(y1, y2)
    for r1, r2 in zip(fused, expl):
        assert torch.allclose(r1, r2)
    assert torch.allclose(part(l1, "softmax"), part(l2, "softmax"))
    total = sum(r.flatten(1).sum(1) for r in fused) + part(l1, "softmax")
    assert torch.allclose(total, y1.flatten(1).sum(1))  # closure: nothing lost but the declared part


# ----------------------------------------------------------------------------- models


def timm_vit(**kw):
    torch.manual_seed(0)
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8, depth=2,
                             embed_dim=32, num_heads=2, num_classes=5, **kw).eval()


def torchvision_vit():
    torch.manual_seed(0)
    m = torchvision.models.VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32,
                                             mlp_dim=64, num_classes=5).eval()
    nn.init.normal_(m.heads.head.weight, std=0.5)  # zero-initialised: every logit would be 0
    return m


def deit_distilled():
    torch.manual_seed(0)
    return timm.create_model("deit_tiny_distilled_patch16_224", pretrained=False, img_size=32, patch_size=8, depth=2,
                             embed_dim=32, num_heads=2, num_classes=5).eval()


def convnext():
    torch.manual_seed(0)
    # layer scale 1 (not 1e-6): the blocks' LayerNorm and GELU must matter to the logit
    return timm.create_model("convnext_atto", pretrained=False, dims=(8, 16, 16, 32), depths=(1, 1, 1, 1),
                             ls_init_value=1.0, num_classes=5).eval()


def zero_constants(model):
    """Every bias (LayerNorm's too), position embedding and constant token set to 0."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or any(k in name for k in ("pos_emb", "cls_token", "class_token", "reg_token",
                                                                "dist_token")):
                p.zero_()
    return model


X = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(2))
MODELS = {"timm_vit": timm_vit, "torchvision_vit": torchvision_vit, "deit_distilled": deit_distilled,
          "vit_reg4": lambda: timm_vit(reg_tokens=4), "convnext": convnext}


# ----------------------------------------------------------------------------- (b) conservation


@pytest.mark.parametrize("build", ["timm_vit", "torchvision_vit"])
def test_vits_without_biases_conserve_up_to_the_softmax_term(build):
    result = METHOD(zero_constants(MODELS[build]())).attribute(X, 1)
    e = result.extras
    # no bias left but the softmax rule's Taylor bias term
    assert torch.allclose(e["bias_share"], e["softmax_share"], atol=1e-4)
    # The paper's softmax rule absorbs that term by design; what reaches the pixels plus that
    # term is the logit (float32 rounding only): no operation leaked relevance.
    assert torch.allclose(e["conservation"] + e["softmax_share"], torch.ones(3), atol=1e-3)
    assert torch.all((e["conservation"] + e["softmax_share"] - 1).abs() <= TOLERANCE)
    assert all(e["reliable"])
    # computed independently: the map's sum is the relevance at the input
    assert torch.allclose(result.maps.flatten(1).sum(1), e["relevance_sum"], rtol=1e-4, atol=1e-6)


def test_convnext_without_biases_conserves_exactly():
    # LayerNorm + GELU + convolutions, no softmax: every rule conserves, nothing may be absorbed.
    e = METHOD(zero_constants(convnext())).attribute(X, 2).extras
    assert torch.allclose(e["conservation"], torch.ones(3), atol=1e-3), e["conservation"]


@pytest.mark.parametrize("build", ["timm_vit", "torchvision_vit", "deit_distilled", "vit_reg4", "convnext"])
def test_closure_with_biases_and_finite_maps(build):
    # (f) DeiT distilled and a register-token ViT included: finite maps, every share declared.
    result = METHOD(MODELS[build]()).attribute(X, [0, 3, 4])
    e = result.extras
    assert torch.isfinite(result.maps).all() and result.maps.shape == (3, 32, 32)
    closure = e["conservation"] + e["bias_share"] + e["stabiliser_share"]
    assert torch.allclose(closure, torch.ones(3), atol=1e-3), closure
    assert set(catalogue.get("lrp_transformer").columns) <= set(e)


# ----------------------------------------------------------------------------- (c) unchanged


def _snapshot(model):
    return ({k: v.clone() for k, v in model.state_dict().items()},
            [(n, p.requires_grad) for n, p in model.named_parameters()],
            [(n, m.training) for n, m in model.named_modules()])


def _hooks(model):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in model.modules())


@pytest.mark.parametrize("build", ["timm_vit", "torchvision_vit"])
def test_forward_values_and_model_unchanged(build):
    model = MODELS[build]()
    with torch.no_grad():
        before = model(X)
    state, flags, modes = _snapshot(model)
    ledger = Ledger()
    ledger.start(3)
    with torch.enable_grad(), attnlrp_rules(model, ledger=ledger):
        ruled = model(X.clone().requires_grad_(True))
    assert torch.allclose(ruled, before, rtol=1e-4, atol=1e-6)
    METHOD(model).attribute(X, 0)
    s2, f2, m2 = _snapshot(model)
    assert all(torch.equal(state[k], s2[k]) for k in state) and flags == f2 and modes == m2
    assert _hooks(model) == 0
    with torch.no_grad():
        assert torch.equal(model(X), before)


def test_everything_restored_when_the_forward_raises():
    model = timm_vit()
    model.train()

    def boom(*_args):
        raise RuntimeError("boom")

    handle = model.blocks[1].register_forward_pre_hook(boom)
    with pytest.raises(RuntimeError, match="boom"):
        METHOD(model).attribute(X, 0)
    handle.remove()
    assert model.training and all(p.requires_grad for p in model.parameters())
    assert _hooks(model) == 0
    assert torch._C._len_torch_function_stack() == 0


# ----------------------------------------------------------------------------- (d) reliability


class Leaky(nn.Module):
    """A transformer-like toy with a computation outside the rules: ``where`` with a constant
    branch silently drops the relevance of the positions it replaces."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.proj = nn.Linear(3, 8)
        self.norm = nn.LayerNorm(8)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        h = self.norm(self.proj(x.flatten(2).transpose(1, 2)))
        h = torch.where(h > 0, h, torch.full_like(h, 3.0))
        return self.head(h.mean(1))


def test_reliable_flag_follows_the_documented_threshold():
    e = METHOD(timm_vit()).attribute(X, [0, 1, 2]).extras
    for i in range(3):
        # the contract of every LRP method (lrp.py): |conservation + bias_share - 1| <= 0.1
        declared = float(e["conservation"][i] + e["bias_share"][i])
        assert e["reliable"][i] == (abs(declared - 1) <= TOLERANCE)
        assert (e["reliability_note"][i] == "") == e["reliable"][i]
    x = torch.randn(2, 3, 2, 2, generator=torch.Generator().manual_seed(3))
    e = METHOD(Leaky()).attribute(x, 0).extras
    assert not any(e["reliable"])
    assert all("outside the rules" in note for note in e["reliability_note"])


# ----------------------------------------------------------------------------- (e) refusals


def test_cnn_refused_with_pointer_to_cnn_lrp():
    with pytest.raises(Unsupported, match="LRP-epsilon"):
        METHOD(small_cnn()).attribute(X, 0)


def test_uncovered_operation_listed():
    class Exp(Leaky):
        def forward(self, x):
            return self.head(self.norm(self.proj(x.flatten(2).transpose(1, 2))).exp().mean(1))

    with pytest.raises(Unsupported, match=r"exp in norm|Tensor\.exp"):
        METHOD(Exp()).attribute(torch.randn(1, 3, 2, 2), 0)


def test_torchscript_refused():
    with pytest.raises(Unsupported, match="TorchScript"):
        METHOD(torch.jit.script(nn.Sequential(nn.Linear(2, 2))))
