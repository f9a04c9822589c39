"""Deletion / insertion against a slow reference, class sensitivity, the sanity check,
localisation metrics."""

import numpy as np
import torch
from _attr_models import small_cnn

from generator.evaluation import (
    auc,
    boxes_to_masks,
    cascading_randomization,
    class_sensitivity,
    deletion_insertion,
    energy_in_mask,
    pointing_game,
    ssim,
)
from generator.methods.attribution import ATTRIBUTION_METHODS


def slow_curves(model, x, maps, target, steps, mode):
    B, C, H, W = x.shape
    out = np.zeros((B, steps + 1))
    for b in range(B):
        order = np.argsort(-maps[b].numpy().ravel(), kind="stable")
        for k in range(steps + 1):
            n = int(round(k / steps * H * W))
            img = x[b].clone().view(C, -1) if mode == "deletion" else torch.zeros(C, H * W)
            src = torch.zeros(C, H * W) if mode == "deletion" else x[b].view(C, -1)
            img[:, order[:n]] = src[:, order[:n]]
            with torch.no_grad():
                out[b, k] = model(img.view(1, C, H, W)).softmax(1)[0, target[b]].item()
    return out


def test_deletion_insertion_matches_slow_reference():
    model = small_cnn()
    torch.manual_seed(0)
    x = torch.randn(3, 3, 8, 8)
    target = torch.tensor([0, 2, 4])
    maps = {"a": torch.randn(3, 8, 8), "b": torch.rand(3, 8, 8)}
    res = deletion_insertion(model, x, maps, target, steps=8, deletion_baseline="zeros", insertion_baseline="zeros",
                             max_batch=7)
    for mode in ("deletion", "insertion"):
        for name, m in maps.items():
            ref = slow_curves(model, x, m, target, 8, mode)
            np.testing.assert_allclose(res[mode]["curves"][name].numpy(), ref, rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(res[mode]["auc"][name].numpy(), np.trapezoid(ref, dx=1 / 8, axis=1)
                                       if hasattr(np, "trapezoid") else np.trapz(ref, dx=1 / 8, axis=1), rtol=1e-5)


def test_patches_move_together():
    model = small_cnn()
    x = torch.randn(1, 3, 8, 8)
    m = torch.zeros(1, 8, 8)
    m[0, :4, :4] = 1.0
    res = deletion_insertion(model, x, {"m": m}, torch.tensor([0]), steps=4, patch=4, modes=("deletion",))
    assert res["deletion"]["curves"]["m"].shape == (1, 5)
    from generator.evaluation.selectivity import pixel_ranks

    r = pixel_ranks(m, patch=4).view(8, 8)
    assert int(r[:4, :4].max()) == 15


def test_auc_trapezoid():
    torch.testing.assert_close(auc(torch.tensor([[1.0, 0.0]])), torch.tensor([0.5]))


def test_class_sensitivity_flags_insensitive_methods():
    model = small_cnn(classes=5)
    x = torch.randn(2, 3, 16, 16)
    methods = {n: ATTRIBUTION_METHODS.get(n)(model, "act2") for n in ("gradient_x_input", "gradcam")}
    out = class_sensitivity(methods, x, model(x).detach())
    for rec in out.values():
        assert rec["spearman_top2"].shape == (2,)

    class Constant:  # a "method" that ignores the class
        def attribute(self, x, t):
            return type("R", (), {"maps": x.sum(1)})()

    assert class_sensitivity({"const": Constant()}, x, model(x).detach())["const"]["class_insensitive"]


def test_cascading_randomization_restores_model_and_flags():
    model = small_cnn()
    x = torch.randn(2, 3, 16, 16)
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    methods = {"saliency": (ATTRIBUTION_METHODS.get("saliency"), None, {}),
               "edge": (ATTRIBUTION_METHODS.get("gradient_x_input"), None, {})}
    out = cascading_randomization(model, methods, x, torch.tensor([0, 1]))
    assert out["saliency"]["layers"] == ["fc", "conv2", "bn1", "conv1"] or out["saliency"]["layers"][0] == "fc"
    assert len(out["saliency"]["ssim"]) == len(out["saliency"]["layers"])
    assert all(torch.equal(v, saved[k]) for k, v in model.state_dict().items())
    assert out["saliency"]["spearman_abs"][-1] < 0.9


def test_ssim_identity():
    a = torch.rand(2, 12, 12)
    torch.testing.assert_close(ssim(a, a), torch.ones(2))


def test_localisation():
    maps = torch.zeros(2, 10, 10)
    maps[0, 2, 2] = 1.0
    maps[1, 9, 9] = 1.0
    masks = boxes_to_masks(torch.tensor([[1, 1, 3, 3], [1, 1, 3, 3]]), (10, 10))
    assert masks[0].sum() == 9
    assert pointing_game(maps, masks, tolerance=0).tolist() == [True, False]
    assert pointing_game(maps, masks, tolerance=6).tolist() == [True, True]
    torch.testing.assert_close(energy_in_mask(maps, masks), torch.tensor([1.0, 0.0]))
