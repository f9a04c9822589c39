"""Transformation robustness, batched: every image gets its own random transform per step.

Lucid's standard set (pad 12, jitter 8, scale 0.9-1.1, rotate -10..10 degrees, jitter 4)
makes a visualisation survive small shifts, zooms and rotations, which removes the
high-frequency adversarial patterns a network otherwise responds to. Lucid applies one
random draw to the whole batch and lets the image size change along the chain; here the
whole chain is composed into one affine map per image (a window into the padded image) and
sampled with a single ``affine_grid`` + ``grid_sample`` at a fixed output size. That keeps
the batch rectangular while each image gets its own draw, and works for models that need an
exact input size (a Fashion-MNIST CNN with a linear head).

Random draws are made up front for all steps, per image, from that image's own
``numpy.random.Generator``: an image's transforms do not depend on its batch.

Coordinates: a 3x3 matrix maps normalised output coordinates ([-1, 1], pixel edges,
``align_corners=False``) of the current canvas to those of the previous one; composing all
of them maps output coordinates to the coordinates of the parameterised image.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F


class Transform:
    """One step of the chain. ``matrices`` returns (steps, 3, 3) for one image and the new
    canvas size; ``rng`` is that image's generator."""

    def matrices(self, rng: np.random.Generator, steps: int, hw: Tuple[int, int]) -> Tuple[np.ndarray, Tuple[int, int]]:
        raise NotImplementedError

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v}" for k, v in vars(self).items())
        return f"{type(self).__name__}({fields})"


def _eye(steps: int) -> np.ndarray:
    return np.tile(np.eye(3), (steps, 1, 1))


@dataclass(repr=False)
class Pad(Transform):
    """Enlarge the canvas by ``pixels`` on every side, filled with the fill value (grey)."""

    pixels: int

    def matrices(self, rng, steps, hw):
        h, w = hw
        m = _eye(steps)
        m[:, 0, 0] = (w + 2 * self.pixels) / w
        m[:, 1, 1] = (h + 2 * self.pixels) / h
        return m, (h + 2 * self.pixels, w + 2 * self.pixels)


@dataclass(repr=False)
class Jitter(Transform):
    """Random crop that is ``pixels`` smaller than the canvas (a random integer shift)."""

    pixels: int

    def matrices(self, rng, steps, hw):
        h, w = hw
        d = self.pixels
        ox = rng.integers(0, d + 1, size=steps)
        oy = rng.integers(0, d + 1, size=steps)
        m = _eye(steps)
        m[:, 0, 0] = (w - d) / w
        m[:, 1, 1] = (h - d) / h
        m[:, 0, 2] = (2 * ox - d) / w
        m[:, 1, 2] = (2 * oy - d) / h
        return m, (h - d, w - d)


@dataclass(repr=False)
class RandomScale(Transform):
    """Zoom by a factor drawn from ``scales`` (content ``s`` times larger), about the centre."""

    scales: Sequence[float]

    def matrices(self, rng, steps, hw):
        s = rng.choice(np.asarray(self.scales, dtype=np.float64), size=steps)
        m = _eye(steps)
        m[:, 0, 0] = 1.0 / s
        m[:, 1, 1] = 1.0 / s
        return m, hw


@dataclass(repr=False)
class RandomRotate(Transform):
    """Rotate by an angle (degrees) drawn from ``angles``, about the centre."""

    angles: Sequence[float]

    def matrices(self, rng, steps, hw):
        h, w = hw
        a = np.deg2rad(rng.choice(np.asarray(self.angles, dtype=np.float64), size=steps))
        c, s = np.cos(a), np.sin(a)
        # Rotate in pixel units: normalised x and y have different pixel sizes when h != w.
        m = _eye(steps)
        m[:, 0, 0] = c
        m[:, 0, 1] = -s * h / w
        m[:, 1, 0] = s * w / h
        m[:, 1, 1] = c
        return m, hw


def pad(pixels: int) -> Pad:
    return Pad(int(pixels))


def jitter(pixels: int) -> Jitter:
    return Jitter(int(pixels))


