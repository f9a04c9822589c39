"""Feature visualisation and Building Blocks on a tiny timm vision transformer.

Checked against independent recomputations from raw (B, N, C) token outputs: the channel
objective is the unit averaged over the patch tokens (class token left out), the neuron objective
the centre patch token; optimising raises the channel; Building Blocks' activation x gradient
split into patch grid + class token matches plain autograd and sums to the whole layer's total
(exactly logit - bias where the logits are affine in the layer); the model is unchanged; a model
with one fixed input size renders at that size and says so.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

timm = pytest.importorskip("timm")

from generator.engine.layers import get_layer  # noqa: E402
from generator.methods import featurevis as fv  # noqa: E402
from generator.methods.blocks import (  # noqa: E402
    building_blocks,
    class_attribution,
    layer_activations,
    layer_to_layer,
    summary_json,
)
from generator.models.spec import ModelSpec  # noqa: E402
from generator.models.tokens import infer_token_layout  # noqa: E402

SIZE, PATCH, GRID = 32, 8, 4


def tiny_vit(seed: int = 0, **kw) -> torch.nn.Module:
    torch.manual_seed(seed)
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=SIZE, patch_size=PATCH, depth=2,
                             embed_dim=32, num_heads=2, num_classes=5, **kw).eval()


def vit_spec(model: torch.nn.Module, size: int = SIZE, with_layout: bool = True) -> ModelSpec:
    layout = infer_token_layout(model, (3, SIZE, SIZE)) if with_layout else None
    return ModelSpec(id="tiny_vit", source="test", input_size=(3, size, size), mean=(0.5,) * 3, std=(0.5,) * 3,
                     class_names=[f"c{i}" for i in range(5)], tokens=layout.to_json() if layout else None)


@pytest.fixture(scope="module")
def vit():
    return tiny_vit()


def raw_output(model, layer: str, x: torch.Tensor) -> torch.Tensor:
    out = {}
    h = get_layer(model, layer).register_forward_hook(lambda m, i, o: out.__setitem__("t", o))
    try:
        with torch.no_grad():
            model(x)
    finally:
        h.remove()
    return out["t"]


def snapshot(model):
    return ({k: v.clone() for k, v in model.state_dict().items()},
            [(m.training, len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks))
             for m in model.modules()],
            [p.requires_grad for p in model.parameters()])


def assert_unchanged(model, before, x):
    state, flags, grads = snapshot(model)
    assert flags == before[1] and grads == before[2]
    for k, v in before[0].items():
        assert torch.equal(v, state[k]), k


# ---------------------------------------------------------------------------------------------
# feature visualisation


@pytest.mark.parametrize("with_layout", [True, False])  # False: the layout is inferred from a trace
def test_channel_is_the_patch_token_mean_and_neuron_the_centre_patch(vit, with_layout):
    spec = vit_spec(vit, with_layout=with_layout)
    pixels = torch.rand(3, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    raw = raw_output(vit, "blocks.1.mlp.fc1", (pixels - 0.5) / 0.5)  # (3, 1 + 16, 128)
    assert raw.shape == (3, 1 + GRID * GRID, 128)
    chans = [0, 7, 127]
    got = fv.evaluate(vit, spec, fv.channel("blocks.1.mlp.fc1", chans), pixels)
    want = raw[torch.arange(3), 1:, chans].mean(1)  # the class token (index 0) left out
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-5, atol=1e-6)
    centre = 1 + (GRID // 2) * GRID + GRID // 2  # row-major after the class token
    got = fv.evaluate(vit, spec, fv.neuron("blocks.1.mlp.fc1", chans), pixels)
    np.testing.assert_allclose(got, raw[torch.arange(3), centre, chans].numpy(), rtol=1e-5, atol=1e-6)
    assert fv.layer_channels(vit, spec, "blocks.1.mlp.fc1") == 128
    assert fv.layer_channels(vit, spec, "blocks.0") == 32
    assert fv.default_layers(vit) == ["blocks.0", "blocks.1"]


def test_optimising_raises_mlp_units_and_residual_channels(vit):
    spec = vit_spec(vit)
    before = snapshot(vit)
    objective = fv.stack([fv.channel("blocks.1.mlp.fc1", 3), fv.channel("blocks.1.mlp.fc1", 40),
                          fv.channel("blocks.0", 5)])
    res = fv.render(vit, spec, objective, steps=12, lr=0.1, transforms="none", precision="fp32")
    assert res.images.shape == (3, SIZE, SIZE, 3) and np.isfinite(res.images).all()
    # transforms="none": step 0 is the initial image itself; the final value is re-evaluated
    assert (res.final_values > res.trajectory[0] + 1e-3).all(), (res.trajectory[0], res.final_values)
    assert "size_note" not in res.settings
    assert res.settings["tokens"] == {
        layer: "tokens on a 4x4 patch grid; class token left out (not a place in the image)"
        for layer in ("blocks.0", "blocks.1.mlp.fc1")}
    x = torch.rand(1, 3, SIZE, SIZE)
    assert_unchanged(vit, before, x)


def test_a_fixed_size_model_renders_at_its_own_size_and_says_so(vit):
    spec = vit_spec(vit)
    with pytest.raises(AssertionError, match="doesn't match model"):  # what timm says at 48 px
        vit(torch.zeros(1, 3, 48, 48))
    calls = []
    h = vit.patch_embed.register_forward_pre_hook(lambda m, i: calls.append(i[0].shape[-1]))
    try:
        res = fv.render(vit, spec, fv.channel("blocks.0", [1, 2]), steps=2, size=48, transforms="none",
                        precision="fp32")
        fv.render(vit, spec, fv.channel("blocks.0", [3]), steps=2, size=48, transforms="none", precision="fp32")
    finally:
        h.remove()
    assert res.images.shape == (2, SIZE, SIZE, 3)
    assert res.settings["size"] == [SIZE, SIZE] and res.settings["size_requested"] == [48, 48]
    note = res.settings["size_note"]
    assert "'tiny_vit'" in note and "48x48" in note and "32x32" in note and "\n" not in note
    assert calls.count(48) == 1  # refused once, before optimising; the second render knew it already
    # a model that accepts other sizes renders at the size asked
    dyn = tiny_vit(dynamic_img_size=True)
    res = fv.render(dyn, vit_spec(dyn), fv.channel("blocks.0", [1]), steps=2, size=48, transforms="none",
                    precision="fp32")
    assert res.images.shape == (1, 48, 48, 3) and "size_note" not in res.settings
    # a model refusing its own spec size too: one line naming the model and both sizes
    with pytest.raises(ValueError, match=r"'tiny_vit' refuses the 48x48 px asked and its own 40x40 px") as err:
        fv.render(vit, vit_spec(vit, size=40), fv.channel("blocks.0", 0), steps=1, size=48)
    assert "\n" not in str(err.value)


def test_dataset_examples_and_deepdream_on_the_patch_grid(vit):
    spec = vit_spec(vit)
    x = torch.randn(5, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(2))
    ex = fv.top_activating(vit, spec, "blocks.1", [x[:3], x[3:]], channels=[0, 9], k=2)
    raw = raw_output(vit, "blocks.1", x)[:, 1:, [0, 9]]  # (5, 16, 2) patch tokens
    best = raw.amax(1).T  # (2 channels, 5 images)
    assert ex.act_hw == (GRID, GRID)
    np.testing.assert_allclose(ex.values, best.topk(2, dim=1).values.numpy(), rtol=1e-5)
    pos = raw.argmax(1).T.gather(1, torch.as_tensor(ex.indices))
    assert (ex.positions[..., 0] * GRID + ex.positions[..., 1] == pos.numpy()).all()
    # DeepDream at a refused size: octaves below the model's size are skipped, the size kept
    dreams = fv.deepdream(vit, spec, torch.rand(1, 3, SIZE, SIZE), ["blocks.1"], steps=2, octaves=3, jitter=2)
    assert dreams["blocks.1"].shape == (1, SIZE, SIZE, 3)
    assert fv.dream_octaves(vit, spec, (SIZE, SIZE), 3, ["blocks.1"]) == 1


# ---------------------------------------------------------------------------------------------
# Building Blocks


def reference_attribution(model, layer: str, x: torch.Tensor, cls: int):
    """Plain autograd: activation x gradient of logit ``cls`` at every token of ``layer``, (N,)."""
    kept = {}

    def hook(m, i, o):
        o.retain_grad()
        kept["a"] = o

    h = get_layer(model, layer).register_forward_hook(hook)
    try:
        logit = model(x[None].requires_grad_(True))[0, cls]
        logit.backward()
    finally:
        h.remove()
    model.zero_grad(set_to_none=True)
    a = kept["a"]
    return (a * a.grad)[0].sum(-1).detach(), float(logit.detach())


@pytest.mark.parametrize("layer", ["blocks.0.mlp.fc1", "blocks.0"])
def test_spatial_attribution_splits_the_tokens_activation_x_gradient(vit, layer):
    x = torch.randn(3, SIZE, SIZE, generator=torch.Generator().manual_seed(3))
    ca = class_attribution(vit, x, layer, [0, 3])
    assert ca.spatial.shape == (2, GRID, GRID) and ca.prefix.shape == (2, 1) and ca.prefix_names == ("class",)
    for k, cls in enumerate([0, 3]):
        ref, _ = reference_attribution(vit, layer, x, cls)
        np.testing.assert_allclose(ca.spatial[k].flatten().numpy(), ref[1:].numpy(), rtol=1e-4, atol=1e-7)
        np.testing.assert_allclose(float(ca.prefix[k, 0]), float(ref[0]), rtol=1e-4, atol=1e-7)
        np.testing.assert_allclose(float(ca.total[k]), float(ref.sum()), rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("pool", ["token", "avg"])
def test_attribution_is_exact_where_the_logits_are_affine_in_the_layer(pool):
    """At the final norm the logits are affine: the whole activation x gradient is logit - bias,
    carried by the class token (class-token head) or by the patch grid (average-pooled head)."""
    model = tiny_vit(seed=4, global_pool=pool, fc_norm=False)
    x = torch.randn(3, SIZE, SIZE, generator=torch.Generator().manual_seed(5))
    ca = class_attribution(model, x, "norm", [1, 2])
    exact = ca.logits - model.head.bias[[1, 2]].detach()
    torch.testing.assert_close(ca.total, exact, rtol=1e-5, atol=1e-6)
    grid, prefix = (ca.prefix_total, ca.spatial_total) if pool == "token" else (ca.spatial_total, ca.prefix_total)
    torch.testing.assert_close(grid, exact, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(prefix, torch.zeros(2), rtol=0, atol=1e-6)


def test_building_blocks_on_a_vit_layer(vit):
    spec = vit_spec(vit)
    before = snapshot(vit)
    x = torch.randn(3, SIZE, SIZE, generator=torch.Generator().manual_seed(6))
    bb = building_blocks(vit, x, "blocks.0.mlp.fc1", top_k=3, n_channels=4, n_groups=3, upper_layer="blocks.1",
                         layout=fv.spec_layout(spec))
    assert bb.grid.grid_shape == (GRID, GRID) and bb.dictionary.channels.shape == (GRID, GRID, 4)
    assert bb.groups.spatial.shape == (3, GRID, GRID) and bb.attribution.spatial.shape == (3, GRID, GRID)
    assert bb.layer_to_layer.attr.shape == (GRID * GRID, 128, GRID, GRID) and bb.flow.flow.shape == (3, 3)
    for t in (bb.grid.magnitude, bb.attribution.spatial, bb.groups.spatial, bb.group_attr.attr,
              bb.layer_to_layer.attr, bb.flow.flow):
        assert torch.isfinite(t).all()
    # the activation grid is the patch tokens' activations, row-major
    raw = raw_output(vit, "blocks.0.mlp.fc1", x[None])[0, 1:]
    torch.testing.assert_close(bb.grid.directions.reshape(-1, 128), raw, rtol=1e-5, atol=1e-6)
    # groups + residual + class token == the whole layer's total, per class and for the flow
    ga, ca = bb.group_attr, bb.attribution
    torch.testing.assert_close(ga.attr.sum(1) + ga.residual + ga.prefix, ca.total, rtol=1e-5, atol=1e-6)
    f = bb.flow
    torch.testing.assert_close(f.flow.sum(0) + f.residual + f.prefix, f.total, rtol=1e-5, atol=1e-6)
    s = summary_json(bb, spec.class_names)
    assert s["grid"] == [GRID, GRID] and len(s["cells"]) == GRID * GRID
    assert s["tokens"]["prefix_names"] == ["class"] and "not a place in the image" in s["tokens"]["note"]
    assert [e["class"] for e in s["tokens"]["attribution"]] == ca.classes
    assert_unchanged(vit, before, x)


def test_layer_to_layer_positions_sum_to_the_total_and_match_autograd(vit):
    x = torch.randn(3, SIZE, SIZE, generator=torch.Generator().manual_seed(7))
    per = layer_to_layer(vit, x, "blocks.0", "blocks.1.mlp.fc1", target="positions")
    tot = layer_to_layer(vit, x, "blocks.0", "blocks.1.mlp.fc1", target="total")
    assert per.upper_shape == (GRID, GRID) and per.prefix.shape == (GRID * GRID, 1)
    torch.testing.assert_close(per.attr.sum(0), tot.attr[0], rtol=1e-4, atol=1e-6)
    # reference: the upper layer's patch tokens summed (its class token left out), by autograd
    kept = {}
    hooks = [get_layer(vit, "blocks.0").register_forward_hook(
        lambda m, i, o: (o.retain_grad(), kept.__setitem__("a", o))[-1]),
        get_layer(vit, "blocks.1.mlp.fc1").register_forward_hook(lambda m, i, o: kept.__setitem__("u", o))]
    try:
        vit(x[None])
        kept["u"][0, 1:].sum().backward()
    finally:
        for h in hooks:
            h.remove()
    ref = (kept["a"] * kept["a"].grad)[0].sum(-1).detach()
    np.testing.assert_allclose(tot.spatial[0].flatten().numpy(), ref[1:].numpy(), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(float(tot.prefix[0, 0]), float(ref[0]), rtol=1e-4, atol=1e-6)
    acts = layer_activations(vit, x, "blocks.0", with_logits=False)
    assert acts.act.shape == (32, GRID, GRID) and acts.prefix.shape == (1, 32) and acts.prefix_names == ("class",)
