"""Stage: representation similarity between the layers of the models that run on a dataset.

For every dataset, one ``representation_similarity`` unit per pair of models (A before B in the
config; declared with B) and, with ``compare.similarity.within_model``, one ``representation_grams``
unit per model (its layers against each other, and the Gram matrices ``modelcard diff`` compares
two versions of a model by). The methods are in :mod:`generator.methods.compare.similarity`.

Each model's reduced activations on the dataset's images are collected once per run and shared
by every unit that needs them (:class:`_RunFeatures`); they are dropped once the dataset's last
model has declared its units. A pair unit's key carries model A as its model and model B's
identity (id, weights, code, spec) among its inputs, so retraining either recomputes it.
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch

from generator.artifacts.keys import FAMILIES, ModelIdentity
from generator.artifacts.store import npz_bytes
from generator.capability import Unsupported
from generator.config import ModelConfig, ReportConfig
from generator.engine.preprocess import batches
from generator.methods.compare.similarity import (
    SimilarityResult,
    centred_gram,
    collect_activations,
    similarity_from_features,
)
from generator.methods.featurevis.spatial import SpatialView
from generator.pipeline.context import RunContext
from generator.pipeline.inputs import displayed, item_ids, model_input
from generator.pipeline.stages import Stage, register_stage
from generator.pipeline.units import Unit
from generator.records import similarity as _records  # noqa: F401 - registers the kinds' records

PAIR_KIND = "representation_similarity"
GRAMS_KIND = "representation_grams"
FAMILY = "similarity"
VERSION = "1"
#: Up to this many images the jackknife spread of every CKA cell is computed (O(n^3) per cell):
#: below ~50 images CKA is noisy, and that is where the spread is cheap and matters.
SPREAD_MAX_IMAGES = 128
assert FAMILY in FAMILIES  # the code that determines these artifacts: generator.artifacts.keys


# --- shared features -------------------------------------------------------------------------

@dataclass
class Collected:
    """One model's reduced activations on a dataset's first ``len(ids)`` images."""

    layers: List[str]
    feats: List[torch.Tensor]  # (n, D) float32 per layer, in layer order
    ids: List[str]
    reduction: List[str]

    @property
    def dims(self) -> List[int]:
        return [int(f.shape[1]) for f in self.feats]


class _RunFeatures:
    """Features of the current run, dropped when a new run starts (a weak reference to the run
    context tells them apart) or when a dataset is done."""

    def __init__(self) -> None:
        self._run: Optional[weakref.ref] = None
        self._cache: Dict[Tuple[Any, ...], Collected] = {}

    def get(self, ctx: RunContext, key: Tuple[Any, ...], collect: Any) -> Collected:
        if self._run is None or self._run() is not ctx:
            self._cache.clear()
            self._run = weakref.ref(ctx)
        if key not in self._cache:
            self._cache[key] = collect()
        return self._cache[key]

    def drop_dataset(self, dataset_id: str) -> None:
        for key in [k for k in self._cache if k[1] == dataset_id]:
            del self._cache[key]


_FEATURES = _RunFeatures()


def models_on(ctx: RunContext, dataset_id: str) -> List[str]:
    """Ids of the loaded models that run on ``dataset_id``, in config order."""
    return [mc.id for mc, ds in ctx.pairs() if ds == dataset_id]


def layers_of(config: ReportConfig, model_id: str, spec: Any) -> List[str]:
    """The configured layers of ``model_id``, else its spec's layers."""
    layers = list(config.compare.similarity.layers.get(model_id) or spec.layers)
    if not layers:
        raise ValueError(f"model {model_id!r} names no layers to compare: list them under "
                         f"compare.similarity.layers.{model_id}")
    return layers


def image_count(ctx: RunContext, dataset_id: str) -> int:
    settings = ctx.config.compare.similarity
    wanted = settings.images if settings.images is not None else ctx.config.outcome.images
    return min(wanted, len(ctx.datasets[dataset_id]))


