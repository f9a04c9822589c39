"""Image parameterisations for feature visualisation.

A parameterisation owns the optimised tensors of a batch of images and turns them into
pixels in [0, 1] (through a sigmoid), shape ``(N, C, H, W)``. The recipe that makes
visualisations look structured rather than like adversarial noise is Lucid's
(Olah, Mordvintsev & Schubert, "Feature Visualization", Distill 2017):

* optimise in a *decorrelated* space: Fourier coefficients scaled by ``1/f`` (so every
  frequency has roughly equal energy, "whitening" natural-image statistics), and colours in
  the principal-component basis of natural-image colours;
* squash through a sigmoid so pixels stay in range without clipping (which kills gradients).

Every image of the batch gets its own random initialisation from its own seed, so an image's
result does not depend on which batch it was rendered in (see ``render``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

# Data, not code: the square root of the colour covariance of ImageNet pixels (RGB in
# [0, 1]), as published with Lucid (lucid/optvis/param/color.py,
# ``color_correlation_svd_sqrt``) and reused by Lucent. Its columns are the principal
# colour directions scaled by the square root of their variance: brightness (all channels
# alike) dominates, then a red-blue and a green-magenta axis.
IMAGENET_COLOR_CORRELATION_SQRT = (
    (0.26, 0.09, 0.02),
    (0.27, 0.00, -0.05),
    (0.27, -0.09, 0.03),
)


def color_correlation_matrix(channels: int) -> torch.Tensor:
    """The matrix that maps decorrelated colour coordinates to (centred) RGB.

    Normalised so its largest column has unit norm: then a unit step in any decorrelated
    coordinate moves pixels by at most about one unit, which keeps the learning rate
    meaningful. For anything other than 3 channels (grayscale models) there is no colour
    statistic to undo, so the identity is used.
    """
    if channels != 3:
        return torch.eye(channels)
    m = torch.tensor(IMAGENET_COLOR_CORRELATION_SQRT, dtype=torch.float32)
    return m / m.norm(dim=0).max()


def _decorrelate(t: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """Apply ``matrix`` to the channel axis of ``t`` (N, C, H, W)."""
    return torch.einsum("ij,njhw->nihw", matrix.to(t), t)


def _undecorrelate(t: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    return torch.einsum("ij,njhw->nihw", torch.linalg.inv(matrix.double()).to(t), t)


def _logit(x: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    x = x.clamp(eps, 1 - eps)
    return torch.log(x) - torch.log1p(-x)


class ImageParam(nn.Module):
    """Base class: ``forward()`` returns pixels in [0, 1], shape ``(N, C, H, W)``.

    Subclasses implement :meth:`raw` (unbounded, decorrelated values) and, where possible,
    :meth:`set_from_pixels` (the exact inverse, used to start from a photo and in tests).
    """

    def __init__(self, n: int, channels: int, height: int, width: int, decorrelate: bool = True):
        super().__init__()
        self.n, self.channels, self.height, self.width = n, channels, height, width
        self.decorrelate = decorrelate
        self.register_buffer("color_matrix", color_correlation_matrix(channels), persistent=False)

    def raw(self) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def set_raw(self, raw: torch.Tensor) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self) -> torch.Tensor:
        t = self.raw()
        if self.decorrelate:
            t = _decorrelate(t, self.color_matrix)
        return torch.sigmoid(t)

    @torch.no_grad()
    def set_from_pixels(self, pixels: torch.Tensor) -> None:
        """Set the parameters so that ``forward()`` returns ``pixels`` (N, C, H, W) in (0, 1)."""
        t = _logit(pixels.to(self.color_matrix.device, torch.float32))
        if self.decorrelate:
            t = _undecorrelate(t, self.color_matrix)
        self.set_raw(t)


def rfft2d_freqs(h: int, w: int) -> torch.Tensor:
    """Spatial frequency magnitude of every bin of a 2-D real FFT (cycles per pixel)."""
    fy = torch.fft.fftfreq(h)[:, None]
    fx = torch.fft.rfftfreq(w)[None, :]
    return torch.sqrt(fx * fx + fy * fy)


class FFTParam(ImageParam):
    """Fourier-space parameterisation with ``1/f**decay_power`` spectrum scaling.

    The optimised tensor holds real and imaginary parts of each image's spectrum. Scaling
    by ``1/f`` makes gradient steps change all spatial frequencies by comparable amounts in
    the image, instead of letting high frequencies (which dominate a pixel-space gradient)
    turn the image into noise. The ``/ 4`` is Lucid's empirical constant that puts the
    initial image at a sensible contrast.
    """

    magic = 4.0

    def __init__(
        self,
        n: int,
        channels: int,
        height: int,
        width: int,
        *,
        decay_power: float = 1.0,
        sd: float = 0.01,
        decorrelate: bool = True,
        generators: Optional[Sequence[torch.Generator]] = None,
    ):
        super().__init__(n, channels, height, width, decorrelate)
        freqs = rfft2d_freqs(height, width)
        scale = 1.0 / torch.clamp(freqs, min=1.0 / max(height, width)) ** decay_power
        self.register_buffer("scale", scale[None, None, :, :, None], persistent=False)
        shape = (channels, height, width // 2 + 1, 2)
        self.spectrum = nn.Parameter(_seeded_randn(n, shape, generators) * sd)

    def raw(self) -> torch.Tensor:
        spec = torch.view_as_complex((self.spectrum * self.scale).contiguous())
        img = torch.fft.irfftn(spec, s=(self.height, self.width), dim=(-2, -1), norm="ortho")
        return img / self.magic

    @torch.no_grad()
    def set_raw(self, raw: torch.Tensor) -> None:
        spec = torch.fft.rfftn(raw * self.magic, dim=(-2, -1), norm="ortho")
        self.spectrum.copy_(torch.view_as_real(spec) / self.scale)


class PixelParam(ImageParam):
    """Plain pixels (still through colour decorrelation and the sigmoid)."""

    def __init__(
        self,
        n: int,
        channels: int,
        height: int,
        width: int,
        *,
        sd: float = 0.01,
        decorrelate: bool = True,
        generators: Optional[Sequence[torch.Generator]] = None,
    ):
        super().__init__(n, channels, height, width, decorrelate)
        self.pixels = nn.Parameter(_seeded_randn(n, (channels, height, width), generators) * sd)

    def raw(self) -> torch.Tensor:
        return self.pixels

    @torch.no_grad()
    def set_raw(self, raw: torch.Tensor) -> None:
        self.pixels.copy_(raw)


class PyramidParam(ImageParam):
    """A Laplacian-pyramid parameterisation: the image is the sum of ``levels`` tensors at
    resolutions ``size / 2**k``, each bilinearly upsampled to full size.

    Coarse levels make low-frequency structure cheap to change, a middle ground between
    pixels and the Fourier basis (Lucid's ``laplacian_pyramid``).
    """

    def __init__(
        self,
        n: int,
        channels: int,
        height: int,
        width: int,
        *,
        levels: int = 4,
        sd: float = 0.01,
        decorrelate: bool = True,
        generators: Optional[Sequence[torch.Generator]] = None,
    ):
        super().__init__(n, channels, height, width, decorrelate)
        tensors: List[nn.Parameter] = []
        for k in range(levels):
            h, w = max(1, math.ceil(height / 2**k)), max(1, math.ceil(width / 2**k))
            tensors.append(nn.Parameter(_seeded_randn(n, (channels, h, w), generators, offset=k) * sd))
        self.levels = nn.ParameterList(tensors)

    def raw(self) -> torch.Tensor:
        out = self.levels[0]
        for t in list(self.levels)[1:]:
            out = out + F.interpolate(t, size=(self.height, self.width), mode="bilinear", align_corners=False)
        return out

    @torch.no_grad()
    def set_raw(self, raw: torch.Tensor) -> None:
        self.levels[0].copy_(raw)
        for t in list(self.levels)[1:]:
            t.zero_()


def _seeded_randn(
    n: int, shape: Sequence[int], generators: Optional[Sequence[torch.Generator]], offset: int = 0
) -> torch.Tensor:
    """``n`` standard-normal tensors of ``shape``, image ``i`` drawn from ``generators[i]``.

    Drawing per image (on the CPU, so the numbers do not depend on the device) is what makes
    an image's initialisation independent of its batch.
    """
    if generators is None:
        return torch.randn(n, *shape)
    if len(generators) != n:
        raise ValueError(f"need one generator per image ({n}), got {len(generators)}")
    return torch.stack([torch.randn(*shape, generator=g) for g in generators])


ParamFactory = Callable[..., ImageParam]

PARAMS = {"fft": FFTParam, "pixel": PixelParam, "pyramid": PyramidParam}


def make_param(
    kind: "str | ParamFactory",
    n: int,
    channels: int,
    size: "int | tuple[int, int]",
    generators: Optional[Sequence[torch.Generator]] = None,
    **kwargs,
) -> ImageParam:
    """Build a parameterisation by name (``fft`` | ``pixel`` | ``pyramid``) or factory."""
    h, w = (size, size) if isinstance(size, int) else size
    if isinstance(kind, str):
        if kind not in PARAMS:
            raise ValueError(f"unknown parameterisation {kind!r}; known: {', '.join(PARAMS)}")
        kind = PARAMS[kind]
    return kind(n, channels, h, w, generators=generators, **kwargs)


@dataclass
class Normalizer:
    """Map pixels in [0, 1] to the model's input: ``(pixels - mean) / std`` per channel."""

    mean: torch.Tensor
    std: torch.Tensor

    @classmethod
    def from_spec(cls, spec, device: "torch.device | str" = "cpu") -> "Normalizer":
        c = spec.channels
        mean = torch.as_tensor(spec.mean, dtype=torch.float32)
        std = torch.as_tensor(spec.std, dtype=torch.float32)
        if mean.numel() == 1:
            mean = mean.expand(c)
        if std.numel() == 1:
            std = std.expand(c)
        if mean.numel() != c or std.numel() != c:
            raise ValueError(f"spec {spec.id!r}: mean/std have {mean.numel()}/{std.numel()} entries for {c} channels")
        return cls(mean.reshape(1, c, 1, 1).to(device), std.reshape(1, c, 1, 1).to(device))

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        return (pixels - self.mean) / self.std

    def inverse(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.std + self.mean
