"""Deletion and insertion curves (Petsiuk et al. 2018, RISE; Samek et al. 2017 pixel flipping).

Pixels (or patches) are removed from the image in order of decreasing attribution (deletion)
or revealed on a blurred/black canvas (insertion); the target class probability is recorded
after each step. A faithful map makes the deletion curve fall fast (low AUC) and the insertion
curve rise fast (high AUC). Every (method, image, step) image is built on the device and
evaluated in large batches.
"""

from __future__ import annotations

from typing import Dict

import torch
import torch.nn.functional as F
from torch import nn

from ..engine.batching import autocast_for, eval_mode, fast_layout, run_chunked, select_target


def auc(curves: torch.Tensor) -> torch.Tensor:
    """Trapezoidal area under curves (..., S+1) sampled at equal fractions of [0, 1]."""
    n = curves.shape[-1] - 1
    return (curves[..., 1:] + curves[..., :-1]).sum(-1) / (2 * n)


def _baseline(x: torch.Tensor, kind, blur_sigma: float) -> torch.Tensor:
    if isinstance(kind, torch.Tensor):
        return kind.to(x.device, x.dtype).expand_as(x)
    if isinstance(kind, (int, float)):
        return torch.full_like(x, float(kind))
    if kind == "zeros":
        return torch.zeros_like(x)
    if kind == "blur":
        from ..methods.attribution.base import gaussian_blur

        return gaussian_blur(x, blur_sigma)
    if kind == "mean":
        return x.mean(dim=(2, 3), keepdim=True).expand_as(x).clone()
    raise ValueError(f"unknown baseline {kind!r} (zeros, blur, mean, a number or a tensor)")


def pixel_ranks(maps: torch.Tensor, patch: int = 1) -> torch.Tensor:
    """(..., H*W) rank of every pixel (0 = most important). With ``patch`` > 1 the map is
    averaged over patch x patch cells and whole cells are ranked (ties: lower index first)."""
    lead = maps.shape[:-2]
    H, W = maps.shape[-2:]
    m = maps.reshape(-1, 1, H, W).float()
    if patch > 1:
        m = F.avg_pool2d(m, patch, patch, ceil_mode=True)
        hc, wc = m.shape[-2:]
        order = torch.argsort(m.flatten(1), dim=1, descending=True, stable=True)
        cell_rank = torch.empty_like(order)
        cell_rank.scatter_(1, order, torch.arange(order.shape[1], device=m.device).expand_as(order))
        cell_rank = cell_rank.view(-1, 1, hc, wc).float()
        up = F.interpolate(cell_rank, scale_factor=patch, mode="nearest")[..., :H, :W]
        # pixels of cell r get ranks r*patch^2 ... so whole cells go together
        within = torch.arange(H * W, device=m.device).view(1, 1, H, W).float() / (H * W)
        key = (up + within).flatten(1)
        order = torch.argsort(key, dim=1)
    else:
        order = torch.argsort(m.flatten(1), dim=1, descending=True, stable=True)
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(H * W, device=m.device).expand_as(order))
    return ranks.view(*lead, H * W)


def deletion_insertion(
    model: nn.Module,
    x: torch.Tensor,
    maps: Dict[str, torch.Tensor],
    target: torch.Tensor,
    *,
    steps: int = 20,
    patch: int = 1,
    modes=("deletion", "insertion"),
    deletion_baseline="zeros",
    insertion_baseline="blur",
    blur_sigma: float = 10.0,
    output: str = "probability",
    max_batch: int = 256,
    precision: str = "fp32",
) -> Dict[str, Dict[str, torch.Tensor]]:
    """Curves and AUCs for every method in ``maps`` (name -> (B,H,W)).

    Returns ``{mode: {"curves": {method: (B, steps+1)}, "auc": {method: (B,)},
    "fractions": (steps+1,)}}``. Step k removes (deletion) or reveals (insertion) the
    ``round(k/steps * H*W)`` most important pixels; ``output`` is 'probability' (softmax) or 'logit'.
    """
    names = list(maps)
    B, C, H, W = x.shape
    M, S1 = len(names), steps + 1
    target = target.to(x.device).long().view(-1)
    ranks = pixel_ranks(torch.stack([maps[n].to(x.device) for n in names]), patch)  # (M,B,HW)
    counts = torch.round(torch.linspace(0, 1, S1, device=x.device) * H * W).long()
    result: Dict[str, Dict[str, torch.Tensor]] = {}
    with eval_mode(model):
        for mode in modes:
            if mode == "deletion":
                start, end = x, _baseline(x, deletion_baseline, blur_sigma)
            elif mode == "insertion":
                start, end = _baseline(x, insertion_baseline, blur_sigma), x
            else:
                raise ValueError(f"unknown mode {mode!r}")
            scores = torch.empty(M * B * S1, device=x.device)

            def chunk(a: int, b: int) -> None:
                idx = torch.arange(a, b, device=x.device)  # (method, image, step), step fastest
                s_idx = idx % S1
                b_idx = (idx // S1) % B
                m_idx = idx // (S1 * B)
                changed = ranks[m_idx, b_idx] < counts[s_idx].view(-1, 1)  # (n,HW)
                imgs = torch.where(changed.view(-1, 1, H, W), end[b_idx], start[b_idx])
                with torch.inference_mode(), autocast_for(x.device, precision):
                    out = model(fast_layout(imgs)).float()
                if output == "probability":
                    out = out.softmax(1)
                scores[a:b] = select_target(out, target[b_idx])

            run_chunked(M * B * S1, max_batch, chunk)
            curves = scores.view(M, B, S1)
            result[mode] = {
                "curves": {n: curves[i] for i, n in enumerate(names)},
                "auc": {n: auc(curves[i]) for i, n in enumerate(names)},
                "fractions": counts.float() / (H * W),
            }
    return result
