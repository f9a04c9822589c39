"""Stage: prototypes and criticisms of the training examples (MMD-critic, Kim, Khanna & Koyejo 2016).

Per class and over all classes, in the model's embedding space (``data.embedding_layer``,
default the spec's penultimate layer) or in raw pixels (``data.space: pixels``). The record
keeps, for each prototype and criticism, its row in the training source, label, witness value
and the model's prediction, so pages can say how often criticisms are misclassified.
"""

from __future__ import annotations

from typing import Any, Dict, Iterator, List

import numpy as np
import torch

from generator.artifacts.store import npz_bytes
from generator.config import ModelConfig
from generator.pipeline.context import RunContext
from generator.pipeline.inputs import DisplayRows
from generator.pipeline.stages import Stage, register_stage
from generator.pipeline.stages.data_common import applies, data_split, embedding_layer, final_passes
from generator.pipeline.units import Unit

KIND = "data_prototypes"
VERSION = "1"


def _entries(rows: np.ndarray, witness: np.ndarray, split, pred: np.ndarray, probs: np.ndarray) -> List[Dict[str, Any]]:
    return [{"row": int(r), "source_index": int(split.train_index[r]), "label": int(split.train_labels[r]),
             "prediction": int(pred[r]), "probability": round(float(probs[r, pred[r]]), 5),
             "witness": float(w)} for r, w in zip(rows, witness)]


def _summary(res, split, pred, probs, label, name) -> Dict[str, Any]:
    protos = _entries(res.prototypes, res.prototype_witness, split, pred, probs)
    crits = _entries(res.criticisms, res.criticism_witness, split, pred, probs)
    return {"label": label, "name": name, "n": int(res.n), "prototypes": protos, "criticisms": crits,
            "mmd2": [float(v) for v in res.mmd2],
            "witness_quantiles": [float(v) for v in np.quantile(res.witness, [0, 0.05, 0.5, 0.95, 1])]}


def misclassified_share(entries: List[Dict[str, Any]]) -> float | None:
    return float(np.mean([e["prediction"] != e["label"] for e in entries])) if entries else None


def pixel_matrix(pixels: DisplayRows, batch_size: int = 500) -> np.ndarray:
    """float32 ``N x (H*W*C)`` in [0, 1]: the pool in pixel space, filled batch by batch so only
    the float matrix MMD-critic works on is held, never the decoded images as well."""
    n = len(pixels)
    _, h, w = pixels.spec.input_size
    X = np.empty((n, h * w * pixels.spec.channels), np.float32)
    for sl, batch in pixels.batches(batch_size):
        X[sl] = batch.reshape(len(batch), -1).astype(np.float32) / 255.0
    return X


def declare_prototypes(ctx: RunContext, mc: ModelConfig, dataset_id: str) -> Iterator[Unit]:
    """One unit: MMD-critic per class and over all classes."""
    from generator.methods.data.mmd_critic import median_heuristic_bandwidth, mmd_critic, mmd_critic_per_class

    settings, ps = ctx.config.data, ctx.config.data.prototypes
    loaded = ctx.models[mc.id]
    spec = loaded.spec
    split = data_split(ctx, mc, dataset_id)
    layer = embedding_layer(ctx, mc) if settings.space == "embedding" else None
    if settings.space == "embedding" and not layer:
        raise ctx.config.error(("data", "embedding_layer"), f"model {mc.id!r} has no embedding layer; name one")

    def compute():
        train, _ = final_passes(ctx, mc, dataset_id)
        X = train["embedding"] if settings.space == "embedding" else pixel_matrix(split.train_pixels)
        logits = torch.as_tensor(train["logits"])
        probs = torch.softmax(logits, 1).numpy()
        pred = probs.argmax(1)
        Xt = torch.as_tensor(X, device=ctx.device)
        sigma = ps.sigma
        if ps.kernel == "rbf" and sigma is None:
            sigma = median_heuristic_bandwidth(Xt, seed=ctx.config.seed)  # shared by every class
        common = dict(kernel=ps.kernel, sigma=sigma, regularizer=ps.regularizer, device=ctx.device,
                      seed=ctx.config.seed)
        per = mmd_critic_per_class(Xt, split.train_labels, ps.per_class, ps.criticisms_per_class, **common)
        per.pop("all")  # the global selection has its own sizes
        glob = mmd_critic(Xt, ps.global_prototypes, ps.global_criticisms, **common)
        names = spec.class_names
        classes = [_summary(r, split, pred, probs, int(c), names[int(c)]) for c, r in sorted(per.items())]
        everything = _summary(glob, split, pred, probs, None, "all classes")
        all_p = [e for c in classes for e in c["prototypes"]]
        all_c = [e for c in classes for e in c["criticisms"]]
        rows = sorted({e["row"] for c in [*classes, everything] for e in c["prototypes"] + c["criticisms"]})
        record = {
            "model": mc.id, "dataset": dataset_id, "space": settings.space, "layer": layer,
            "kernel": ps.kernel, "sigma": None if sigma is None else float(sigma), "regularizer": ps.regularizer,
            "params": ps.model_dump(), "split": split.describe(), "device": ctx.device.type,
            "dimension": int(X.shape[1]), "classes": classes, "global": everything,
            "class_names": list(names),
            "rates": {"prototypes_misclassified": misclassified_share(all_p),
                      "criticisms_misclassified": misclassified_share(all_c),
                      "pool_misclassified": float(np.mean(pred != split.train_labels))},
        }
        files = {"images": ("images.npz", npz_bytes(rows=np.asarray(rows, np.int64),
                                                    pixels=split.train_pixels[rows]))}
        return record, files

    yield Unit(kind=KIND, family="data", version=VERSION, label=f"data (prototypes) of {mc.id} on {dataset_id}",
               compute=compute, model=mc.id, dataset=dataset_id, inputs={"split": split.digest},
               params={**ps.model_dump(), "space": settings.space, "layer": layer},
               settings={"seed": ctx.config.seed, "device": ctx.device.type})


register_stage(Stage(name="data (prototypes)", order=40, declare=declare_prototypes,
                     enabled=lambda config: config.data.enabled and config.data.prototypes.enabled,
                     applies=applies))
