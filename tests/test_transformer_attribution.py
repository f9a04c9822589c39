"""Attention rollout and gradient-weighted attention (Chefer et al. 2021) on vision transformers.

The references re-derive each block's attention probabilities from its qkv weights with plain
matrix code (nothing from generator.engine.attention), then compose them by explicit loops in
float64; the methods must agree with them on timm's and torchvision's ViTs.
"""

from __future__ import annotations

import math

import pytest
import timm
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from generator.capability import Unsupported
from generator.engine.attention import capture_attention
from generator.methods.attribution import ATTRIBUTION_METHODS

ROLLOUT, GRADIENT = "attention_rollout", "attention_gradient"


def tiny_timm_vit(**kw) -> nn.Module:
    torch.manual_seed(0)
    model = timm.create_model(kw.pop("arch", "vit_tiny_patch16_224"), pretrained=False, img_size=32, patch_size=8,
                              depth=2, embed_dim=32, num_heads=2, num_classes=5, **kw)
    with torch.no_grad():  # sharper attention than at initialisation, so the maps are far from uniform
        for blk in model.blocks:
            blk.attn.qkv.weight.mul_(4)
    return model.eval()


def tiny_tv_vit() -> nn.Module:
    torch.manual_seed(0)
    model = torchvision.models.VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2,
                                                 hidden_dim=32, mlp_dim=64, num_classes=5)
    # torchvision initialises the head to zero: every gradient would be zero
    nn.init.normal_(model.heads.head.weight, std=0.5)
    with torch.no_grad():
        for blk in model.encoder.layers:
            blk.self_attention.in_proj_weight.mul_(4)
    return model.eval()


def images(n: int = 2) -> torch.Tensor:
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def _attend(x: torch.Tensor, w_qkv: torch.Tensor, b_qkv: torch.Tensor, heads: int):
    """Plain multi-head attention probabilities and the per-head outputs, (B,h,N,N) and (B,N,D)."""
    B, N, D = x.shape
    hd = D // heads
    qkv = x @ w_qkv.T + b_qkv
    q, k, v = (qkv[..., i * D:(i + 1) * D].reshape(B, N, heads, hd).transpose(1, 2) for i in range(3))
    scores = q @ k.transpose(-1, -2) / math.sqrt(hd)
    A = torch.exp(scores - scores.amax(-1, keepdim=True))
    A = A / A.sum(-1, keepdim=True)
    A.retain_grad()
    out = (A @ v).transpose(1, 2).reshape(B, N, D)
    return A, out


def timm_reference(model, x, target):
    """timm ViT forward written out: (logits, attention per block with .grad of the target score)."""
    x = x.clone().requires_grad_(True)  # so every attention matrix is a graph node
    pe = model.patch_embed.proj
    t = F.conv2d(x, pe.weight, pe.bias, stride=pe.stride).flatten(2).transpose(1, 2)
    prefix = [model.cls_token.expand(len(x), -1, -1)]
    if getattr(model, "reg_token", None) is not None:
        prefix.append(model.reg_token.expand(len(x), -1, -1))
    t = torch.cat(prefix + [t + model.pos_embed], 1) if model.no_embed_class else torch.cat(prefix + [t], 1)
    if not model.no_embed_class:
        t = t + model.pos_embed
    attn = []
    for blk in model.blocks:
        h = F.layer_norm(t, (t.shape[-1],), blk.norm1.weight, blk.norm1.bias, blk.norm1.eps)
        A, o = _attend(h, blk.attn.qkv.weight, blk.attn.qkv.bias, blk.attn.num_heads)
        attn.append(A)
        t = t + blk.attn.proj(o)
        t = t + blk.mlp(blk.norm2(t))
    t = model.norm(t)
    logits = model.head(t[:, 0])
    logits.gather(1, target.view(-1, 1)).sum().backward()
    return logits, attn


def tv_reference(model, x, target):
    """torchvision ViT forward written out, nn.MultiheadAttention by hand."""
    x = x.clone().requires_grad_(True)
    cp = model.conv_proj
    t = F.conv2d(x, cp.weight, cp.bias, stride=cp.stride).flatten(2).transpose(1, 2)
    t = torch.cat([model.class_token.expand(len(x), -1, -1), t], 1) + model.encoder.pos_embedding
    attn = []
    for blk in model.encoder.layers:
        h = blk.ln_1(t)
        mha = blk.self_attention
        A, o = _attend(h, mha.in_proj_weight, mha.in_proj_bias, mha.num_heads)
        attn.append(A)
        t = t + F.linear(o, mha.out_proj.weight, mha.out_proj.bias)
        t = t + blk.mlp(blk.ln_2(t))
    t = model.encoder.ln(t)
    logits = model.heads(t[:, 0])
    logits.gather(1, target.view(-1, 1)).sum().backward()
    return logits, attn


