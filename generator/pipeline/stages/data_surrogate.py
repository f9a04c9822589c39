"""Stage: the network's logic as a decision set (Lakkaraju, Bach & Leskovec 2016), with a
depth-limited tree and a rule list as baselines on the same interpretable binary features.

Features (``data.decision_set.features``):

* ``region``: "<region> mostly dark / bright" on the mean intensity of bands, columns and grid
  cells (colour images are reduced to their luma first);
* ``channel``: "channel k of layer L fires above its q-quantile" on spatially mean-pooled
  activations of ``channel_layer`` (default the model's Grad-CAM layer), for the ``channels``
  channels whose pooled activation varies most over the training examples.

Every surrogate is fitted to the network's *predictions* on the training examples and
evaluated on the held-out examples: fidelity (agreement with the network), accuracy (against
the true labels), coverage, overlap, number of rules and their length.
"""

from __future__ import annotations

from typing import Any, Dict, Iterator, List

import numpy as np

from generator.artifacts.store import npz_bytes
from generator.config import ModelConfig
from generator.pipeline.context import RunContext
from generator.pipeline.inputs import DisplayRows
from generator.pipeline.stages import Stage, register_stage
from generator.pipeline.stages.data_common import applies, channel_layer, data_split, final_passes
from generator.pipeline.units import Unit

KIND = "data_surrogate"
VERSION = "1"


def gray(pixels: np.ndarray) -> np.ndarray:
    """uint8 ``N x H x W`` intensities (ITU-R 601 luma for colour images)."""
    if pixels.shape[3] == 1:
        return pixels[:, :, :, 0]
    luma = pixels.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    return (luma + 0.5).clip(0, 255).astype(np.uint8)


def region_means(reg, pixels: DisplayRows, batch_size: int = 500) -> np.ndarray:
    """``reg.region_means`` of every row of ``pixels``, read batch by batch (``N x regions``).

    Intensities go in as floats in [0, 1]: the features rescale uint8 input only when a batch's
    maximum says it is uint8, which an all-dark batch would not.
    """
    parts = [reg.region_means(gray(batch).astype(np.float32) / 255.0) for _, batch in pixels.batches(batch_size)]
    return np.concatenate(parts) if parts else np.zeros((0, len(reg.regions)), np.float32)


def most_variable(a: np.ndarray, k: int) -> List[int]:
    """The ``k`` columns of ``a`` with the largest variance, in column order (ties: lower column)."""
    order = np.argsort(-a.var(0), kind="stable")[:k]
    return sorted(int(c) for c in order)


def _jsonable(params) -> Dict[str, Any]:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in params}