def features(ctx: RunContext, model_id: str, dataset_id: str) -> Collected:
    """``model_id``'s reduced activations on the dataset (collected once per run: one pass)."""
    settings = ctx.config.compare.similarity
    loaded, dataset = ctx.models[model_id], ctx.datasets[dataset_id]
    spec = loaded.spec
    layers = layers_of(ctx.config, model_id, spec)
    n = image_count(ctx, dataset_id)

    def collect() -> Collected:
        display = displayed(spec, dataset, n)
        view = SpatialView.for_spec(loaded.module, spec)
        inputs = (model_input(spec, display[sl], ctx.device) for sl in batches(n, settings.batch_size))
        described: Dict[str, str] = {}
        feats = collect_activations(loaded.module, layers, inputs, view=view, flatten_max=settings.flatten_max,
                                    described=described)
        return Collected(layers=layers, feats=[feats[name] for name in layers], ids=item_ids(dataset, n),
                         reduction=[described.get(name, "") for name in layers])

    key = (model_id, dataset_id, tuple(layers), n, settings.flatten_max, settings.batch_size)
    return _FEATURES.get(ctx, key, collect)


# --- records ---------------------------------------------------------------------------------

def matrix(values: Optional[np.ndarray]) -> Optional[List[List[Optional[float]]]]:
    """A float matrix as JSON rows, 6 decimals, undefined cells (NaN) as null."""
    if values is None:
        return None
    return [[round(float(v), 6) if math.isfinite(float(v)) else None for v in row] for row in np.asarray(values)]


def _params(config: ReportConfig, result: SimilarityResult) -> Dict[str, Any]:
    s = config.compare.similarity
    return {"batch_size": s.batch_size, "knn_k": result.knn_k, "svcca_variance": s.svcca_variance,
            "svcca_dims": s.svcca_dims, "flatten_max": s.flatten_max,
            "spread": "jackknife" if result.cka_spread is not None else ""}


def _compute(ctx: RunContext, a: Collected, b: Optional[Collected]) -> SimilarityResult:
    s = ctx.config.compare.similarity
    if len(a.ids) < 4:
        raise Unsupported(f"representation similarity needs at least 4 images; the dataset has {len(a.ids)}")
    return similarity_from_features(a.feats, None if b is None else b.feats, batch_size=s.batch_size,
                                    knn_k=s.knn_k, svcca_variance=s.svcca_variance, svcca_dims=s.svcca_dims,
                                    spread_max_images=SPREAD_MAX_IMAGES)


# --- units -----------------------------------------------------------------------------------

def _key_params(ctx: RunContext, dataset_id: str) -> Dict[str, Any]:
    s = ctx.config.compare.similarity
    return {"images": image_count(ctx, dataset_id), "batch_size": s.batch_size, "knn_k": s.knn_k,
            "svcca_variance": s.svcca_variance, "svcca_dims": s.svcca_dims, "flatten_max": s.flatten_max,
            "spread_max_images": SPREAD_MAX_IMAGES}


def grams_unit(ctx: RunContext, model_id: str, dataset_id: str) -> Unit:
    """One model's layers against each other, and its Gram matrices."""
    spec = ctx.models[model_id].spec
    gram_images = ctx.config.compare.similarity.gram_images

    def compute():
        a = features(ctx, model_id, dataset_id)
        result = _compute(ctx, a, None)
        m = min(len(a.ids), gram_images)
        grams = {f"gram_{i}": centred_gram(f[:m]).numpy() for i, f in enumerate(a.feats)}
        record = {"model": model_id, "dataset": dataset_id, "layers": a.layers, "images": a.ids,
                  "gram_images": a.ids[:m], "dims": a.dims, "reduction": a.reduction,
                  "params": _params(ctx.config, result), "cka": matrix(result.cka),
                  "cka_spread": matrix(result.cka_spread)}
        return record, {"grams": ("grams.npz", npz_bytes(**grams))}

    return Unit(kind=GRAMS_KIND, family=FAMILY, version=VERSION, compute=compute, model=model_id, dataset=dataset_id,
                label=f"representation similarity within {model_id} on {dataset_id}",
                group=f"similarity|{dataset_id}",  # one rank: the models' activations are collected once
                params={**_key_params(ctx, dataset_id), "layers": layers_of(ctx.config, model_id, spec),
                        "gram_images": gram_images},
                settings={"device": ctx.device.type})


