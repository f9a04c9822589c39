"""Token grids inferred from structure and one trace (generator.models.tokens), Grad-CAM on
transformers through them, patch-aligned occlusion and the layout on the model page.

Every model is a tiny random instance; the expected grids and prefixes are the construction
parameters, and spatial correctness is checked by changing one patch of the input."""

from __future__ import annotations

import copy
from typing import Callable, Dict, Tuple

import pytest
import timm
import torch
from torch import nn
from torchvision.models.swin_transformer import SwinTransformer
from torchvision.models.vision_transformer import VisionTransformer

from generator.methods.attribution.base import ATTRIBUTION_METHODS
from generator.models.sources import LoadContext, ModelRequest, _classifier, _default_layers, load_model
from generator.models.spec import ModelSpec
from generator.models.tokens import TokenLayout, infer_token_layout, to_spatial, token_cam_layer
from generator.render.pages.models import token_grid_text

SMALL = dict(pretrained=False, img_size=32, patch_size=8, depth=3, embed_dim=32, num_heads=2, num_classes=5)


def _tv_vit() -> nn.Module:
    m = VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64,
                          num_classes=5)
    # torchvision zero-initialises the head: every gradient would vanish, whatever the layer.
    torch.nn.init.normal_(m.heads.head.weight, std=0.5, generator=torch.Generator().manual_seed(0))
    return m


#: name -> (factory, kind, grid at 32 px, patch, prefix names)
FAMILIES: Dict[str, Tuple[Callable[[], nn.Module], str, Tuple[int, int], int, Tuple[str, ...]]] = {
    "timm_vit": (lambda: timm.create_model("vit_tiny_patch16_224", **SMALL), "tokens", (4, 4), 8, ("class",)),
    "timm_deit": (lambda: timm.create_model("deit_tiny_distilled_patch16_224", **SMALL), "tokens", (4, 4), 8,
                  ("class", "distillation")),
    "timm_vit_reg": (lambda: timm.create_model("vit_tiny_patch16_224", reg_tokens=4, **SMALL), "tokens", (4, 4), 8,
                     ("class",) + ("register",) * 4),
    "timm_swin": (lambda: timm.create_model("swin_tiny_patch4_window7_224", pretrained=False, img_size=32,
                                            window_size=4, embed_dim=16, depths=(1, 1), num_heads=(1, 2),
                                            num_classes=5), "channels_last", (8, 8), 4, ()),
    "tv_vit": (_tv_vit, "tokens", (4, 4), 8, ("class",)),
    "tv_swin": (lambda: SwinTransformer(patch_size=[4, 4], embed_dim=16, depths=[1, 1], num_heads=[1, 2],
                                        window_size=[4, 4], num_classes=5), "channels_last", (8, 8), 4, ()),
}
_BUILT: Dict[str, nn.Module] = {}


def _model(name: str) -> nn.Module:
    if name not in _BUILT:
        torch.manual_seed(0)
        _BUILT[name] = FAMILIES[name][0]().eval()
    return _BUILT[name]


def _spec(model: nn.Module, layout: TokenLayout, size: int = 32) -> ModelSpec:
    layers, cam = _default_layers(model)
    checked = token_cam_layer(model, layout, (3, size, size), layers, _classifier(model))
    return ModelSpec(id="m", source="test", input_size=(3, size, size), mean=(0.5,) * 3, std=(0.25,) * 3,
                     class_names=[f"c{i}" for i in range(5)], layers=layers, cam_layer=checked or cam,
                     tokens=layout.to_json())


@pytest.mark.parametrize("name", list(FAMILIES))
def test_layout_equals_construction_and_model_is_untouched(name: str) -> None:
    model = _model(name)
    _, kind, grid, patch, names = FAMILIES[name]
    model.train()  # the trace must put the train flags back
    state = copy.deepcopy(model.state_dict())
    layout = infer_token_layout(model, (3, 32, 32))
    assert model.training and all(m.training for m in model.modules())
    model.eval()
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    assert not model._forward_hooks and not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())
    assert layout is not None
    assert (layout.kind, layout.grid, layout.patch, layout.prefix, layout.prefix_names) == \
        (kind, grid, (patch, patch), len(names), names)
    assert TokenLayout.from_json(layout.to_json()) == layout


