"""Stage: several models on one dataset, compared (issue 14, "side by side and agreement").

For every dataset that two or more compared models (``compare.models``, default every model)
run on, one ``compare`` artifact: per compared method (``compare.methods``, default those
computed for every compared model) and image, how far each pair of models agrees, from the
maps the outcome stage stored (read by :func:`~generator.pipeline.stages.outcome.outcome_key`,
never recomputed), and how often their top-1 predictions agree (from the stored predictions).

**The common grid.** Each model sees its own part of an image at its own size: the shorter side
resized to ``spec.resize`` and a centre crop of ``spec.input_size`` (or a straight resize to the
input size); see :func:`generator.engine.preprocess.resize_and_crop`, which :func:`crop_geometry`
mirrors. Each model's map is mapped back into the original image's frame through that
geometry; the maps are then compared over the region *every* model sees (the intersection of
the crops), on a grid as fine as the coarsest model's map over that region (at most
:data:`GRID_MOST` cells a side). Each grid cell is
the mean of the model's map over the cell's area in the original image (a map pixel partly
inside weighs by its overlap), so no model is compared at a detail it does not have.

**The numbers.** Spearman rank correlation of two maps on the grid (Pearson correlation of
their ranks, ties averaged): 1 the same order of pixels, -1 the reverse. Top-k overlap: the
intersection over union of the ``top_k`` fraction of cells with the highest values (cells tied
at the threshold are all in; when the threshold is the map's minimum, as for a CAM that is zero
over most of the image, only the cells above it). Maps are compared as the pages colour them:
signed maps by value (evidence for the target class highest), unsigned maps by value, or by
magnitude when they hold negative values. A constant map has neither a rank order nor top
cells: its values are "undefined (constant map)", counted, and left out of every mean, never
NaN.

**Predictions.** Models with the same class list are compared by class; models whose class
names overlap by name (an ImageNet model against a custom head with some ImageNet names), an
image where either predicts a class the other lacks counting as a disagreement; for models with
no class name in common top-1 agreement is not defined.

The computation is numpy only (:func:`to_common_grid`, :func:`spearman`, :func:`topk_iou`);
the stage's own part is reading the stored artifacts and writing the record.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from generator.artifacts.keys import FAMILIES, ModelIdentity
from generator.artifacts.store import npz_bytes
from generator.config import ModelConfig, ReportConfig
from generator.pipeline.context import RunContext
from generator.pipeline.stages import Stage, register_stage
from generator.pipeline.stages.outcome import KIND as OUTCOME_KIND
from generator.pipeline.stages.outcome import model_methods, outcome_key
from generator.pipeline.units import Computed, Need, Unit
from generator.records.compare import CompareRecord

KIND = "compare"
VERSION = "1"
FAMILY = "compare"
# The code that determines a comparison beyond the artifacts it reads (their keys enter its key)
# is listed in generator.artifacts.keys.FAMILIES.
assert FAMILY in FAMILIES

Region = Tuple[float, float, float, float]  # x0, y0, x1, y1 in original-image pixels (edges)

#: At most this many common-grid cells a side: 112 x 112 cells rank a map finely enough, and keep
#: a comparison of three ImageNet models' maps a few MB instead of tens.
GRID_MOST = 112


# --- geometry ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class CropGeometry:
    """Where a model's input comes from in an original image.

    The image is scaled by ``sx`` x ``sy`` (resized / original) and the model's input is the
    ``width`` x ``height`` window at ``left``, ``top`` of the scaled image. Coordinates are
    continuous pixel edges: original pixel ``(r, c)`` covers ``[c, c + 1) x [r, r + 1)``.
    """

    sx: float
    sy: float
    left: float
    top: float
    width: int
    height: int

    @property
    def region(self) -> Region:
        """The part of the original image the model sees."""
        return (self.left / self.sx, self.top / self.sy,
                (self.left + self.width) / self.sx, (self.top + self.height) / self.sy)


def crop_geometry(size: Tuple[int, int], input_size: Sequence[int], resize: Optional[int]) -> CropGeometry:
    """The crop of :func:`generator.engine.preprocess.resize_and_crop` for an original image of
    ``size`` (height, width): the shorter side resized to ``resize`` and a centre crop of the input
    size, or a straight resize when ``resize`` is None, and nothing for an image already of the
    input size."""
    h, w = int(size[0]), int(size[1])
    height, width = int(input_size[-2]), int(input_size[-1])
    if (h, w) == (height, width):
        return CropGeometry(1.0, 1.0, 0, 0, width, height)
    if resize:
        scale = resize / min(h, w)
        new_w, new_h = max(width, round(w * scale)), max(height, round(h * scale))
        return CropGeometry(new_w / w, new_h / h, (new_w - width) // 2, (new_h - height) // 2, width, height)
    return CropGeometry(width / w, height / h, 0, 0, width, height)


def common_region(geometries: Sequence[CropGeometry]) -> Region:
    """The part of the original image every model sees (the intersection of their crops)."""
    regions = np.array([g.region for g in geometries], dtype=np.float64)
    x0, y0 = regions[:, 0].max(), regions[:, 1].max()
    x1, y1 = regions[:, 2].min(), regions[:, 3].min()
    if x1 <= x0 or y1 <= y0:  # centre crops always share the centre; kept for odd specs
        raise ValueError(f"the models see no common part of the image (crops {regions.round(2).tolist()})")
    return float(x0), float(y0), float(x1), float(y1)


def grid_shape(geometries: Sequence[CropGeometry], region: Region,
               map_shapes: Optional[Sequence[Tuple[int, int]]] = None, most: int = 0) -> Tuple[int, int]:
    """(height, width) of the common grid: as many cells as the coarsest map has pixels over
    ``region`` (``map_shapes``: each model's map size; default its input size), and at most
    ``most`` cells a side when ``most`` > 0 (both sides shrunk by the same factor)."""
    x0, y0, x1, y1 = region
    rows, cols = [], []
    for j, g in enumerate(geometries):
        mh, mw = map_shapes[j] if map_shapes is not None else (g.height, g.width)
        rows.append((y1 - y0) * g.sy * mh / g.height)
        cols.append((x1 - x0) * g.sx * mw / g.width)
    height, width = min(rows), min(cols)
    if most > 0 and max(height, width) > most:
        shrink = most / max(height, width)
        height, width = height * shrink, width * shrink
    return max(1, int(round(height))), max(1, int(round(width)))


def area_weights(starts: np.ndarray, ends: np.ndarray, n_source: int) -> np.ndarray:
    """``len(starts) x n_source`` weights: row ``k`` averages source pixels ``[i, i + 1)`` over
    the interval ``[starts[k], ends[k])`` (in source pixel coordinates), each weighted by its
    overlap. Intervals are clipped to the source."""
    a = np.clip(starts, 0.0, n_source)[:, None]
    b = np.clip(ends, 0.0, n_source)[:, None]
    i = np.arange(n_source, dtype=np.float64)[None, :]
    w = np.clip(np.minimum(b, i + 1) - np.maximum(a, i), 0.0, None)
    total = w.sum(axis=1, keepdims=True)
    if (total <= 0).any():
        # an interval outside the source (cannot happen inside a model's crop): nearest pixel
        nearest = np.clip(np.floor((a + b) / 2), 0, n_source - 1).astype(int)[:, 0]
        empty = total[:, 0] <= 0
        w[empty] = 0.0
        w[np.flatnonzero(empty), nearest[empty]] = 1.0
        total = w.sum(axis=1, keepdims=True)
    return w / total


def _cell_edges(lo: float, hi: float, cells: int) -> Tuple[np.ndarray, np.ndarray]:
    edges = lo + (hi - lo) * np.arange(cells + 1, dtype=np.float64) / cells
    return edges[:-1], edges[1:]


def to_common_grid(values: np.ndarray, geometry: CropGeometry, region: Region, grid: Tuple[int, int]) -> np.ndarray:
    """A model's map (``H' x W'``, covering its crop) resampled onto the common ``grid`` over
    ``region`` of the original image: each cell the area mean of the map over the cell."""
    values = np.asarray(values, dtype=np.float64)
    mh, mw = values.shape[-2:]
    x0, y0, x1, y1 = region
    ys, ye = _cell_edges(y0, y1, grid[0])
    xs, xe = _cell_edges(x0, x1, grid[1])
    # original -> scaled image -> crop -> map pixels
    to_row = mh / geometry.height
    to_col = mw / geometry.width
    wy = area_weights((ys * geometry.sy - geometry.top) * to_row, (ye * geometry.sy - geometry.top) * to_row, mh)
    wx = area_weights((xs * geometry.sx - geometry.left) * to_col, (xe * geometry.sx - geometry.left) * to_col, mw)
    return wy @ values @ wx.T


def crop_to_grid(pixels: np.ndarray, region: Region, grid: Tuple[int, int]) -> np.ndarray:
    """uint8 ``H x W x C`` original pixels of ``region``, area-resampled to ``grid``."""
    x0, y0, x1, y1 = region
    ys, ye = _cell_edges(y0, y1, grid[0])
    xs, xe = _cell_edges(x0, x1, grid[1])
    wy = area_weights(ys, ye, pixels.shape[0])
    wx = area_weights(xs, xe, pixels.shape[1])
    channels = [wy @ pixels[:, :, c].astype(np.float64) @ wx.T for c in range(pixels.shape[2])]
    return (np.stack(channels, axis=2) + 0.5).clip(0, 255).astype(np.uint8)


# --- agreement -----------------------------------------------------------------------------------

CONSTANT = "constant map"


def evidence(values: np.ndarray, signed: bool) -> np.ndarray:
    """The values a map is compared by, as the pages colour it (:func:`generator.render.images.scale_map`):
    signed maps as they are; unsigned maps as they are, or by magnitude when they hold negatives."""
    values = np.asarray(values, dtype=np.float64)
    return values if signed or values.min() >= 0 else np.abs(values)


def is_constant(values: np.ndarray) -> bool:
    """No rank order: every cell equal (up to the rounding of resampling a constant map)."""
    spread = float(np.ptp(values))
    return spread <= 1e-9 * max(float(np.abs(values).max()), 1e-300)


def average_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 0..n-1 of ``values`` (flattened), ties sharing their average rank."""
    v = np.asarray(values, dtype=np.float64).ravel()
    order = np.argsort(v, kind="stable")
    ordered = v[order]
    first = np.r_[True, ordered[1:] != ordered[:-1]]
    starts = np.flatnonzero(first)
    ends = np.r_[starts[1:], v.size]
    group = np.cumsum(first) - 1
    ranks = np.empty(v.size, dtype=np.float64)
    ranks[order] = ((starts + ends - 1) / 2.0)[group]
    return ranks


def spearman(a: np.ndarray, b: np.ndarray) -> Optional[float]:
    """Spearman rank correlation of two maps of one shape; None when either is constant."""
    if is_constant(a) or is_constant(b):
        return None
    ra, rb = average_ranks(a), average_ranks(b)
    ra -= ra.mean()
    rb -= rb.mean()
    r = float((ra * rb).sum() / math.sqrt(float((ra * ra).sum()) * float((rb * rb).sum())))
    return min(1.0, max(-1.0, r))


def top_cells(values: np.ndarray, fraction: float) -> np.ndarray:
    """Boolean mask of the ``fraction`` of cells with the highest values: cells tied at the
    threshold are all in, except when the threshold is the map's minimum (a flat floor), when
    only the cells above it are."""
    v = np.asarray(values, dtype=np.float64)
    n = max(1, int(round(fraction * v.size)))
    threshold = np.partition(v.ravel(), v.size - n)[v.size - n]
    return v > threshold if threshold <= v.min() else v >= threshold


def topk_iou(a: np.ndarray, b: np.ndarray, fraction: float) -> Optional[float]:
    """Intersection over union of the top-``fraction`` cells of two maps; None when either is constant."""
    if is_constant(a) or is_constant(b):
        return None
    ta, tb = top_cells(a, fraction), top_cells(b, fraction)
    return float((ta & tb).sum() / (ta | tb).sum())


def class_relation(names_a: Sequence[str], names_b: Sequence[str]) -> Tuple[str, int]:
    """("same" | "shared_names" | "disjoint", number of class names both have); names are
    compared without case and surrounding spaces."""
    if list(names_a) == list(names_b):
        return "same", len(names_a)
    shared = {_norm(n) for n in names_a} & {_norm(n) for n in names_b}
    return ("shared_names" if shared else "disjoint"), len(shared)


def _norm(name: Optional[str]) -> str:
    return (name or "").strip().lower()


def _mean(values: Sequence[Optional[float]]) -> Optional[float]:
    defined = [v for v in values if v is not None]
    return round(float(np.mean(defined)), 6) if defined else None


def _round(value: Optional[float]) -> Optional[float]:
    return None if value is None else round(float(value), 6)


# --- which models, methods and images --------------------------------------------------------------

def compared_models(ctx: RunContext, dataset_id: str) -> List[ModelConfig]:
    """The models compared on ``dataset_id``: ``compare.models`` (in that order) or every model
    that runs on it, of those loaded in this run."""
    running = [mc for mc, ds in ctx.pairs() if ds == dataset_id]
    wanted = ctx.config.compare.models
    if wanted is None:
        return running
    by_id = {mc.id: mc for mc in running}
    return [by_id[m] for m in dict.fromkeys(wanted) if m in by_id]


def compared_methods(config: ReportConfig, model_ids: Sequence[str]) -> List[str]:
    """``compare.methods``, or the methods computed for every one of ``model_ids`` (in the order
    of the first model's list)."""
    if config.compare.methods is not None:
        return list(dict.fromkeys(config.compare.methods))
    if not model_ids:
        return []
    lists = [model_methods(config, m) for m in model_ids]
    return [m for m in lists[0] if all(m in other for other in lists[1:])]


def _applies(ctx: RunContext, mc: ModelConfig, dataset_id: str) -> bool:
    # One comparison per dataset, declared with the dataset's last compared model (when every
    # model it needs has run its earlier stages).
    models = compared_models(ctx, dataset_id)
    return len(models) >= 2 and mc.id == models[-1].id


def _predictions_key(ctx: RunContext, model_id: str, dataset_id: str) -> Optional[str]:
    """The key of the predictions this run recorded for the pair (None: they failed)."""
    entry = ctx.find_entry("predictions", model=model_id, dataset=dataset_id)
    return None if entry is None else str(entry["key"])


# --- the stage -------------------------------------------------------------------------------------

def declare_compare(ctx: RunContext, mc: ModelConfig, dataset_id: str) -> Iterator[Unit]:
    """One unit for the dataset: every compared model's stored maps and predictions in, the
    agreement record and the common-grid maps out."""
    settings = ctx.config.compare
    models = compared_models(ctx, dataset_id)
    ids = [m.id for m in models]
    methods = compared_methods(ctx.config, ids)
    dataset = ctx.datasets[dataset_id]
    shown = min(ctx.config.outcome.images, len(dataset))
    n = min(shown, settings.images) if settings.images is not None else shown
    needs: Dict[str, Need] = {}
    for m in models:
        key = _predictions_key(ctx, m.id, dataset_id)
        if key is not None:
            needs[f"predictions|{m.id}"] = Need("predictions", key)
        for method in methods:
            if method in model_methods(ctx.config, m.id):
                key = outcome_key(ctx, m, dataset_id, method)
                if ctx.lookup(OUTCOME_KIND, key) is not None:  # a method whose maps failed is left out
                    needs[f"maps|{m.id}|{method}"] = Need(OUTCOME_KIND, key)

    def compute(**stored: Any) -> Computed:
        return compare_dataset(ctx, dataset_id, models, methods, n, settings.top_k, stored)

    yield Unit(kind=KIND, family=FAMILY, version=VERSION, label=f"comparison of {', '.join(ids)} on {dataset_id}",
               compute=compute, dataset=dataset_id, needs=needs,
               params={"models": ids, "methods": methods, "top_k": settings.top_k, "images": n,
                       "grid_most": GRID_MOST},
               # every model's identity (its crop geometry, its class names) even where none of
               # its artifacts is read, plus the record layout
               settings={"schema": CompareRecord.SCHEMA,
                         "models": {m: ModelIdentity.of(ctx.models[m].spec).as_dict() for m in ids}})


def compare_dataset(ctx: RunContext, dataset_id: str, models: Sequence[ModelConfig], methods: Sequence[str], n: int,
                    top_k: float, stored: Dict[str, Any]) -> Computed:
    """The record and files of one comparison, from the stored artifacts in ``stored`` (role -> artifact)."""
    dataset = ctx.datasets[dataset_id]
    items = dataset.items[:n]
    ids = [m.id for m in models]
    specs = {m: ctx.models[m].spec for m in ids}
    maps: Dict[Tuple[str, str], Tuple[Dict[str, Any], np.ndarray]] = {}
    for role, art in stored.items():
        if role.startswith("maps|"):
            _, model_id, method = role.split("|", 2)
            maps[(model_id, method)] = (art.record, art.load_npz("maps")["maps"])
    predictions = {role.split("|", 1)[1]: art.record for role, art in stored.items() if role.startswith("predictions|")}
    signed = {method: bool(rec["signed"]) for (_, method), (rec, _) in sorted(maps.items())}
    methods = [m for m in methods if m in signed]  # a method no model has maps for is not shown

    arrays: Dict[str, np.ndarray] = {}
    grids: Dict[Tuple[int, int, int], np.ndarray] = {}  # (image, model index, method index) -> grid values
    images: List[Dict[str, Any]] = []
    for i, item in enumerate(items):
        h, w = item.pixels.shape[:2]
        geometries = [crop_geometry((h, w), specs[m].input_size, specs[m].resize) for m in ids]
        region = common_region(geometries)
        shapes = []
        for m, g in zip(ids, geometries):
            found = next((values for (mid, _), (_, values) in maps.items() if mid == m), None)
            shapes.append(tuple(found.shape[-2:]) if found is not None else (g.height, g.width))
        grid = grid_shape(geometries, region, shapes, GRID_MOST)
        display = max(1, int(round(max((region[3] - region[1]) * g.sy for g in geometries)))), \
            max(1, int(round(max((region[2] - region[0]) * g.sx for g in geometries))))
        arrays[f"image_{i}"] = crop_to_grid(item.pixels, region, display)
        rows = []
        for a, (m, g) in enumerate(zip(ids, geometries)):
            for b, method in enumerate(methods):
                if (m, method) not in maps:
                    continue
                rec, values = maps[(m, method)]
                index = rec["images"].index(item.id)
                # measured on the float32 grid that is stored, so the numbers follow from the file
                grids[(i, a, b)] = to_common_grid(values[index], g, region, grid).astype(np.float32)
                arrays[f"map_{i}_{a}_{b}"] = grids[(i, a, b)]
            rows.append(_model_on_image(m, item.id, g, predictions.get(m), [maps[(m, x)][0] for x in methods
                                                                            if (m, x) in maps]))
        images.append({"id": item.id, "title": item.title or item.id, "size": [int(h), int(w)],
                       "region": [round(v, 4) for v in region], "grid": [int(grid[0]), int(grid[1])],
                       "models": rows})

    pairs = []
    per_image: List[List[Optional[float]]] = [[] for _ in items]
    per_image_iou: List[List[Optional[float]]] = [[] for _ in items]
    undefined_per_image = [0] * len(items)
    for a in range(len(ids)):
        for b in range(a + 1, len(ids)):
            relation, shared = class_relation(specs[ids[a]].class_names, specs[ids[b]].class_names)
            agree = [_top1_agree(relation, row["models"][a], row["models"][b]) for row in images]
            compared = [v for v in agree if v is not None]
            pair_methods = []
            for k, method in enumerate(methods):
                if (ids[a], method) not in maps or (ids[b], method) not in maps:
                    continue
                rho, iou, why = [], [], []
                for i in range(len(items)):
                    ga, gb = (evidence(grids[(i, a, k)], signed[method]), evidence(grids[(i, b, k)], signed[method]))
                    r, o = spearman(ga, gb), topk_iou(ga, gb, top_k)
                    constant = [ids[j] for j, g in ((a, ga), (b, gb)) if is_constant(g)]
                    rho.append(_round(r))
                    iou.append(_round(o))
                    why.append(f"undefined ({CONSTANT} of {', '.join(constant)})" if constant else None)
                    per_image[i].append(rho[-1])
                    per_image_iou[i].append(iou[-1])
                    undefined_per_image[i] += bool(constant)
                pair_methods.append({"method": method, "spearman": rho, "topk_iou": iou, "undefined": why,
                                     "mean_spearman": _mean(rho), "mean_topk_iou": _mean(iou),
                                     "defined": sum(v is not None for v in rho),
                                     "undefined_count": sum(v is None for v in rho)})
            pairs.append({"models": [ids[a], ids[b]], "classes": relation, "shared_classes": shared,
                          "top1_agree": agree,
                          "top1_agreement": (_round(sum(compared) / len(compared))
                                             if compared and relation != "disjoint" else None),
                          "top1_compared": len(compared), "methods": pair_methods})
    for i, row in enumerate(images):
        row["mean_spearman"] = _mean(per_image[i])
        row["mean_topk_iou"] = _mean(per_image_iou[i])
        row["undefined"] = undefined_per_image[i]
    order = sorted(range(len(images)), key=lambda i: (images[i]["mean_spearman"] is None,
                                                     images[i]["mean_spearman"] or 0.0, i))
    record = {
        "dataset": dataset_id,
        "models": [{"id": m, "input_size": [int(v) for v in specs[m].input_size], "resize": specs[m].resize,
                    "classes": len(specs[m].class_names), "methods": [x for x in methods if (m, x) in maps]}
                   for m in ids],
        "methods": list(methods), "signed": {m: signed[m] for m in methods}, "top_k": float(top_k),
        "grid_most": GRID_MOST,
        "images": images, "pairs": pairs, "order": [images[i]["id"] for i in order],
    }
    return record, {"maps": ("maps.npz", npz_bytes(**arrays))}


def _model_on_image(model_id: str, item_id: str, geometry: CropGeometry, prediction: Optional[Dict[str, Any]],
                    records: Sequence[Dict[str, Any]]) -> Dict[str, Any]:
    top = None
    if prediction is not None:
        row = next((r for r in prediction["shown"] if r["id"] == item_id), None)
        top = row["top"][0] if row is not None and row["top"] else None
    explains = probability = None
    for rec in records:  # every method of a model explains the same target
        if item_id in rec["images"]:
            index = rec["images"].index(item_id)
            explains, probability = rec["target_names"][index], rec["target_probabilities"][index]
            break
    return {"model": model_id, "top_class": top["name"] if top else None, "top_index": top["index"] if top else None,
            "top_probability": top["probability"] if top else None, "explains": explains,
            "explains_probability": probability, "region": [round(v, 4) for v in geometry.region]}


def _top1_agree(relation: str, a: Dict[str, Any], b: Dict[str, Any]) -> Optional[bool]:
    if relation == "disjoint" or a["top_class"] is None or b["top_class"] is None:
        return None
    if relation == "same":
        return a["top_index"] == b["top_index"]
    return _norm(a["top_class"]) == _norm(b["top_class"])


register_stage(Stage(name="compare (models side by side)", order=50, declare=declare_compare,
                     enabled=lambda config: config.compare.enabled and len(config.models) >= 2,
                     applies=_applies))
