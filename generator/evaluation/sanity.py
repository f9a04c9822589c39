"""Cascading model-parameter randomisation (Adebayo et al. 2018, "Sanity Checks for Saliency
Maps"): randomise layers from the top down, recompute the maps and measure how similar they
stay to the maps of the trained model. A method whose maps survive full randomisation does
not explain the model."""

from __future__ import annotations

import copy
from typing import Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .sensitivity import spearman


def ssim(a: torch.Tensor, b: torch.Tensor, window: int = 7) -> torch.Tensor:
    """Mean SSIM per image of (B,H,W) maps, each first scaled to [0, 1] (uniform window)."""
    def norm(t):
        t = t.float().flatten(1)
        lo, hi = t.amin(1, keepdim=True), t.amax(1, keepdim=True)
        return (t - lo) / (hi - lo).clamp(min=1e-12)

    H, W = a.shape[-2:]
    x = norm(a).view(-1, 1, H, W)
    y = norm(b).view(-1, 1, H, W)
    k = min(window, H, W)
    mu_x, mu_y = F.avg_pool2d(x, k, 1), F.avg_pool2d(y, k, 1)
    sxx = F.avg_pool2d(x * x, k, 1) - mu_x ** 2
    syy = F.avg_pool2d(y * y, k, 1) - mu_y ** 2
    sxy = F.avg_pool2d(x * y, k, 1) - mu_x * mu_y
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    s = ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x ** 2 + mu_y ** 2 + c1) * (sxx + syy + c2))
    return s.flatten(1).mean(1)


def default_cascade(model: nn.Module) -> List[str]:
    """Top-down list of blocks to randomise: the model's children with parameters, with
    Sequential / ModuleList children expanded one level (so ResNet stages and timm block
    stages are randomised one block at a time)."""
    names: List[str] = []
    for name, child in model.named_children():
        if not any(True for _ in child.parameters()):
            continue
        if isinstance(child, (nn.Sequential, nn.ModuleList)):
            names.extend(f"{name}.{n}" for n, c in child.named_children() if any(True for _ in c.parameters()))
        else:
            names.append(name)
    return names[::-1]


def _randomize(module: nn.Module, generator: torch.Generator) -> None:
    with torch.no_grad():
        for sub in module.modules():
            for pname, p in list(sub.named_parameters(recurse=False)):
                if p.dim() > 1:
                    fan_in = p[0].numel()
                    p.copy_(torch.randn(p.shape, generator=generator) .to(p) * (2.0 / fan_in) ** 0.5)
                else:
                    p.copy_(torch.randn(p.shape, generator=generator).to(p) * 0.1 + (1.0 if pname == "weight" else 0.0))


def cascading_randomization(
    model: nn.Module,
    methods: Dict[str, tuple],
    x: torch.Tensor,
    target: torch.Tensor,
    *,
    layers: Optional[Sequence[str]] = None,
    seed: int = 0,
    threshold: float = 0.5,
) -> Dict[str, Dict[str, object]]:
    """``methods``: name -> (class, spec_or_layer, params). Works on a deep copy of ``model``
    (the caller's model is untouched). For every method returns the layer names randomised
    cumulatively, per step the mean Spearman correlation of |map| and of the signed map and
    the mean SSIM against the original maps, ``final_per_image`` (the Spearman correlation of
    |map| of each image after the last step: the spread behind the flag) and
    ``weight_insensitive`` when their mean stays above ``threshold``."""
    work = copy.deepcopy(model).eval()
    cascade = list(layers) if layers is not None else default_cascade(work)
    modules = dict(work.named_modules())
    bound = {name: cls(work, sol, **params) for name, (cls, sol, params) in methods.items()}
    original = {name: m.attribute(x, target).maps for name, m in bound.items()}
    g = torch.Generator().manual_seed(seed)
    out = {name: {"layers": [], "spearman_abs": [], "spearman": [], "ssim": [], "final_per_image": []}
           for name in bound}
    for layer in cascade:
        _randomize(modules[layer], g)
        for name, m in bound.items():
            maps = m.attribute(x, target).maps
            rec = out[name]
            rec["layers"].append(layer)
            per_image = spearman(maps.abs(), original[name].abs())
            rec["final_per_image"] = [float(v) for v in per_image.cpu()]  # overwritten until the last step
            rec["spearman_abs"].append(float(per_image.mean()))
            rec["spearman"].append(float(spearman(maps, original[name]).mean()))
            rec["ssim"].append(float(ssim(maps, original[name]).mean()))
    for rec in out.values():
        rec["weight_insensitive"] = bool(rec["spearman_abs"] and rec["spearman_abs"][-1] > threshold)
    return out
