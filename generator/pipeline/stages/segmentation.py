"""Stage: CAM threshold segmentation of the shown images (Selvaraju et al. 2017, weakly
supervised localisation): Grad-CAM thresholded at fractions of its maximum gives a mask and a
bounding box per threshold. Reuses the outcome stage's Grad-CAM maps when they exist."""

from __future__ import annotations

from typing import Iterator, List, Sequence

import numpy as np
import torch

from generator.artifacts.keys import effective_method_params, method_version
from generator.artifacts.store import npz_bytes
from generator.config import ModelConfig
from generator.pipeline.context import RunContext
from generator.pipeline.inputs import displayed, model_input
from generator.pipeline.stages import Stage, register_stage
from generator.pipeline.stages.outcome import KIND as OUTCOME_KIND
from generator.pipeline.stages.outcome import outcome_key, resolve_outcome_targets
from generator.pipeline.units import Unit

KIND = "cam_segmentation"
VERSION = "1"
#: Grad-CAM's own localisation threshold (15 % of the CAM's maximum, Selvaraju et al. 2017):
#: always among the thresholds, so the page shows the paper's choice next to the sweep.
PAPER_THRESHOLD = 0.15


def sweep_thresholds(configured: Sequence[float]) -> List[float]:
    """The configured thresholds with the paper's 15 % added, ascending, without duplicates."""
    return sorted({round(float(v), 6) for v in configured} | {PAPER_THRESHOLD})


def segmentation_arrays(cams: np.ndarray, thresholds, largest_component: bool = False):
    """``masks`` (T,B,H,W) bool, ``boxes`` (T,B,4) int, ``area`` (T,B) for (B,H,W) CAMs."""
    from generator.methods.attribution import cam_segmentation

    seg = cam_segmentation(torch.as_tensor(cams, dtype=torch.float32), thresholds, largest_component)
    return seg["masks"].numpy(), seg["boxes"].numpy().astype(np.int32), seg["area"].numpy().astype(np.float32)


def declare_segmentation(ctx: RunContext, mc: ModelConfig, dataset_id: str) -> Iterator[Unit]:
    """One unit: Grad-CAM of the shown images thresholded into masks and boxes."""
    from generator.methods.attribution import ATTRIBUTION_METHODS

    settings = ctx.config.evaluation.segmentation
    thresholds = sweep_thresholds(settings.thresholds)
    loaded, dataset = ctx.models[mc.id], ctx.datasets[dataset_id]
    spec = loaded.spec
    n = min(ctx.config.outcome.images, len(dataset))
    params = {"precision": ctx.config.precision, **ctx.config.outcome.params.get("gradcam", {})}

    def compute():
        stored = ctx.lookup(OUTCOME_KIND, outcome_key(ctx, mc, dataset_id, "gradcam")) \
            if "gradcam" in ctx.config.outcome.methods_for(mc.id) else None
        if stored is not None:
            cams = stored.load_npz("maps")["maps"]
            targets = stored.record["target_names"]
        else:
            x = model_input(spec, displayed(spec, dataset, n), ctx.device)
            t = resolve_outcome_targets(ctx, mc, dataset_id, x)
            explainer = ATTRIBUTION_METHODS.get("gradcam")(loaded.module, spec, **params)
            cams = explainer.attribute(x, t).maps.cpu().numpy()
            targets = [spec.class_names[int(v)] for v in t.cpu()]
        masks, boxes, area = segmentation_arrays(cams, thresholds, settings.largest_component)
        record = {"model": mc.id, "dataset": dataset_id, "images": [it.id for it in dataset.items[:n]],
                  "targets": list(targets), "thresholds": thresholds,
                  "largest_component": settings.largest_component,
                  "area": area.round(5).tolist(), "boxes": boxes.tolist(), "layer": spec.cam_layer}
        # masks are bit-packed: T x B x H x W booleans would dominate the artifact otherwise
        return record, {"segmentation": ("segmentation.npz", npz_bytes(
            cams=cams.astype(np.float32), masks=np.packbits(masks, axis=-1), mask_shape=np.array(masks.shape),
            boxes=boxes, area=area))}

    # The outcome stage's Grad-CAM maps are reused when stored, but they are an optimisation,
    # not an input: the result is the same without them, so they are no ``need``.
    yield Unit(kind=KIND, family="attribution", version=VERSION, label=f"CAM segmentation on {mc.id}/{dataset_id}",
               compute=compute, model=mc.id, dataset=dataset_id,
               params={"gradcam": effective_method_params("gradcam", params), "thresholds": thresholds,
                       "largest": settings.largest_component},
               method="gradcam", method_version=method_version("gradcam"),
               settings={"images": n, "target": ctx.config.outcome.target, "seed": ctx.config.seed,
                         "device": ctx.device.type})


register_stage(Stage(name="CAM segmentation", order=21, declare=declare_segmentation,
                     enabled=lambda config: config.outcome.enabled and config.evaluation.segmentation.enabled,
                     applies=lambda ctx, mc, dataset_id: bool(ctx.models[mc.id].spec.cam_layer)))