def declare_surrogate(ctx: RunContext, mc: ModelConfig, dataset_id: str) -> Iterator[Unit]:
    """One unit: the decision set and its baselines, fitted to the network's predictions."""
    from generator.methods.surrogates import (
        ChannelFeatures,
        FeatureSet,
        IDSWeights,
        RegionIntensityFeatures,
        fit_ids,
        fit_rule_list,
        fit_tree_surrogate,
        ids_objective,
        mine_candidate_rules,
        rule_set_metrics,
    )

    s = ctx.config.data.decision_set
    loaded = ctx.models[mc.id]
    spec = loaded.spec
    split = data_split(ctx, mc, dataset_id)
    layer = channel_layer(ctx, mc) if "channel" in s.features else None

    def compute():
        train, test = final_passes(ctx, mc, dataset_id)
        y_fit, y_test = train["logits"].argmax(1), test["logits"].argmax(1)
        K = spec.num_classes
        sets_fit, sets_test = [], []
        icon_rows: Dict[int, int] = {}
        if "region" in s.features:
            reg = RegionIntensityFeatures(grid=s.region_grid, quantiles=s.region_quantiles)
            # Region means (N x regions) are all the features need, so the images are read
            # batch by batch and only the means kept.
            fit_means = region_means(reg, split.train_pixels)
            sets_fit.append(reg.fit_means(fit_means).transform_means(fit_means))
            sets_test.append(reg.transform_means(region_means(reg, split.test_pixels)))
        if "channel" in s.features:
            if layer is None:
                raise ctx.config.error(("data", "decision_set", "channel_layer"),
                                       f"model {mc.id!r} has no Grad-CAM layer; name a channel layer")
            a_fit, a_test = train["channels"], test["channels"]
            chans = most_variable(a_fit, s.channels)
            cf = ChannelFeatures(q=s.channel_quantile, channels={layer: chans})
            offset = sum(fs.X.shape[1] for fs in sets_fit)
            sets_fit.append(cf.fit_transform({layer: a_fit}))
            sets_test.append(cf.transform({layer: a_test}))
            for j, c in enumerate(chans):  # icon: the training example the channel fires most on
                icon_rows[offset + j] = int(np.argmax(a_fit[:, c]))
        if not sets_fit:
            raise ctx.config.error(("data", "decision_set", "features"), "no feature kinds chosen")
        fit, held = FeatureSet.concat(sets_fit), FeatureSet.concat(sets_test)
        weights = IDSWeights.scaled(len(y_fit), **s.weights.model_dump())
        cands = mine_candidate_rules(fit.X, y_fit, K, min_support=s.min_support, max_len=s.max_rule_length,
                                     min_precision=s.min_precision, max_candidates=s.max_candidates)
        ids = fit_ids(cands, y_fit, weights, max_rules=s.max_rules)
        objective, terms = ids_objective(cands, y_fit, ids.candidate_ids, weights)
        tree = fit_tree_surrogate(fit.X, y_fit, max_depth=s.tree_depth, seed=ctx.config.seed)
        rlist = fit_rule_list(cands, y_fit, max_rules=s.rule_list_max, min_support=s.min_support)

        labels = np.array([r.label for r in ids.rules], dtype=np.int64)
        lengths = np.array([len(r.items) for r in ids.rules], dtype=np.int64)

        def ids_metrics(X, y_model, y_true):
            cov = ids.cover(X)
            return rule_set_metrics(cov, labels, lengths, ids.predict(X, cov), y_model, y_true, K)

        held_cov = ids.cover(held.X)
        examples: List[List[int]] = [np.flatnonzero(c)[: s.examples_per_rule].tolist() for c in held_cov]
        rules = [{"items": list(r.items), "label": int(r.label), "text": r.describe(fit.names, spec.class_names),
                  "f1": float(f1), "examples": ex} for r, f1, ex in zip(ids.rules, ids.f1_scores, examples)]
        metrics = {
            "ids": {"fit": ids_metrics(fit.X, y_fit, split.train_labels),
                    "held_out": ids_metrics(held.X, y_test, split.test_labels)},
            "tree": {"fit": tree.metrics(fit.X, y_fit, split.train_labels, K),
                     "held_out": tree.metrics(held.X, y_test, split.test_labels, K)},
            "rule_list": {"fit": rlist.metrics(fit.X, y_fit, split.train_labels, K),
                          "held_out": rlist.metrics(held.X, y_test, split.test_labels, K)},
        }
        features = [{"name": f.name, "description": f.description, "kind": f.kind, "params": _jsonable(f.params),
                     "icon_row": icon_rows.get(i)} for i, f in enumerate(fit.features)]
        ex_rows = sorted({r for ex in examples for r in ex})
        icons = sorted(set(icon_rows.values()))
        record = {
            "model": mc.id, "dataset": dataset_id, "params": s.model_dump(), "split": split.describe(),
            "channel_layer": layer, "class_names": list(spec.class_names), "features": features,
            "n_candidates": int(len(cands)), "n_itemsets": int(len(cands.itemsets)),
            "weights": list(weights.as_tuple()), "objective": float(objective), "objective_terms": terms,
            "default_class": int(ids.default_class), "rules": rules,
            "tree": {"rules": tree.describe(fit.names, spec.class_names),
                     "lengths": [len(c) for c, _ in tree.leaves]},
            "rule_list": {"rules": rlist.describe(fit.names, spec.class_names),
                          "lengths": [len(r.items) for r in rlist.rules], "default_class": int(rlist.default_class)},
            "metrics": metrics, "device": ctx.device.type,
        }
        arrays = {"X_fit": fit.X, "y_fit": y_fit.astype(np.int64), "label_fit": split.train_labels,
                  "X_held": held.X, "y_held": y_test.astype(np.int64), "label_held": split.test_labels,
                  "example_rows": np.asarray(ex_rows, np.int64), "example_pixels": split.test_pixels[ex_rows],
                  "icon_rows": np.asarray(icons, np.int64), "icon_pixels": split.train_pixels[icons]}
        return record, {"surrogate": ("surrogate.npz", npz_bytes(**arrays))}

    yield Unit(kind=KIND, family="data", version=VERSION, label=f"data (decision set) of {mc.id} on {dataset_id}",
               compute=compute, model=mc.id, dataset=dataset_id, inputs={"split": split.digest},
               params={**s.model_dump(), "channel_layer": layer},
               settings={"seed": ctx.config.seed, "device": ctx.device.type})


register_stage(Stage(name="data (decision set)", order=42, declare=declare_surrogate,
                     enabled=lambda config: config.data.enabled and config.data.decision_set.enabled
                     and bool(config.data.decision_set.features),
                     applies=applies))