def reference_rollout(attn, fusion="mean", start=0):
    B, _, N, _ = attn[0].shape
    maps = []
    for b in range(B):
        R = torch.eye(N, dtype=torch.float64)
        for A in attn[start:]:
            a = A[b].detach().double()
            fused = {"mean": a.mean(0), "max": a.amax(0), "min": a.amin(0)}[fusion]
            step = torch.zeros(N, N, dtype=torch.float64)
            for i in range(N):
                row = fused[i] + torch.eye(N, dtype=torch.float64)[i]
                step[i] = row / row.sum()
            if fusion == "mean":  # the paper's form: 0.5 A + 0.5 I
                assert torch.allclose(step, 0.5 * fused + 0.5 * torch.eye(N, dtype=torch.float64))
            R = step @ R
        maps.append(R[0, 1:])
    return torch.stack(maps)


def reference_chefer(attn, start=0):
    B, _, N, _ = attn[0].shape
    maps = []
    for b in range(B):
        R = torch.eye(N, dtype=torch.float64)
        for A in attn[start:]:
            a, g = A[b].detach().double(), A.grad[b].double()
            heads = a.shape[0]
            Abar = sum((g[h] * a[h]).clamp(min=0) for h in range(heads)) / heads
            R = R + Abar @ R
        maps.append(R[0, 1:])
    return torch.stack(maps)


def run(name, model, x, target, **params):
    return ATTRIBUTION_METHODS.get(name)(model, **params).attribute(x, target)


# ----------------------------------------------------------------------------- capture


DEIT = "deit_tiny_distilled_patch16_224"


@pytest.mark.parametrize("build", [tiny_timm_vit, tiny_tv_vit, lambda: tiny_timm_vit(arch=DEIT)])
def test_capture_reproduces_outputs_and_the_attention_matrices(build):
    model = build()
    x = images()
    with torch.no_grad():
        plain = model(x)
    with torch.enable_grad(), capture_attention() as rec:
        captured = model(x)
    assert (captured - plain).abs().max() < 1e-5
    assert len(rec.attentions) == 2 and not rec.uncaptured
    sums = torch.stack([a.probs.sum(-1) for a in rec.attentions])
    assert torch.allclose(sums, torch.ones_like(sums), atol=1e-5)


def test_captured_matrices_equal_the_hand_written_ones():
    model, x = tiny_timm_vit(), images()
    _, ref = timm_reference(model, x, torch.tensor([0, 1]))
    with capture_attention() as rec:
        model(x)
    for a, r in zip(rec.attentions, ref):
        assert torch.allclose(a.probs, r, atol=1e-6)


def test_explicit_softmax_path_and_multihead_options_match():
    # timm's non-fused path (explicit softmax) and nn.MultiheadAttention with weights and a mask
    model, x = tiny_timm_vit(), images()
    with torch.no_grad():
        plain = model(x)
    for blk in model.blocks:
        blk.attn.fused_attn = False
    with capture_attention() as rec:
        out = model(x)
    assert [a.source for a in rec.attentions] == ["softmax"] * 2 and (out - plain).abs().max() < 1e-5
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(8, 2).eval()
    q = torch.randn(5, 3, 8)
    mask = torch.randn(5, 5)
    for kw in ({"need_weights": True}, {"need_weights": True, "average_attn_weights": False, "attn_mask": mask},
               {"need_weights": False, "attn_mask": mask > 0}):
        ref = mha(q, q, q, **kw)
        with capture_attention() as rec:
            got = mha(q, q, q, **kw)
        assert torch.allclose(got[0], ref[0], atol=1e-6), kw
        assert (got[1] is None) == (ref[1] is None) and (ref[1] is None or torch.allclose(got[1], ref[1], atol=1e-6))
        assert len(rec.attentions) == 1
    q, k, v = torch.randn(3, 2, 2, 6, 4).unbind(0)
    for kw in ({"attn_mask": torch.randn(6, 6)}, {"attn_mask": torch.rand(6, 6) > 0.3}, {"is_causal": True},
               {"scale": 0.7}):
        ref = F.scaled_dot_product_attention(q, k, v, **kw)
        with capture_attention() as rec:
            got = F.scaled_dot_product_attention(q, k, v, **kw)
        assert torch.allclose(got, ref, atol=1e-6, equal_nan=True) and len(rec.attentions) == 1, kw


# ----------------------------------------------------------------------------- references


