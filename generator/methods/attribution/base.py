"""Base interface of attribution methods: bind a model (and layer) once, then ``attribute``."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, Optional, Union

import torch
import torch.nn.functional as F
from torch import nn

from ... import catalogue
from ...catalogue.attribution import COMMON
from ...engine.batching import as_target_tensor, eval_mode
from ...engine.rules import frozen_parameters
from ...models.spec import ModelSpec
from ...registry import Registry

ATTRIBUTION_METHODS: "Registry[type]" = Registry("attribution method")

#: How a (B,C,H,W) attribution becomes the (B,H,W) map, by name.
REDUCTIONS = {
    "max_abs": "maximum over channels of the absolute value (unsigned)",
    "sum": "sum over channels (signed)",
    "max": "maximum over channels (the raw values are non-negative)",
    "mean": "mean over channels (occlusion: identical in every channel)",
    "upsampled": "CAM at layer resolution, bilinearly upsampled to the input (non-negative)",
}


def reduce_channels(raw: torch.Tensor, how: str) -> torch.Tensor:
    if how == "max_abs":
        return raw.abs().amax(dim=1)
    if how == "sum":
        return raw.sum(dim=1)
    if how == "max":
        return raw.amax(dim=1)
    if how == "mean":
        return raw.mean(dim=1)
    raise ValueError(f"unknown channel reduction {how!r}")


@dataclass
class AttributionResult:
    """What every method returns.

    ``maps``: (B,H,W) float32 at input resolution, signed where the method is signed, reduced
    over channels as ``reduction`` says. ``raw``: the (B,C,H,W) attribution before reduction,
    where the method has one. ``extras``: method-specific values (completeness gap, CAM at layer
    resolution, an alpha sweep ...).
    """

    method: str
    maps: torch.Tensor
    targets: torch.Tensor
    signed: bool
    reduction: str
    raw: Optional[torch.Tensor] = None
    extras: Dict[str, Any] = field(default_factory=dict)

    def cpu(self) -> "AttributionResult":
        move = lambda v: v.detach().cpu() if isinstance(v, torch.Tensor) else v  # noqa: E731
        return AttributionResult(
            self.method, move(self.maps), move(self.targets), self.signed, self.reduction,
            move(self.raw), {k: move(v) for k, v in self.extras.items()},
        )


SpecOrLayer = Union[ModelSpec, str, None]


class AttributionMethod:
    """Base class. Subclasses set ``name``, ``signed``, ``reduction`` and implement
    ``_attribute(x, target) -> AttributionResult``; :func:`register` fills ``version``,
    ``defaults`` and ``common_defaults`` from the method's :mod:`generator.catalogue` entry,
    the one place where they are declared (and typed).

    ``spec_or_layer``: the model's :class:`ModelSpec` (used for the pixel range of baselines and
    the default CAM layer) or, for CAM methods, a layer name. Common parameters:
    ``max_batch`` (items per forward/backward; chunks are halved on out-of-memory) and
    ``precision`` ('fp32' or 'bf16' autocast).
    """

    name: str = ""
    version: str = "1"
    signed: bool = True
    reduction: str = "sum"
    defaults: Dict[str, Any] = {}
    common_defaults: Dict[str, Any] = {p.name: p.default for p in COMMON}

    def __init__(self, model: nn.Module, spec_or_layer: SpecOrLayer = None, **params: Any):
        self.model = model
        self.spec: Optional[ModelSpec] = spec_or_layer if isinstance(spec_or_layer, ModelSpec) else None
        self.layer_name: Optional[str] = spec_or_layer if isinstance(spec_or_layer, str) else None
        known = {**self.common_defaults, **self.defaults}
        unknown = sorted(set(params) - set(known))
        if unknown:
            raise TypeError(f"{self.name}: unknown parameter(s) {unknown}; known: {sorted(known)}")
        self.params: Dict[str, Any] = {**known, **params}

    # ------------------------------------------------------------------ helpers
    @property
    def max_batch(self) -> int:
        return int(self.params["max_batch"])

    @property
    def precision(self) -> str:
        return str(self.params["precision"])

    @contextlib.contextmanager
    def _session(self) -> Iterator[None]:
        with eval_mode(self.model), frozen_parameters(self.model):
            yield

    def pixel_range(self, x: torch.Tensor):
        """(low, high) of model inputs for pixel values 0 and 1, shaped (1,C,1,1)."""
        c = x.shape[1]
        if self.spec is None:
            return torch.zeros(1, c, 1, 1, device=x.device), torch.ones(1, c, 1, 1, device=x.device)
        mean = torch.tensor(self.spec.mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(self.spec.std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        return (0 - mean) / std, (1 - mean) / std

    def make_baseline(self, x: torch.Tensor, kind: Any, *, seed: int = 0, blur_sigma: float = 10.0) -> torch.Tensor:
        """Baselines: 'black' (pixel value 0, i.e. ``-mean/std``; zeros without a spec),
        'zeros' (zero model input), 'blur' (Gaussian blur of the input), 'uniform' (uniform
        noise in pixel space, seeded), or a tensor broadcastable to ``x``."""
        if isinstance(kind, torch.Tensor):
            return kind.to(x.device, x.dtype).expand_as(x)
        if isinstance(kind, (int, float)):
            return torch.full_like(x, float(kind))
        low, high = self.pixel_range(x)
        if kind == "black":
            return low.expand_as(x).clone()
        if kind == "zeros":
            return torch.zeros_like(x)
        if kind == "blur":
            return gaussian_blur(x, blur_sigma)
        if kind == "uniform":
            g = torch.Generator(device="cpu").manual_seed(seed)
            u = torch.rand(x.shape, generator=g).to(x.device, x.dtype)
            return low + u * (high - low)
        raise ValueError(f"unknown baseline {kind!r}; use black, zeros, blur, uniform or a tensor")

    # ------------------------------------------------------------------ API
    def attribute(self, x: torch.Tensor, target) -> AttributionResult:
        """Attribute the logit of ``target`` (one int, or one per image) to the input ``x``."""
        if x.dim() != 4:
            raise ValueError(f"expected a (B,C,H,W) batch, got shape {tuple(x.shape)}")
        t = as_target_tensor(target, x.shape[0], x.device)
        with self._session():
            result = self._attribute(x.detach(), t)
        result.maps = result.maps.float()
        return result

    def _attribute(self, x: torch.Tensor, target: torch.Tensor) -> AttributionResult:
        raise NotImplementedError

    def _result(self, maps, target, raw=None, **extras) -> AttributionResult:
        return AttributionResult(self.name, maps.float(), target, self.signed, self.reduction,
                                 None if raw is None else raw.float(), extras)


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur with reflect padding (the kernel is clipped to the image)."""
    if sigma <= 0:
        return x.clone()
    radius = int(min(3 * sigma, (min(x.shape[-2:]) - 1)))
    if radius < 1:
        return x.clone()
    coords = torch.arange(-radius, radius + 1, device=x.device, dtype=torch.float32)
    k = torch.exp(-0.5 * (coords / sigma) ** 2)
    k = (k / k.sum()).to(x.dtype)
    c = x.shape[1]
    y = F.pad(x, (radius, radius, 0, 0), mode="reflect")
    y = F.conv2d(y, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    y = F.pad(y, (0, 0, radius, radius), mode="reflect")
    return F.conv2d(y, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def register(cls):
    """Class decorator: add to :data:`ATTRIBUTION_METHODS` under ``cls.name``, with the
    ``version``, ``defaults`` and ``common_defaults`` of its catalogue entry.

    A class that declares any of them itself is refused: a second copy of a default is how a
    cache key and the computation drift apart."""
    entry = catalogue.get(cls.name, "attribution")
    # classes registered before (a subclass of a registered method) carry their entry's values
    own = [attr for klass in cls.__mro__
           if klass not in (AttributionMethod, object) and "_catalogue_entry" not in vars(klass)
           for attr in ("version", "defaults", "common_defaults") if attr in vars(klass)]
    if own:
        raise TypeError(f"{cls.__name__} declares {sorted(set(own))}; they come from the catalogue entry "
                        f"{cls.name!r} (generator/catalogue)")
    cls.version = entry.version
    cls.defaults = entry.defaults
    cls.common_defaults = entry.common_defaults
    cls._catalogue_entry = entry
    ATTRIBUTION_METHODS.add(cls.name, cls, entry.summary)
    return cls
