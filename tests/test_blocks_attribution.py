"""Building Blocks attribution: activation x gradient sums, layer-to-layer, groups, hooks."""

import contextlib

import pytest
import torch
from torch import nn

import generator.methods.blocks._grad as grad_mod
from generator.methods.blocks import (
    channel_ranking,
    class_attribution,
    competing_classes,
    group_attribution,
    group_flow,
    layer_activations,
    layer_to_layer,
    neuron_groups,
)

H = 12  # input size


def linear_head_model():
    """conv-relu-conv-relu ['3'] then global average pooling and a linear layer: affine above '3'."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 10, 3, stride=2, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(10, 7),
    ).eval()


def deep_model(inplace=False):
    """Nonlinear above the layers of interest: '2' (6x6) -> '4' (1x1 conv, linear in '2') -> ... logits."""
    torch.manual_seed(1)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
        nn.Conv2d(8, 10, 3, stride=2, padding=1),  # '2': signed, 6 x 6
        nn.ReLU(inplace=inplace),
        nn.Conv2d(10, 12, 1),  # '4': 1x1 conv with bias
        nn.ReLU(),
        nn.Conv2d(12, 9, 3, stride=2, padding=1),  # '6': 3 x 3
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(9, 5),
    ).eval()


def image(seed=0):
    return torch.randn(3, H, H, generator=torch.Generator().manual_seed(seed))


@contextlib.contextmanager
def replaced(module, value_fn):
    h = module.register_forward_hook(lambda m, i, o: value_fn(o))
    try:
        yield
    finally:
        h.remove()


def no_hooks(model):
    return all(not m._forward_hooks and not m._forward_pre_hooks and not m._backward_hooks for m in model.modules())


def test_total_equals_logit_change_for_affine_head():
    model, x = linear_head_model(), image()
    ca = class_attribution(model, x, "3", list(range(7)))
    with torch.no_grad():
        full = model(x[None])[0]
        with replaced(model[3], torch.zeros_like):
            zero = model(x[None])[0]
    torch.testing.assert_close(ca.total, full - zero, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(ca.logits, full, rtol=1e-5, atol=1e-6)
    # the views are consistent sums of the same activation x gradient
    torch.testing.assert_close(ca.spatial.sum((1, 2)), ca.total, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ca.channel.sum(1), ca.total, rtol=1e-5, atol=1e-6)
    assert no_hooks(model)


def test_first_order_taylor_for_nonlinear_head():
    model, x = deep_model(), image(1)
    ca = class_attribution(model, x, "2", [0, 3, 4])
    eps = 1e-3
    with torch.no_grad():
        full = model(x[None])[0]
        with replaced(model[2], lambda o: o * (1 - eps)):
            shrunk = model(x[None])[0]
    change = (full - shrunk)[[0, 3, 4]]
    torch.testing.assert_close(eps * ca.total, change, rtol=2e-2, atol=1e-6)


def test_gradients_match_direct_autograd_and_inplace_relu():
    for inplace in (False, True):
        model, x = deep_model(inplace=inplace), image(2)
        ca = class_attribution(model, x, "2", [1, 2])
        with torch.no_grad():
            a = model[:3](x[None])
        a = a.clone().requires_grad_(True)
        out = model[3:](a.clone())
        for row, c in enumerate([1, 2]):
            (g,) = torch.autograd.grad(out[0, c], a, retain_graph=True)
            torch.testing.assert_close(ca.grads[row], g[0])
        torch.testing.assert_close(ca.act, a[0].detach())


def test_loop_fallback_gives_the_same_gradients(monkeypatch):
    model, x = deep_model(), image(3)
    batched = class_attribution(model, x, "2", [0, 1, 2, 3])
    monkeypatch.setattr(grad_mod, "_VMAP_OK", False)
    looped = class_attribution(model, x, "2", [0, 1, 2, 3], batch_size=3)
    torch.testing.assert_close(batched.grads, looped.grads)


def test_channel_ranking_and_competing_classes():
    model, x = deep_model(), image(4)
    ca = class_attribution(model, x, "4", list(range(5)))
    r = channel_ranking(ca, 3, n=4)
    ch = ca.channel[ca.row(3)]
    assert [c for c, _ in r.support] == [int(i) for i in torch.argsort(ch, descending=True)[:4] if ch[i] > 0]
    assert all(v < 0 for _, v in r.oppose)
    cc = competing_classes(ca, n=3)
    top2 = torch.argsort(ca.logits, descending=True)[:2].tolist()
    assert (cc.a, cc.b) == (ca.classes[top2[0]], ca.classes[top2[1]])
    torch.testing.assert_close(cc.difference, ca.channel[ca.row(cc.a)] - ca.channel[ca.row(cc.b)])
    assert all(v > 0 for _, v in cc.for_a) and all(v < 0 for _, v in cc.for_b)
    # the margin's attribution is the difference of the two totals
    torch.testing.assert_close(cc.difference.sum(), ca.total[ca.row(cc.a)] - ca.total[ca.row(cc.b)])
    with pytest.raises(KeyError):
        ca.row(99)


def test_layer_to_layer_linear_upper_map_is_exact():
    model, x = deep_model(), image(5)
    conv = model[4]
    l2l = layer_to_layer(model, x, "3", "4", target="positions")
    assert l2l.upper_shape == (6, 6) and l2l.spatial.shape == (36, 6, 6)
    up = layer_activations(model, x, "4", with_logits=False).act
    f_a = up.sum(0).flatten()
    f_0 = conv.bias.sum().detach()  # upper activation at a zero lower activation: the bias
    torch.testing.assert_close(l2l.values, f_a)
    torch.testing.assert_close(l2l.attr.sum((1, 2, 3)), f_a - f_0, rtol=1e-4, atol=1e-5)
    # a 1x1 convolution: position q only draws on the same lower position
    m = l2l.matrix()
    torch.testing.assert_close(m - torch.diag(torch.diagonal(m)), torch.zeros_like(m))
    d = torch.randn(12, generator=torch.Generator().manual_seed(0))
    l2d = layer_to_layer(model, x, "3", "4", target="total", direction=d)
    torch.testing.assert_close(l2d.values[0], torch.einsum("chw,c->", up, d), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(l2d.attr.sum(), l2d.values[0] - (conv.bias.detach() @ d) * 36, rtol=1e-4, atol=1e-4)
    assert no_hooks(model)


def test_layer_to_layer_positions_sum_to_total():
    model, x = deep_model(), image(6)
    per = layer_to_layer(model, x, "2", "6", target="positions")
    tot = layer_to_layer(model, x, "2", "6", target="total")
    assert per.upper_shape == (3, 3) and per.attr.shape == (9, 10, 6, 6)
    torch.testing.assert_close(per.spatial.sum(0), tot.spatial[0], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(per.values.sum(), tot.values[0], rtol=1e-5, atol=1e-5)
    sub = layer_to_layer(model, x, "2", "6", positions=[4, 0])
    torch.testing.assert_close(sub.attr, per.attr[[4, 0]])
    # reference: direct autograd on the sub-network between the layers
    with torch.no_grad():
        a = model[:3](x[None])
    a.requires_grad_(True)
    u = model[3:7](a)
    (g,) = torch.autograd.grad(u[0, :, 1, 1].sum(), a)
    torch.testing.assert_close(per.attr[4], (a * g)[0].detach(), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError):
        layer_to_layer(model, x, "6", "2")
    assert no_hooks(model)


def test_group_attribution_and_flow_add_up():
    model, x = deep_model(), image(7)
    acts = layer_activations(model, x, "2")
    ca = class_attribution(model, x, "2", [0, 1, 2])
    groups = neuron_groups(acts.act, 4, layer="2")
    assert groups.mode == "split"
    ga = group_attribution(groups, ca)
    torch.testing.assert_close(ga.attr.sum(1) + ga.residual, ca.total, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ga.spatial.sum((2, 3)), ga.attr)
    # with as many groups as split columns the factorisation is nearly exact: tiny residual
    full = neuron_groups(acts.act, 20, layer="2", max_iter=2000, tol=0)
    assert full.relative_error < 0.05
    gfull = group_attribution(full, ca)
    assert gfull.residual.abs().max() < 0.1 * ca.total.abs().max() + 1e-3

    # flow from groups of '3' (the ReLU, non-negative) to groups of '4', an affine map of '3'
    lower = neuron_groups(layer_activations(model, x, "3").act, 3, layer="3")
    upper = neuron_groups(layer_activations(model, x, "4").act, 2, layer="4")
    assert lower.mode == "plain" and upper.mode == "split"  # a ReLU output, a conv output
    fl = group_flow(model, x, lower, upper)
    assert fl.flow.shape == (3, 2)
    torch.testing.assert_close(fl.flow.sum(0) + fl.residual, fl.total, rtol=1e-5, atol=1e-5)
    # affine upper map: the total attribution is f(a) - f(0), f(0) the read-out of the bias
    d = upper.unit_directions()
    mask = upper.spatial / upper.spatial.flatten(1).amax(1)[:, None, None]
    f0 = torch.einsum("gc,c,ghw->g", d, model[4].bias.detach(), mask)
    torch.testing.assert_close(fl.total, fl.values - f0, rtol=1e-4, atol=1e-4)
    up = layer_activations(model, x, "4").act
    torch.testing.assert_close(fl.values, torch.einsum("gc,chw,ghw->g", d, up, mask), rtol=1e-5, atol=1e-5)
    assert no_hooks(model)


def test_model_unchanged_and_training_mode_rejected():
    model, x = deep_model(inplace=True), image(8)
    with torch.no_grad():
        before = model(x[None]).clone()
    params = [p.detach().clone() for p in model.parameters()]
    class_attribution(model, x, "2", [0])
    layer_to_layer(model, x, "2", "6")
    with torch.no_grad():
        after = model(x[None])
    assert torch.equal(before, after)
    assert all(torch.equal(p, q) for p, q in zip(params, model.parameters()))
    assert all(p.grad is None for p in model.parameters())
    assert no_hooks(model)
    model.train()
    with pytest.raises(ValueError, match="eval"):
        class_attribution(model, x, "2", [0])
    assert no_hooks(model)


def test_hooks_removed_on_error():
    model, x = deep_model(), image(9)

    def bad_readout(idx, shape):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        grad_mod.layer_gradients(model, x, "2", bad_readout, 2)
    assert no_hooks(model)


def test_tf32_flags_restored():
    model, x = deep_model(), image(10)
    before = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    class_attribution(model, x, "2", [0])
    layer_activations(model, x, "2")
    assert (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32) == before


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    model, x = deep_model(), image(11)
    cpu = class_attribution(model, x, "2", [0, 1, 2])
    l2l_cpu = layer_to_layer(model, x, "2", "6")
    model = model.cuda()
    gpu = class_attribution(model, x.cuda(), "2", [0, 1, 2])
    l2l_gpu = layer_to_layer(model, x.cuda(), "2", "6")
    torch.testing.assert_close(gpu.grads.cpu(), cpu.grads, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(l2l_gpu.attr.cpu(), l2l_cpu.attr, rtol=1e-4, atol=1e-5)
    assert no_hooks(model)