@pytest.mark.parametrize("fusion", ["mean", "max", "min"])
def test_rollout_equals_the_reference_on_timm_vit(fusion):
    model, x, target = tiny_timm_vit(), images(), torch.tensor([0, 3])
    _, attn = timm_reference(model, x, target)
    r = run(ROLLOUT, model, x, target, head_fusion=fusion)
    expected = reference_rollout(attn, fusion).view(2, 4, 4)
    assert torch.allclose(r.extras["grid"].double(), expected, rtol=1e-5, atol=1e-7)
    up = F.interpolate(expected.unsqueeze(1), size=(32, 32), mode="bilinear", align_corners=False).squeeze(1)
    assert torch.allclose(r.maps.double(), up, rtol=1e-5, atol=1e-7)
    assert r.extras["prefix_tokens"] == 1 and r.extras["layers"] == 2


def test_chefer_equals_the_reference_on_timm_vit():
    model, x, target = tiny_timm_vit(), images(), torch.tensor([0, 3])
    _, attn = timm_reference(model, x, target)
    r = run(GRADIENT, model, x, target)
    expected = reference_chefer(attn).view(2, 4, 4)
    assert expected.abs().max() > 1e-4, "a reference of zeros would prove nothing"
    assert torch.allclose(r.extras["grid"].double(), expected, rtol=1e-4, atol=1e-7)
    r1 = run(GRADIENT, model, x, target, start_layer=1)
    assert torch.allclose(r1.extras["grid"].double(), reference_chefer(attn, start=1).view(2, 4, 4),
                          rtol=1e-4, atol=1e-7)


def test_both_methods_equal_the_reference_on_torchvision_vit():
    model, x, target = tiny_tv_vit(), images(), torch.tensor([4, 2])
    _, attn = tv_reference(model, x, target)
    roll = run(ROLLOUT, model, x, target)
    assert torch.allclose(roll.extras["grid"].double(), reference_rollout(attn).view(2, 4, 4), rtol=1e-5, atol=1e-7)
    chefer = run(GRADIENT, model, x, target)
    expected = reference_chefer(attn).view(2, 4, 4)
    assert expected.abs().max() > 1e-4
    assert torch.allclose(chefer.extras["grid"].double(), expected, rtol=1e-4, atol=1e-7)


def test_discard_ratio_and_start_layer_of_rollout():
    model, x, target = tiny_timm_vit(), images(1), torch.tensor([0])
    _, attn = timm_reference(model, x, target)
    r = run(ROLLOUT, model, x, target, start_layer=1)
    assert torch.allclose(r.extras["grid"].double(), reference_rollout(attn, start=1).view(1, 4, 4), rtol=1e-5)
    # discard_ratio: the smallest 30 % of the 17x17 fused weights zeroed (86 of 289), by sorting
    N, R = 17, torch.eye(17, dtype=torch.float64)
    for A in attn:
        fused = A[0].detach().double().mean(0).flatten()
        order = sorted(range(N * N), key=lambda i: fused[i].item())
        kept = fused.clone()
        kept[order[:int(N * N * 0.3)]] = 0
        step = kept.view(N, N) + torch.eye(N, dtype=torch.float64)
        R = (step / step.sum(1, keepdim=True)) @ R
    r = run(ROLLOUT, model, x, target, discard_ratio=0.3)
    assert torch.allclose(r.extras["grid"].double(), R[0, 1:].view(1, 4, 4), rtol=1e-5)
    with pytest.raises(ValueError, match="start_layer=2"):
        run(ROLLOUT, model, x, target, start_layer=2)


# ----------------------------------------------------------------------------- behaviour


def test_class_sensitivity():
    model, x = tiny_timm_vit(), images(1)
    roll = [run(ROLLOUT, model, x, torch.tensor([c])).maps for c in (0, 3)]
    grad = [run(GRADIENT, model, x, torch.tensor([c])).maps for c in (0, 3)]
    assert torch.equal(roll[0], roll[1])
    assert (grad[0] - grad[1]).abs().max() > 1e-3 * grad[0].abs().max()


@pytest.mark.parametrize("kw, prefix, readout", [
    ({"arch": DEIT}, 2, [0, 1]),  # class and distillation tokens, averaged by the head
    ({"reg_tokens": 4}, 5, [0]),
    ({"class_token": False, "global_pool": "avg"}, 0, list(range(16))),  # every patch token is read
])
def test_special_tokens_are_excluded_and_readout_found(kw, prefix, readout):
    model, x = tiny_timm_vit(**kw), images()
    for name in (ROLLOUT, GRADIENT):
        r = run(name, model, x, torch.tensor([1, 2]))
        assert r.maps.shape == (2, 32, 32) and r.extras["grid"].shape == (2, 4, 4)
        assert torch.isfinite(r.maps).all() and (r.maps >= 0).all()
        assert r.extras["prefix_tokens"] == prefix and r.extras["readout_tokens"] == [len(readout)] * 2
    # the readout rows, from the gradient's zero pattern, and the rollout of their mean row
    with capture_attention() as rec, torch.enable_grad():
        score = model(x)[:, 1].sum()
    (g,) = torch.autograd.grad(score, rec.attentions[-1].probs)
    rows = g.ne(0).any(-1).any(1)[0]
    assert rows.nonzero().flatten().tolist() == readout
    R = torch.eye(16 + prefix, dtype=torch.float64)
    for a in rec.attentions:
        R = (0.5 * a.probs[0].detach().double().mean(0) + 0.5 * torch.eye(16 + prefix, dtype=torch.float64)) @ R
    expected = R[rows][:, prefix:].mean(0).view(4, 4)
    got = run(ROLLOUT, model, x[:1], torch.tensor([1])).extras["grid"][0]
    assert torch.allclose(got.double(), expected, rtol=1e-5)


