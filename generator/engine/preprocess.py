"""Turn uint8 images into the model's input, as its ModelSpec describes."""

from __future__ import annotations

from typing import List, Sequence, Tuple

import numpy as np
import torch
from PIL import Image

from generator.models.spec import ModelSpec

_RESAMPLE = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "nearest": Image.NEAREST}


def match_channels(pixels: np.ndarray, channels: int) -> np.ndarray:
    """Grayscale to RGB by repetition, RGB to grayscale by ITU-R 601 luma."""
    have = pixels.shape[2]
    if have == channels:
        return pixels
    if have == 1 and channels == 3:
        return np.repeat(pixels, 3, axis=2)
    if have == 3 and channels == 1:
        luma = pixels.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
        return (luma + 0.5).clip(0, 255).astype(np.uint8)[:, :, None]
    raise ValueError(f"cannot convert an image with {have} channels to {channels}")


def resize_and_crop(pixels: np.ndarray, spec: ModelSpec) -> np.ndarray:
    """Resize the shorter side to ``spec.resize`` (or straight to the input size) and centre-crop."""
    _, height, width = spec.input_size
    h, w = pixels.shape[:2]
    if (h, w) == (height, width):
        return pixels
    squeeze = pixels.shape[2] == 1
    img = Image.fromarray(pixels[:, :, 0] if squeeze else pixels)
    resample = _RESAMPLE.get(spec.interpolation, Image.BILINEAR)
    if spec.resize:
        scale = spec.resize / min(h, w)
        new_w, new_h = max(width, round(w * scale)), max(height, round(h * scale))
        img = img.resize((new_w, new_h), resample)
        left, top = (new_w - width) // 2, (new_h - height) // 2
        img = img.crop((left, top, left + width, top + height))
    else:
        img = img.resize((width, height), resample)
    out = np.asarray(img)
    return out[:, :, None] if squeeze else out


def display_images(images: Sequence[np.ndarray], spec: ModelSpec) -> np.ndarray:
    """The exact pixels the model sees, as uint8 ``B x H x W x C`` (for overlays and pages)."""
    return np.stack([resize_and_crop(match_channels(p, spec.channels), spec) for p in images])


def normalise(display: np.ndarray, spec: ModelSpec, device: "torch.device | str" = "cpu") -> torch.Tensor:
    """uint8 ``B x H x W x C`` -> float ``B x C x H x W``, ``(x / 255 - mean) / std``."""
    x = torch.from_numpy(np.ascontiguousarray(display)).to(device).permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(spec.mean, device=x.device).view(1, -1, 1, 1)
    std = torch.tensor(spec.std, device=x.device).view(1, -1, 1, 1)
    return (x - mean) / std


def prepare_batch(images: Sequence[np.ndarray], spec: ModelSpec, device: "torch.device | str" = "cpu"
                  ) -> Tuple[torch.Tensor, np.ndarray]:
    """``(model input, displayed uint8 pixels)`` for a list of images of any size and mode."""
    display = display_images(images, spec)
    return normalise(display, spec, device), display


def batches(n: int, size: int) -> List[slice]:
    return [slice(i, min(n, i + size)) for i in range(0, n, size)]
