"""Continuous measures of images, the targets of regression concept vectors (Graziani et al. 2018).

Every measure takes uint8 images ``B x H x W x C`` (C = 1 or 3, as the model sees them) and
returns a float64 value per image; each is defined so that it can be checked by hand:

* ``brightness``: mean luma (ITU-R BT.601, ``0.299 R + 0.587 G + 0.114 B``), 0 black .. 1 white.
* ``contrast``: RMS contrast, the standard deviation of luma over the image (0 .. 0.5).
* ``colourfulness``: Hasler and Süsstrunk 2003, "Measuring colourfulness in natural images"
  (SPIE 5007): with ``rg = R - G`` and ``yb = (R + G) / 2 - B`` (channels in 0 .. 1),
  ``sqrt(std(rg)² + std(yb)²) + 0.3 sqrt(mean(rg)² + mean(yb)²)``; 0 for gray images.
* ``texture_energy``: mean squared response of luma to the 3 x 3 Laplacian (replicated edges),
  an edge/texture energy in the spirit of Laws' texture energy measures: 0 for flat images.
* ``area``: the fraction of the image a mask covers (given per image, ``B x H x W`` bool).
"""

from __future__ import annotations

from typing import Callable, Dict, Optional

import numpy as np
import torch

LUMA = (0.299, 0.587, 0.114)


def _float(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    x = torch.as_tensor(np.asarray(images) if not isinstance(images, torch.Tensor) else images)
    if x.dim() == 3:
        x = x[..., None]
    return x.double() / 255.0


def luma(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """``B x H x W`` luma in 0 .. 1."""
    x = _float(images)
    if x.shape[-1] == 1:
        return x[..., 0]
    return x[..., 0] * LUMA[0] + x[..., 1] * LUMA[1] + x[..., 2] * LUMA[2]


def brightness(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    return luma(images).mean((1, 2))


def contrast(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    y = luma(images).flatten(1)
    return y.std(1, unbiased=False)


def colourfulness(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    x = _float(images)
    if x.shape[-1] == 1:
        return torch.zeros(x.shape[0], dtype=torch.float64)
    r, g, b = x[..., 0].flatten(1), x[..., 1].flatten(1), x[..., 2].flatten(1)
    rg, yb = r - g, (r + g) / 2 - b
    spread = (rg.std(1, unbiased=False) ** 2 + yb.std(1, unbiased=False) ** 2).sqrt()
    centre = (rg.mean(1) ** 2 + yb.mean(1) ** 2).sqrt()
    return spread + 0.3 * centre


def texture_energy(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    y = luma(images)[:, None]
    kernel = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]], dtype=y.dtype)[None, None]
    padded = torch.nn.functional.pad(y, (1, 1, 1, 1), mode="replicate")
    return torch.nn.functional.conv2d(padded, kernel).pow(2).mean((1, 2, 3))


def area(masks: np.ndarray | torch.Tensor) -> torch.Tensor:
    m = torch.as_tensor(np.asarray(masks) if not isinstance(masks, torch.Tensor) else masks)
    return m.flatten(1).double().mean(1)


#: name -> (function of uint8 images, what it is, in words for the pages)
MEASURES: Dict[str, tuple] = {
    "brightness": (brightness, "mean luma (BT.601), 0 black to 1 white"),
    "contrast": (contrast, "RMS contrast: standard deviation of luma"),
    "colourfulness": (colourfulness, "Hasler & Süsstrunk 2003 colourfulness (0 for gray images)"),
    "texture_energy": (texture_energy, "mean squared 3 × 3 Laplacian of luma (edge and texture energy)"),
}
AREA_DESCRIPTION = "fraction of the image covered by the mask"


def measure(name: str, images: np.ndarray | torch.Tensor, masks: Optional[np.ndarray] = None) -> torch.Tensor:
    """The measure ``name`` of every image (``area`` needs ``masks``)."""
    if name == "area":
        if masks is None:
            raise ValueError("the 'area' measure needs masks")
        return area(masks)
    fn: Callable = MEASURES[name][0]
    return fn(images)
