"""Interpretable binary features for rule surrogates, each with a readable name.

* :class:`RegionIntensityFeatures`: for grayscale images, "<region> <dark|bright>" predicates
  on the mean intensity of horizontal bands, vertical columns, grid cells and the whole image,
  thresholded at quantiles of the fitting set ("upper band mostly dark": the band's mean
  intensity is among the lowest 25% of the data set).
* :class:`ChannelFeatures`: for any model, "channel k of layer L fires above its q-quantile",
  on spatially mean-pooled activations (:func:`pooled_activations` computes them with hooks
  that are always removed).
* :class:`TabularFeatures`: user attributes: booleans as they are, categories as
  "attr = value", numbers as "attr low / high" at quantiles.

Every builder is fitted on one set (thresholds from quantiles) and then applied to any set with
``transform``, so train and test features mean the same thing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import nn

from generator.engine.hooks import capture_activations, run_until_stopped
from generator.engine.layers import get_layer

__all__ = [
    "BinaryFeature",
    "FeatureSet",
    "RegionIntensityFeatures",
    "ChannelFeatures",
    "TabularFeatures",
    "pooled_activations",
]


@dataclass(frozen=True)
class BinaryFeature:
    """One predicate. ``name`` is short ("upper band mostly dark"); ``description`` says how it
    is computed; ``kind`` and ``params`` let pages draw an icon (region box, channel id)."""

    name: str
    description: str
    kind: str
    params: Tuple[Tuple[str, object], ...] = ()

    def param(self, key: str, default=None):
        return dict(self.params).get(key, default)


@dataclass
class FeatureSet:
    """A boolean matrix ``X`` (examples x features) with one :class:`BinaryFeature` per column."""

    X: np.ndarray
    features: List[BinaryFeature] = field(default_factory=list)

    def __post_init__(self):
        self.X = np.asarray(self.X, dtype=bool)
        if self.X.ndim != 2 or self.X.shape[1] != len(self.features):
            raise ValueError(f"X has shape {self.X.shape} but there are {len(self.features)} features")

    @property
    def names(self) -> List[str]:
        return [f.name for f in self.features]

    def __len__(self) -> int:
        return self.X.shape[0]

    @staticmethod
    def concat(sets: Sequence["FeatureSet"]) -> "FeatureSet":
        sets = list(sets)
        if not sets:
            raise ValueError("nothing to concatenate")
        n = {len(s) for s in sets}
        if len(n) != 1:
            raise ValueError(f"feature sets cover different numbers of examples: {sorted(n)}")
        return FeatureSet(np.concatenate([s.X for s in sets], 1), [f for s in sets for f in s.features])


# ---------------------------------------------------------------------------------------
# Region / intensity predicates for grayscale images
# ---------------------------------------------------------------------------------------
_ROW_NAMES = {3: ["upper", "middle", "lower"], 2: ["upper", "lower"]}
_COL_NAMES = {3: ["left", "centre", "right"], 2: ["left", "right"]}
_CELL_ROWS = {3: ["top", "middle", "bottom"], 2: ["top", "bottom"]}


def _quantile_word(q: float) -> str:
    if q < 0.5:
        return {0.1: "very dark", 0.25: "mostly dark"}.get(round(q, 4), f"dark (lowest {q:.0%})")
    return {0.9: "very bright", 0.75: "bright"}.get(round(q, 4), f"bright (top {1 - q:.0%})")


def _bounds(size: int, parts: int) -> List[Tuple[int, int]]:
    edges = np.linspace(0, size, parts + 1).round().astype(int)
    return [(int(edges[i]), int(edges[i + 1])) for i in range(parts)]


def _to_gray(images: Union[np.ndarray, torch.Tensor]) -> np.ndarray:
    a = images.detach().cpu().numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    if a.ndim == 4:
        if a.shape[1] != 1:
            raise ValueError(f"region features need grayscale images (N,1,H,W) or (N,H,W); got {a.shape}")
        a = a[:, 0]
    if a.ndim != 3:
        raise ValueError(f"expected (N,H,W) or (N,1,H,W) images, got shape {a.shape}")
    a = a.astype(np.float32)
    if a.max(initial=0) > 1.5:  # uint8-range pixels
        a = a / 255.0
    return a


class RegionIntensityFeatures:
    """Mean-intensity predicates over named image regions.

    Regions: ``grid`` horizontal bands ("upper band"), ``grid`` vertical columns
    ("centre column"), ``grid x grid`` cells ("top-left cell") and the whole image. For each
    region and each quantile ``q`` in ``quantiles``: ``q < 0.5`` gives "<region> <dark word>"
    (mean <= the q-quantile of the fitting set), ``q > 0.5`` gives "<region> <bright word>"
    (mean >= the q-quantile). Pixel values in [0, 1] (uint8 is rescaled).
    """

    def __init__(self, grid: int = 3, quantiles: Sequence[float] = (0.25, 0.75), cells: bool = True):
        if grid not in (2, 3):
            raise ValueError("grid must be 2 or 3 (regions need readable names)")
        if any(not 0 < q < 1 or q == 0.5 for q in quantiles):
            raise ValueError("quantiles must lie in (0, 1) and differ from 0.5")
        self.grid, self.quantiles, self.cells = grid, tuple(float(q) for q in quantiles), cells
        self.thresholds: Optional[np.ndarray] = None
        self.regions: List[Tuple[str, Tuple[int, int, int, int]]] = []

    def _regions(self, H: int, W: int) -> List[Tuple[str, Tuple[int, int, int, int]]]:
        g = self.grid
        rows, cols = _bounds(H, g), _bounds(W, g)
        out = [(f"{_ROW_NAMES[g][i]} band", (r0, r1, 0, W)) for i, (r0, r1) in enumerate(rows)]
        out += [(f"{_COL_NAMES[g][j]} column", (0, H, c0, c1)) for j, (c0, c1) in enumerate(cols)]
        if self.cells:
            for i, (r0, r1) in enumerate(rows):
                for j, (c0, c1) in enumerate(cols):
                    rname, cname = _CELL_ROWS[g][i], _COL_NAMES[g][j]
                    name = "centre cell" if (rname, cname) == ("middle", "centre") else f"{rname}-{cname} cell"
                    out.append((name, (r0, r1, c0, c1)))
        out.append(("whole image", (0, H, 0, W)))
        return out

    def _means(self, a: np.ndarray) -> np.ndarray:
        return np.stack([a[:, r0:r1, c0:c1].mean(axis=(1, 2)) for _, (r0, r1, c0, c1) in self.regions], 1)

    def region_means(self, images) -> np.ndarray:
        """``N x R`` mean intensity of every region of every image: all that fitting and
        transforming need, so a large set can be reduced batch by batch and the rows stacked
        (:meth:`fit_means`, :meth:`transform_means`)."""
        a = _to_gray(images)
        if not self.regions:
            self.shape = a.shape[1:]
            self.regions = self._regions(*self.shape)
        if a.shape[1:] != self.shape:
            raise ValueError(f"regions are laid out for {self.shape} images, got {a.shape[1:]}")
        return self._means(a)

    def fit(self, images) -> "RegionIntensityFeatures":
        self.regions = []  # laid out afresh for these images
        return self.fit_means(self.region_means(images))

    def fit_means(self, means: np.ndarray) -> "RegionIntensityFeatures":
        """Fit the thresholds from :meth:`region_means` rows (the regions must be laid out)."""
        if not self.regions:
            raise RuntimeError("call region_means() on the fitting images first")
        self.thresholds = np.quantile(means, self.quantiles, axis=0)  # (Q, R)
        return self

    def transform(self, images) -> FeatureSet:
        if self.thresholds is None:
            raise RuntimeError("call fit() first")
        a = _to_gray(images)
        if a.shape[1:] != self.shape:
            raise ValueError(f"fitted on {self.shape} images, got {a.shape[1:]}")
        return self.transform_means(self._means(a))

    def transform_means(self, m: np.ndarray) -> FeatureSet:
        """The binary features of images given by their :meth:`region_means` rows."""
        if self.thresholds is None:
            raise RuntimeError("call fit() first")
        cols, feats = [], []
        for r, (rname, box) in enumerate(self.regions):
            for qi, q in enumerate(self.quantiles):
                t = float(self.thresholds[qi, r])
                if q < 0.5:
                    cols.append(m[:, r] <= t)
                    desc = f"mean intensity of the {rname} <= {t:.3f} (the darkest {q:.0%} of the fitting set)"
                else:
                    cols.append(m[:, r] >= t)
                    desc = f"mean intensity of the {rname} >= {t:.3f} (the brightest {1 - q:.0%} of the fitting set)"
                feats.append(BinaryFeature(
                    f"{rname} {_quantile_word(q)}", desc, "region_intensity",
                    (("region", rname), ("box", box), ("quantile", q), ("threshold", t)),
                ))
        return FeatureSet(np.stack(cols, 1), feats)

    def fit_transform(self, images) -> FeatureSet:
        return self.fit(images).transform(images)


# ---------------------------------------------------------------------------------------
# Channel activation predicates, for any model
# ---------------------------------------------------------------------------------------
@torch.no_grad()
def pooled_activations(
    model: nn.Module,
    layers: Sequence[str],
    images: torch.Tensor,
    *,
    batch_size: int = 256,
    device: Optional[Union[str, torch.device]] = None,
) -> Dict[str, np.ndarray]:
    """Spatially mean-pooled activations ``(N, channels)`` of each named layer.

    The forward pass stops after the deepest requested layer; hooks are removed on exit.
    """
    dev = torch.device(device) if device is not None else next(model.parameters()).device
    mods = {name: get_layer(model, name) for name in layers}
    out: Dict[str, List[np.ndarray]] = {name: [] for name in layers}
    was_training = model.training
    model.eval()
    try:
        with capture_activations(model, mods, stop_after=list(layers)) as store:
            for s in range(0, len(images), batch_size):
                run_until_stopped(model, images[s : s + batch_size].to(dev))
                for name in layers:
                    a = store[name]
                    a = a.flatten(2).mean(2) if a.dim() > 2 else a
                    out[name].append(a.float().cpu().numpy())
    finally:
        model.train(was_training)
    return {k: np.concatenate(v, 0) for k, v in out.items()}


class ChannelFeatures:
    """"channel k of layer L fires above its q-quantile" on pooled activations.

    ``fit`` takes ``{layer: (N, K) array}`` (from :func:`pooled_activations`); ``channels``
    optionally restricts each layer to some channel indices (e.g. the most variable ones).
    """

    def __init__(self, q: float = 0.9, channels: Optional[Mapping[str, Sequence[int]]] = None):
        if not 0 < q < 1:
            raise ValueError("q must lie in (0, 1)")
        self.q = float(q)
        self.channels = {k: list(v) for k, v in (channels or {}).items()}
        self.thresholds: Dict[str, np.ndarray] = {}

    def fit(self, pooled: Mapping[str, np.ndarray]) -> "ChannelFeatures":
        for layer, a in pooled.items():
            a = np.asarray(a, dtype=np.float32)
            idx = self.channels.get(layer, list(range(a.shape[1])))
            self.channels[layer] = idx
            self.thresholds[layer] = np.quantile(a[:, idx], self.q, axis=0)
        return self

    def transform(self, pooled: Mapping[str, np.ndarray]) -> FeatureSet:
        cols, feats = [], []
        for layer, thr in self.thresholds.items():
            a = np.asarray(pooled[layer], dtype=np.float32)[:, self.channels[layer]]
            cols.append(a > thr[None, :])
            pct = f"q{round(self.q * 100):d}"
            for k, t in zip(self.channels[layer], thr):
                feats.append(BinaryFeature(
                    f"channel {k} of {layer} fires above its {pct}",
                    f"mean activation of channel {k} of layer {layer} > {float(t):.4g}, its "
                    f"{self.q:.0%} quantile on the fitting set",
                    "channel",
                    (("layer", layer), ("channel", int(k)), ("quantile", self.q), ("threshold", float(t))),
                ))
        X = np.concatenate(cols, 1) if cols else np.zeros((0, 0), bool)
        return FeatureSet(X, feats)

    def fit_transform(self, pooled: Mapping[str, np.ndarray]) -> FeatureSet:
        return self.fit(pooled).transform(pooled)


# ---------------------------------------------------------------------------------------
# User tabular attributes
# ---------------------------------------------------------------------------------------
class TabularFeatures:
    """Boolean columns for user attributes ``{name: values}``.

    bool -> "name" and "not name"; numbers with more than ``max_categories`` distinct values ->
    "name low" (<= q-low quantile) and "name high" (>= q-high quantile); anything else
    (strings, few distinct numbers) -> one "name = value" column per value.
    """

    def __init__(self, quantiles: Tuple[float, float] = (0.25, 0.75), max_categories: int = 10):
        self.quantiles, self.max_categories = quantiles, max_categories
        self.spec: List[Tuple[str, str, object]] = []

    def fit(self, columns: Mapping[str, Sequence]) -> "TabularFeatures":
        self.spec = []
        for name, values in columns.items():
            v = np.asarray(values)
            if v.dtype == bool:
                self.spec.append((name, "bool", None))
            elif np.issubdtype(v.dtype, np.number) and len(np.unique(v)) > self.max_categories:
                self.spec.append((name, "number",
                                  tuple(float(t) for t in np.quantile(v.astype(float), self.quantiles))))
            else:
                self.spec.append((name, "category", tuple(sorted(np.unique(v).tolist(), key=str))))
        return self

    def transform(self, columns: Mapping[str, Sequence]) -> FeatureSet:
        cols, feats = [], []
        for name, kind, info in self.spec:
            v = np.asarray(columns[name])
            if kind == "bool":
                cols += [v.astype(bool), ~v.astype(bool)]
                feats += [BinaryFeature(name, f"attribute {name} is true", "tabular", (("attribute", name),)),
                          BinaryFeature(f"not {name}", f"attribute {name} is false", "tabular", (("attribute", name),))]
            elif kind == "number":
                lo, hi = info
                cols += [v.astype(float) <= lo, v.astype(float) >= hi]
                feats += [
                    BinaryFeature(f"{name} low", f"{name} <= {lo:.4g} (the lowest {self.quantiles[0]:.0%})", "tabular",
                                  (("attribute", name), ("threshold", lo))),
                    BinaryFeature(f"{name} high", f"{name} >= {hi:.4g} (the top {1 - self.quantiles[1]:.0%})",
                                  "tabular",
                                  (("attribute", name), ("threshold", hi))),
                ]
            else:
                for value in info:
                    cols.append(v == value)
                    feats.append(BinaryFeature(f"{name} = {value}", f"attribute {name} equals {value!r}", "tabular",
                                               (("attribute", name), ("value", value))))
        return FeatureSet(np.stack(cols, 1) if cols else np.zeros((0, 0), bool), feats)

    def fit_transform(self, columns: Mapping[str, Sequence]) -> FeatureSet:
        return self.fit(columns).transform(columns)
