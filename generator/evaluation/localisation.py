"""Localisation metrics when a dataset provides object masks or boxes."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def boxes_to_masks(boxes: torch.Tensor, size) -> torch.Tensor:
    """(B,4) boxes (x0, y0, x1, y1, inclusive pixels) -> (B,H,W) bool masks."""
    H, W = size
    ys = torch.arange(H, device=boxes.device).view(1, -1, 1)
    xs = torch.arange(W, device=boxes.device).view(1, 1, -1)
    b = boxes.view(-1, 4, 1, 1)
    return (xs >= b[:, 0]) & (xs <= b[:, 2]) & (ys >= b[:, 1]) & (ys <= b[:, 3])


def pointing_game(maps: torch.Tensor, masks: torch.Tensor, tolerance: int = 15) -> torch.Tensor:
    """Zhang et al. 2016: a hit when the map's maximum lies within ``tolerance`` pixels of the
    mask (the mask is dilated by a square of that radius). Returns (B,) bool."""
    B, H, W = maps.shape
    idx = maps.flatten(1).argmax(1)
    m = masks.float().unsqueeze(1)
    if tolerance > 0:
        m = F.max_pool2d(m, 2 * tolerance + 1, stride=1, padding=tolerance)
    return m.flatten(1).gather(1, idx.view(-1, 1)).squeeze(1) > 0


def energy_in_mask(maps: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Share of the positive attribution that falls inside the mask (Wang et al. 2020,
    Score-CAM's energy-based pointing game). Returns (B,) in [0, 1]."""
    pos = maps.float().clamp(min=0).flatten(1)
    inside = (pos * masks.flatten(1).float()).sum(1)
    return inside / pos.sum(1).clamp(min=1e-12)