def pair_unit(ctx: RunContext, model_a: str, model_b: str, dataset_id: str) -> Unit:
    """Every layer of ``model_a`` against every layer of ``model_b``."""
    spec_a, spec_b = ctx.models[model_a].spec, ctx.models[model_b].spec

    def compute():
        a, b = features(ctx, model_a, dataset_id), features(ctx, model_b, dataset_id)
        result = _compute(ctx, a, b)
        record = {"model_a": model_a, "model_b": model_b, "dataset": dataset_id, "layers_a": a.layers,
                  "layers_b": b.layers, "images": a.ids, "dims_a": a.dims, "dims_b": b.dims,
                  "reduction_a": a.reduction, "reduction_b": b.reduction, "params": _params(ctx.config, result),
                  "cka": matrix(result.cka), "cka_spread": matrix(result.cka_spread), "svcca": matrix(result.svcca),
                  "svcca_dims_a": result.svcca_dims_a, "svcca_dims_b": result.svcca_dims_b,
                  "knn": matrix(result.knn)}
        return record, {}

    return Unit(kind=PAIR_KIND, family=FAMILY, version=VERSION, compute=compute, model=model_a, dataset=dataset_id,
                label=f"representation similarity of {model_a} and {model_b} on {dataset_id}",
                group=f"similarity|{dataset_id}",
                # Model A's identity is the unit's model; B's goes in with the inputs.
                inputs={"model_b": ModelIdentity.of(spec_b).as_dict()},
                params={**_key_params(ctx, dataset_id), "layers_a": layers_of(ctx.config, model_a, spec_a),
                        "layers_b": layers_of(ctx.config, model_b, spec_b)},
                settings={"device": ctx.device.type}, labels={"model_b": model_b})


def declare_similarity(ctx: RunContext, mc: ModelConfig, dataset_id: str) -> Iterator[Unit]:
    """The model's within-model unit, then one pair unit with every model before it on the dataset.

    Nothing is declared on fewer than 4 images: the unbiased estimator is undefined there. That is
    a property of the report (a tiny test dataset), not of the model, so it is not listed as a
    method that cannot run; the compare and review pages say when the measures are absent."""
    others = models_on(ctx, dataset_id)
    if image_count(ctx, dataset_id) < 4:
        if not others or others[-1] == mc.id:
            _FEATURES.drop_dataset(dataset_id)
        return
    try:
        if ctx.config.compare.similarity.within_model:
            yield grams_unit(ctx, mc.id, dataset_id)
        for earlier in others[:others.index(mc.id)]:
            yield pair_unit(ctx, earlier, mc.id, dataset_id)
    finally:
        if not others or others[-1] == mc.id:
            _FEATURES.drop_dataset(dataset_id)


def _enabled(config: ReportConfig) -> bool:
    return config.compare.enabled and config.compare.similarity.enabled


def _applies(ctx: RunContext, mc: ModelConfig, dataset_id: str) -> bool:
    others = models_on(ctx, dataset_id)
    return ctx.config.compare.similarity.within_model or (mc.id in others and others.index(mc.id) > 0)


def _expected(config: ReportConfig) -> int:
    return 1 + (len(config.models) - 1) // 2 if len(config.models) > 1 else 1


register_stage(Stage(name="compare (representation similarity)", order=50, declare=declare_similarity,
                     enabled=_enabled, applies=_applies, expected=_expected))


__all__: Sequence[str] = ["GRAMS_KIND", "PAIR_KIND", "features", "grams_unit", "layers_of", "models_on",
                          "pair_unit", "declare_similarity"]