def test_the_spec_token_layout_is_used_and_checked():
    from dataclasses import replace

    from generator.models.spec import ModelSpec
    from generator.models.tokens import infer_token_layout

    model, x = tiny_timm_vit(reg_tokens=4), images(1)
    layout = infer_token_layout(model, (3, 32, 32))
    spec = ModelSpec(id="vit", source="test", input_size=(3, 32, 32), mean=(0.5,) * 3, std=(0.5,) * 3,
                     class_names=[str(i) for i in range(5)], tokens=layout.to_json())
    plain = run(ROLLOUT, model, x, 0)
    with_spec = ATTRIBUTION_METHODS.get(ROLLOUT)(model, spec).attribute(x, 0)
    assert torch.equal(plain.maps, with_spec.maps) and with_spec.extras["prefix_tokens"] == 5
    wrong = replace(spec, tokens=replace(layout, prefix=1).to_json())
    with pytest.raises(Unsupported, match="not the 4x4 patch tokens"):
        ATTRIBUTION_METHODS.get(ROLLOUT)(model, wrong).attribute(x, 0)


def snapshot(model):
    return ({k: v.clone() for k, v in model.state_dict().items()},
            [(m.training, dict(m._forward_hooks), dict(m._forward_pre_hooks), dict(m._backward_hooks))
             for m in model.modules()],
            [p.requires_grad for p in model.parameters()])


def unchanged(model, snap, x, before):
    state, flags, grads = snap
    same_state = all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    now = [(m.training, dict(m._forward_hooks), dict(m._forward_pre_hooks), dict(m._backward_hooks))
           for m in model.modules()]
    with torch.no_grad():
        out = model(x)
    return same_state and now == flags and [p.requires_grad for p in model.parameters()] == grads and \
        torch.equal(out, before)


def test_model_unchanged_after_running_and_after_raising():
    model, x = tiny_tv_vit(), images()
    model.train()  # dropout is 0: the outputs are deterministic; the method evaluates in eval mode
    with torch.no_grad():
        before = model(x)
    snap = snapshot(model)
    for name in (ROLLOUT, GRADIENT):
        run(name, model, x, torch.tensor([0, 1]))
        assert unchanged(model, snap, x, before)
        with pytest.raises(ValueError, match="start_layer"):
            run(name, model, x, torch.tensor([0, 1]), start_layer=5)
        assert unchanged(model, snap, x, before)


def test_cnn_swin_and_torchscript_are_not_applicable():
    torch.manual_seed(0)
    resnet = torchvision.models.resnet18(num_classes=5).eval()
    x = images(1)
    snap = snapshot(resnet)
    with torch.no_grad():
        before = resnet(x)
    for name in (ROLLOUT, GRADIENT):
        with pytest.raises(Unsupported, match="no attention"):
            run(name, resnet, x, 0)
    assert unchanged(resnet, snap, x, before)
    swin = timm.create_model("swin_tiny_patch4_window7_224", pretrained=False, img_size=32, window_size=4,
                             depths=(1, 1), embed_dim=16, num_heads=(1, 2), num_classes=5).eval()
    with pytest.raises(Unsupported, match="windowed"):
        run(GRADIENT, swin, x, 0)
    scripted = torch.jit.trace(tiny_timm_vit(), x)
    with pytest.raises(Unsupported, match="TorchScript"):
        ATTRIBUTION_METHODS.get(ROLLOUT)(scripted)


def test_a_score_that_reads_no_token_falls_back_to_the_class_token():
    # torchvision's freshly built ViT has a zero head: the score depends on no token at all
    torch.manual_seed(0)
    model = torchvision.models.VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2,
                                                 hidden_dim=32, mlp_dim=64, num_classes=5).eval()
    x, target = images(1), torch.tensor([1])
    _, attn = tv_reference(model, x, target)
    roll = run(ROLLOUT, model, x, target)
    assert torch.allclose(roll.extras["grid"].double(), reference_rollout(attn).view(1, 4, 4), rtol=1e-5)
    assert torch.equal(run(GRADIENT, model, x, target).maps, torch.zeros(1, 32, 32))