@pytest.mark.parametrize("name, build, patch, prefix", [
    ("timm_vit_dynamic", lambda: timm.create_model("vit_tiny_patch16_224", dynamic_img_size=True, **SMALL), 8, 1),
    ("timm_reg_dynamic", lambda: timm.create_model("vit_tiny_patch16_224", dynamic_img_size=True, reg_tokens=4,
                                                   **SMALL), 8, 5),
    ("tv_swin", lambda: _model("tv_swin"), 4, 0),
])
def test_a_second_input_size_gives_its_grid(name: str, build: Callable[[], nn.Module], patch: int,
                                            prefix: int) -> None:
    model = build().eval()
    for h, w in ((32, 32), (48, 64)):
        layout = infer_token_layout(model, (3, h, w))
        assert layout is not None and (layout.grid, layout.prefix) == ((h // patch, w // patch), prefix)
        assert layout.traced_hw == (h, w)
    layers, _ = _default_layers(model)
    cam = token_cam_layer(model, layout, (3, 48, 64), layers, _classifier(model))
    spec = ModelSpec(id="m", source="test", input_size=(3, 48, 64), mean=(0.5,) * 3, std=(0.25,) * 3,
                     class_names=[f"c{i}" for i in range(5)], layers=layers, cam_layer=cam, tokens=layout.to_json())
    result = ATTRIBUTION_METHODS.get("gradcam")(model, spec).attribute(torch.rand(1, 3, 48, 64), 0)
    if prefix:  # a ViT's CAM layer is on the patch grid; a Swin's last stage is coarser (same aspect)
        assert tuple(result.extras["cam"].shape[-2:]) == (48 // patch, 64 // patch)
    else:
        cam_h, cam_w = result.extras["cam"].shape[-2:]
        assert cam_h * 64 == cam_w * 48
    assert float(result.maps.max()) > 0


@pytest.mark.parametrize("name", list(FAMILIES))
def test_one_changed_patch_shows_at_exactly_its_grid_cell(name: str) -> None:
    model = _model(name)
    layout = infer_token_layout(model, (3, 32, 32))
    assert layout is not None
    layer = dict(model.named_modules())[layout.patch_layer]
    got = []
    handle = layer.register_forward_hook(lambda _m, _i, out: got.append(out))
    try:
        x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(3))
        y = x.clone()
        p = layout.patch[0]
        row, col = 2, 1  # the patch at grid cell (2, 1)
        y[:, :, row * p:(row + 1) * p, col * p:(col + 1) * p] = torch.rand(1, 3, p, p)
        with torch.no_grad():
            model(torch.cat([x, y]))
    finally:
        handle.remove()
    maps = to_spatial(got[0], layout, (32, 32))
    assert maps.shape[-2:] == layout.grid
    changed = (maps[0] - maps[1]).abs().amax(0) > 1e-6
    expected = torch.zeros(layout.grid, dtype=torch.bool)
    expected[row, col] = True
    assert torch.equal(changed, expected)


def test_to_spatial_reference_and_errors() -> None:
    # hand-built tokens: 2 special tokens then a 2 x 3 grid, value = 10*row + col in channel 0
    layout = TokenLayout("tokens", (2, 3), (4, 4), 2, ("class", "distillation"), "pe", (8, 12))
    grid = torch.tensor([[10.0 * r + c for c in range(3)] for r in range(2)])
    t = torch.cat([torch.full((2, 1), -1.0), grid.reshape(6, 1)]).view(1, 8, 1).expand(1, 8, 2).clone()
    t.requires_grad_(True)
    out = to_spatial(t, layout, (8, 12))
    assert torch.equal(out[0, 0], grid)
    out.sum().backward()  # differentiable: the special tokens get no gradient
    assert t.grad is not None and torch.equal(t.grad[0, :2], torch.zeros(2, 2)) and bool((t.grad[0, 2:] == 1).all())
    # without a layout: the fewest leading tokens that leave a grid fitting the input
    assert torch.equal(to_spatial(t.detach(), None, (8, 12))[0, 0], grid)
    # channels-last: a permutation; channels-first: unchanged (the same tensor)
    cl = torch.randn(2, 4, 4, 7)
    assert torch.equal(to_spatial(cl, TokenLayout("channels_last", (4, 4), (8, 8)), (32, 32)), cl.permute(0, 3, 1, 2))
    cf = torch.randn(2, 7, 4, 4)
    assert to_spatial(cf, None, (32, 32)) is cf
    with pytest.raises(ValueError, match=r"\(1, 7, 5\)"):
        to_spatial(torch.randn(1, 7, 5), TokenLayout("tokens", (2, 3), (4, 4), 0), (8, 12))
    with pytest.raises(ValueError, match="not spatial"):
        to_spatial(torch.randn(3, 5), None, (8, 8))


@pytest.mark.parametrize("name", list(FAMILIES))
def test_gradcam_on_default_layer_is_finite_and_not_empty(name: str) -> None:
    model = _model(name)
    layout = infer_token_layout(model, (3, 32, 32))
    assert layout is not None
    spec = _spec(model, layout)
    assert spec.cam_layer
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(5)) * 4 - 2
    for method in ("gradcam", "gradcam_pp"):
        result = ATTRIBUTION_METHODS.get(method)(model, spec).attribute(x, [0, 3])
        assert result.maps.shape == (2, 32, 32) and torch.isfinite(result.maps).all()
        assert bool((result.maps.flatten(1).amax(1) > 0).all()), (method, spec.cam_layer)
        assert result.extras["cam"].shape[-2:] != (32, 32)  # at layer resolution: a grid, not pixels


def test_class_token_vit_last_block_is_empty_but_default_is_not() -> None:
    # The reason for the default: the last block's patch tokens get zero gradient.
    model = _model("timm_vit")
    layout = infer_token_layout(model, (3, 32, 32))
    spec = _spec(model, layout)
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    last = ATTRIBUTION_METHODS.get("gradcam")(model, "blocks.2").attribute(x, 1)
    assert float(last.maps.abs().max()) == 0.0
    assert spec.cam_layer == "blocks.2.norm1"
    # bound by layer name, with no spec: the layout is read from the tensor and agrees
    by_name = ATTRIBUTION_METHODS.get("gradcam")(model, "blocks.2.norm1").attribute(x, 1)
    with_spec = ATTRIBUTION_METHODS.get("gradcam")(model, spec).attribute(x, 1)
    assert torch.equal(by_name.maps, with_spec.maps) and float(by_name.maps.max()) > 0


def test_cnn_has_no_layout_and_unchanged_spec_json() -> None:
    from torchvision.models import resnet18

    cnn = resnet18(num_classes=5).eval()
    assert infer_token_layout(cnn, (3, 32, 32)) is None
    convnext = timm.create_model("convnext_atto", pretrained=False, num_classes=5)  # patchify stem, still a CNN
    assert infer_token_layout(convnext, (3, 32, 32)) is None
    spec = ModelSpec(id="c", source="s", input_size=(3, 32, 32), mean=(0.5,) * 3, std=(0.5,) * 3, class_names=["a"])
    assert "tokens" not in spec.to_json()
    assert list(spec.to_json()) == ["id", "source", "input_size", "mean", "std", "num_classes", "resize",
                                    "interpolation", "layers", "cam_layer", "embedding_layer", "description",
                                    "architecture", "weights", "weights_digest", "licence"]


def test_occlusion_windows_are_patches_on_a_token_model() -> None:
    model = _model("timm_vit")
    layout = infer_token_layout(model, (3, 32, 32))
    spec = _spec(model, layout)
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    occ = ATTRIBUTION_METHODS.get("occlusion")
    aligned = occ(model, spec, window=5, stride=3).attribute(x, 1)
    assert aligned.extras["window_hw"] == (8, 8) and aligned.extras["windows"] == 16
    # reference: hide each patch in turn by hand; each pixel gets its own patch's drop
    with torch.no_grad():
        full = model(x)[0, 1]
        ref = torch.zeros(32, 32)
        for r in range(4):
            for c in range(4):
                y = x.clone()
                y[:, :, 8 * r:8 * r + 8, 8 * c:8 * c + 8] = 0
                ref[8 * r:8 * r + 8, 8 * c:8 * c + 8] = full - model(y)[0, 1]
    assert torch.allclose(aligned.maps[0], ref, atol=1e-5)
    free = occ(model, spec, window=5, stride=3, align="none").attribute(x, 1)
    assert free.extras["window_hw"] == (5, 5)


def test_loader_records_layout_and_page_text() -> None:
    # timm's small test ViT: 160 px input, 16 px patches, 6 blocks, a class token
    loaded = load_model(ModelRequest(id="vit", source="timm:test_vit"), LoadContext())
    tokens = loaded.spec.to_json()["tokens"]
    assert tokens["grid"] == [10, 10] and tokens["patch"] == [16, 16] and tokens["prefix_names"] == ["class"]
    assert tokens["kind"] == "tokens" and tokens["patch_layer"] == "patch_embed"
    assert loaded.spec.cam_layer == "blocks.5.norm1"
    text = token_grid_text(tokens)
    assert text == ("10 × 10 patches of 16 px; special tokens: class; layout (B, N, C); "
                    "inferred from one traced 160 px input")
    reg = dict(tokens, prefix=5, prefix_names=["class"] + ["register"] * 4, traced_hw=[224, 160])
    assert "special tokens: class, 4 register" in token_grid_text(reg)
    assert "224 × 160 px input" in token_grid_text(reg)
    assert token_grid_text(None) is None