def random_scale(scales: Sequence[float]) -> RandomScale:
    return RandomScale(tuple(float(s) for s in scales))


def random_rotate(angles: Sequence[float]) -> RandomRotate:
    return RandomRotate(tuple(float(a) for a in angles))


def standard_transforms() -> List[Transform]:
    """Lucid's ``transform.standard_transforms``."""
    return [
        pad(12),
        jitter(8),
        random_scale([1 + (i - 5) / 50.0 for i in range(11)]),
        random_rotate(list(range(-10, 11)) + 5 * [0]),
        jitter(4),
    ]


def small_transforms(size: int) -> List[Transform]:
    """The standard set with pixel amounts scaled to a small image (28 px Fashion-MNIST:
    pad 2, jitter 1...); Lucid's pixel counts assume about 128-224 px inputs."""
    f = size / 128.0
    return [
        pad(max(1, round(12 * f))),
        jitter(max(1, round(8 * f))),
        random_scale([1 + (i - 5) / 50.0 for i in range(11)]),
        random_rotate(list(range(-10, 11)) + 5 * [0]),
        jitter(max(1, round(4 * f))),
    ]


def transform_matrices(
    transforms: Sequence[Transform], rngs: Sequence[np.random.Generator], steps: int, hw: Tuple[int, int]
) -> torch.Tensor:
    """Composed affine matrices, shape (steps, N, 2, 3), float32 (for ``affine_grid``).

    Transforms are drawn in order for each image from its own generator: image ``i``'s
    matrices depend on ``rngs[i]`` alone.
    """
    per_image = []
    for rng in rngs:
        a = _eye(steps)
        cur = hw
        for t in transforms:
            m, cur = t.matrices(rng, steps, cur)
            a = a @ m
        per_image.append(a[:, :2, :])
    return torch.from_numpy(np.stack(per_image, axis=1).astype(np.float32))


def apply_affine(pixels: torch.Tensor, theta: torch.Tensor, out_hw: Tuple[int, int], fill: float = 0.5) -> torch.Tensor:
    """Sample ``pixels`` (N, C, H, W) through per-image affine maps ``theta`` (N, 2, 3).

    Outside the image the value is ``fill``; bilinear interpolation of values in [0, 1]
    with a fill in [0, 1] stays in [0, 1].
    """
    n, c = pixels.shape[:2]
    grid = F.affine_grid(theta.to(pixels), [n, c, out_hw[0], out_hw[1]], align_corners=False)
    out = F.grid_sample(pixels - fill, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out + fill


class TransformSchedule:
    """All steps' transforms of one batch, drawn up front; ``schedule(pixels, step)``."""

    def __init__(
        self,
        transforms: Sequence[Transform],
        rngs: Sequence[np.random.Generator],
        steps: int,
        hw: Tuple[int, int],
        device: "torch.device | str" = "cpu",
        fill: float = 0.5,
    ):
        self.hw = hw
        self.fill = fill
        self.identity = len(transforms) == 0
        self.theta = None if self.identity else transform_matrices(transforms, rngs, steps, hw).to(device)

    def __call__(self, pixels: torch.Tensor, step: int) -> torch.Tensor:
        if self.identity:
            return pixels
        return apply_affine(pixels, self.theta[step], self.hw, self.fill)


def resolve_transforms(spec: "str | Sequence[Transform] | None", size: int) -> List[Transform]:
    """``"standard"`` (Lucid's, scaled for images under 96 px), ``"none"``/None, or a list."""
    if spec is None or spec == "none":
        return []
    if spec == "standard":
        return standard_transforms() if size >= 96 else small_transforms(size)
    if isinstance(spec, str):
        raise ValueError(f"unknown transform set {spec!r}; use 'standard', 'none' or a list of transforms")
    return list(spec)


__all__ = [
    "Transform",
    "Pad",
    "Jitter",
    "RandomScale",
    "RandomRotate",
    "pad",
    "jitter",
    "random_scale",
    "random_rotate",
    "standard_transforms",
    "small_transforms",
    "transform_matrices",
    "apply_affine",
    "TransformSchedule",
    "resolve_transforms",
]
