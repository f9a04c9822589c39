"""Procedural concept images, drawn offline and seeded: the default concepts of the report.

TCAV (Kim et al. 2018) needs a folder of images per concept. Offline, with no Broden or
ImageNet at hand, the report draws concepts whose meaning is plain from how they are made:

* ``stripes``: parallel bands, a random angle, period 6-20 % of the side, two random colours
  of clearly different luma;
* ``dots``: discs on a jittered grid (spacing 12-22 % of the side, radius 25-40 % of it);
* ``checkerboard``: squares of 8-18 % of the side, rotated by a random angle;
* ``zigzag``: bands that fold back every half period (a triangle wave), random angle;
* colour fields ``red``, ``green``, ``blue``, ``yellow``, ``white``, ``black``: a flat colour
  with slow, low-amplitude noise (so a field is not one single value).

Textures pick their two colours at random, so what they share is the *pattern*, not a colour.
Every image is a pure function of (concept, size, index, seed).
"""

from __future__ import annotations

import math
from typing import Callable, Dict, List, Tuple

import numpy as np

TEXTURES = ("stripes", "dots", "checkerboard", "zigzag")
COLOURS: Dict[str, Tuple[int, int, int]] = {
    "red": (200, 30, 30), "green": (40, 160, 50), "blue": (40, 60, 200), "yellow": (230, 210, 40),
    "white": (240, 240, 240), "black": (15, 15, 15),
}
CONCEPTS = TEXTURES + tuple(COLOURS)
CATEGORY = {**{t: "texture" for t in TEXTURES}, **{c: "colour" for c in COLOURS}}


def _two_colours(rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
    while True:
        a, b = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
        la, lb = a @ (0.299, 0.587, 0.114), b @ (0.299, 0.587, 0.114)
        if abs(la - lb) > 80:  # a pattern must be visible in luma too (gray models)
            return a.astype(np.float64), b.astype(np.float64)


def _coords(size: int, rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates in units of the side, rotated by a random angle about the centre."""
    t = rng.uniform(0, math.pi)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) / size - 0.5
    return xx * math.cos(t) + yy * math.sin(t), -xx * math.sin(t) + yy * math.cos(t)


def _stripes(size: int, rng: np.random.Generator) -> np.ndarray:
    u, _ = _coords(size, rng)
    period = rng.uniform(0.06, 0.20)
    return ((u / period + rng.uniform()) % 1.0) < 0.5


def _checkerboard(size: int, rng: np.random.Generator) -> np.ndarray:
    u, v = _coords(size, rng)
    cell = rng.uniform(0.08, 0.18)
    return (np.floor(u / cell + rng.uniform()) + np.floor(v / cell + rng.uniform())) % 2 == 0


def _zigzag(size: int, rng: np.random.Generator) -> np.ndarray:
    u, v = _coords(size, rng)
    period = rng.uniform(0.10, 0.22)
    amplitude = rng.uniform(0.4, 0.8) * period
    wave = amplitude * (2 * np.abs((v / period) % 1.0 - 0.5))  # triangle wave along v
    return (((u + wave) / (period * 0.7) + rng.uniform()) % 1.0) < 0.5


def _dots(size: int, rng: np.random.Generator) -> np.ndarray:
    spacing = rng.uniform(0.12, 0.22) * size
    radius = rng.uniform(0.25, 0.40) * spacing
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    out = np.zeros((size, size), dtype=bool)
    offset = rng.uniform(0, spacing, 2)
    for cy in np.arange(-spacing + offset[0], size + spacing, spacing):
        for cx in np.arange(-spacing + offset[1], size + spacing, spacing):
            jy, jx = rng.uniform(-0.15, 0.15, 2) * spacing
            out |= (yy - cy - jy) ** 2 + (xx - cx - jx) ** 2 <= radius ** 2
    return out


PATTERNS: Dict[str, Callable[[int, np.random.Generator], np.ndarray]] = {
    "stripes": _stripes, "dots": _dots, "checkerboard": _checkerboard, "zigzag": _zigzag,
}


def _field(colour: Tuple[int, int, int], size: int, rng: np.random.Generator) -> np.ndarray:
    coarse = rng.normal(0, 12, (4, 4, 3))
    # bilinear-ish upsampling by repetition then a box blur: slow variation, no new hues
    noise = np.kron(coarse, np.ones((size // 4 + 1, size // 4 + 1, 1)))[:size, :size]
    return np.asarray(colour, dtype=np.float64)[None, None] + noise


def draw(concept: str, size: int, count: int, seed: int = 0, channels: int = 3) -> np.ndarray:
    """``count`` uint8 images ``size x size x channels`` of ``concept``; image i depends only
    on (concept, size, i, seed)."""
    if concept not in CONCEPTS:
        raise ValueError(f"unknown procedural concept {concept!r} (known: {', '.join(CONCEPTS)})")
    out: List[np.ndarray] = []
    salt = sum(ord(ch) * 31 ** i for i, ch in enumerate(concept)) % (2 ** 31)
    for i in range(count):
        rng = np.random.default_rng([int(seed), salt, int(size), i])
        if concept in PATTERNS:
            on = PATTERNS[concept](size, rng)
            a, b = _two_colours(rng)
            img = np.where(on[:, :, None], a[None, None], b[None, None])
        else:
            img = _field(COLOURS[concept], size, rng)
        img = np.clip(img + 0.5, 0, 255).astype(np.uint8)
        if channels == 1:
            img = np.clip(img.astype(np.float64) @ np.array([0.299, 0.587, 0.114]) + 0.5, 0, 255
                          ).astype(np.uint8)[:, :, None]
        out.append(img)
    return np.stack(out) if out else np.zeros((0, size, size, channels), dtype=np.uint8)


def random_crops(images: List[np.ndarray], size: int, count: int, seed: int = 0,
                 scale: Tuple[float, float] = (0.15, 0.6)) -> np.ndarray:
    """``count`` random square crops of ``images`` (each a random image, a side of ``scale`` of
    its shorter side, a random place), resized to ``size``: random counterexamples drawn from
    the user's own data."""
    from PIL import Image

    rng = np.random.default_rng([int(seed), 7919, int(size)])
    out = []
    for _ in range(count):
        pixels = images[int(rng.integers(len(images)))]
        h, w = pixels.shape[:2]
        side = max(2, int(round(rng.uniform(*scale) * min(h, w))))
        top, left = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
        crop = pixels[top:top + side, left:left + side]
        mode_gray = crop.shape[2] == 1
        pic = Image.fromarray(crop[:, :, 0] if mode_gray else crop).resize((size, size), Image.BILINEAR)
        arr = np.asarray(pic)
        out.append(arr[:, :, None] if mode_gray else arr)
    return np.stack(out)
