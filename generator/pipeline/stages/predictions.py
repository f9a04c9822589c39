"""Stage: top-k predictions of every model on every image of its datasets."""

from __future__ import annotations

from typing import Iterator, Optional, Sequence, Tuple

import numpy as np
import torch

from generator.artifacts.store import json_bytes, npz_bytes
from generator.config import ModelConfig
from generator.data.dataset import Dataset
from generator.engine.preprocess import batches
from generator.pipeline.context import RunContext
from generator.pipeline.finite import check_logits
from generator.pipeline.inputs import display_batches, displayed, model_input
from generator.pipeline.stages import Stage, register_stage
from generator.pipeline.units import Unit

KIND = "predictions"
VERSION = "2"  # 2: topk.npz names every image (ids)


@torch.no_grad()
def predict(model: torch.nn.Module, spec, display: np.ndarray, device: torch.device, batch_size: int = 256,
            ids: Optional[Sequence[str]] = None) -> np.ndarray:
    """Softmax probabilities (N x classes, float32) in large batches; non-finite logits raise
    :class:`NonFiniteError` naming the images (``ids``)."""
    out = []
    for sl in batches(len(display), batch_size):
        logits = model(model_input(spec, display[sl], device))
        check_logits(spec.id, logits, list(ids or range(len(display)))[sl])
        out.append(torch.softmax(logits.float(), dim=1).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, spec.num_classes), np.float32)


@torch.no_grad()
def predict_top_k(model: torch.nn.Module, spec, dataset: Dataset, device: torch.device, top_k: int,
                  batch_size: int = 256) -> Tuple[np.ndarray, np.ndarray]:
    """``(classes N x k int64, probabilities N x k float32)`` of every image, best first.

    The dataset is read in batches (files decoded by DataLoader workers) and only the top ``k``
    of each row is kept, so memory is one batch plus ``N x k`` whatever the dataset's size.
    Ties keep the lower class first, as a stable sort of the full probabilities would.
    """
    ids = [it.id for it in dataset.items]
    order_parts, prob_parts = [], []
    for sl, display in display_batches(spec, dataset, batch_size=batch_size):
        logits = model(model_input(spec, display, device))
        check_logits(spec.id, logits, ids[sl])
        probs = torch.softmax(logits.float(), dim=1).cpu().numpy()
        order = np.argsort(-probs, axis=1, kind="stable")[:, :top_k]
        order_parts.append(order)
        prob_parts.append(np.take_along_axis(probs, order, axis=1))
    if not order_parts:
        return np.zeros((0, top_k), np.int64), np.zeros((0, top_k), np.float32)
    return np.concatenate(order_parts), np.concatenate(prob_parts)


def declare_predictions(ctx: RunContext, mc: ModelConfig, dataset_id: str) -> Iterator[Unit]:
    """One unit: the whole dataset's top-k predictions (and the shown images' inputs)."""
    loaded, dataset = ctx.models[mc.id], ctx.datasets[dataset_id]
    spec = loaded.spec
    top_k = min(ctx.config.predictions.top_k, spec.num_classes)
    shown = min(ctx.config.outcome.images, len(dataset))

    def compute():
        order, top_p = predict_top_k(loaded.module, spec, dataset, ctx.device, top_k)
        display = displayed(spec, dataset, shown)  # only the shown images are kept as pixels
        labels = dataset.labels()
        has_labels = dataset.has_labels and len(dataset.class_names) == spec.num_classes
        summary = {"model": mc.id, "dataset": dataset_id, "count": int(len(dataset)), "top_k": top_k,
                   "has_labels": bool(has_labels)}
        if has_labels:
            pred = order[:, 0]
            summary["accuracy"] = float((pred == labels).mean())
            summary["top_k_accuracy"] = float((order == labels[:, None]).any(axis=1).mean())
            confusion = np.zeros((spec.num_classes, spec.num_classes), dtype=np.int64)
            np.add.at(confusion, (labels, pred), 1)
            summary["confusion"] = confusion.tolist()
            summary["per_class_accuracy"] = (np.diag(confusion) / np.maximum(confusion.sum(1), 1)).round(4).tolist()
        rows = []
        for i, item in enumerate(dataset.items[:shown]):
            rows.append({
                "id": item.id, "title": item.title, "licence": item.licence, "source": item.source,
                "label": None if item.label is None else int(item.label),
                "label_name": (dataset.class_names[item.label] if item.label is not None and dataset.class_names
                               else None),
                "top": [{"index": int(c), "name": spec.class_names[c], "probability": round(float(p), 5)}
                        for c, p in zip(order[i], top_p[i])],
            })
        summary["shown"] = rows
        return summary, {
            "summary": ("summary.json", json_bytes(summary)),
            # ids: a reviewer's diff names the images whose prediction changed, shown or not
            "topk": ("topk.npz", npz_bytes(index=order.astype(np.int32), probability=top_p.astype(np.float32),
                                            label=labels, ids=np.array([it.id for it in dataset.items[:len(order)]]))),
            "inputs": ("inputs.npz", npz_bytes(pixels=display[:shown],
                                                ids=np.array([it.id for it in dataset.items[:shown]]))),
        }

    yield Unit(kind=KIND, family="predictions", version=VERSION, label=f"predictions of {mc.id} on {dataset_id}",
               compute=compute, model=mc.id, dataset=dataset_id, params={"top_k": top_k, "shown": shown},
               settings={"device": ctx.device.type})


register_stage(Stage(name="predictions", order=10, declare=declare_predictions))
