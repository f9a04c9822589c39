"""Stage: CAM threshold segmentation of the shown images (Selvaraju et al. 2017, weakly
supervised localisation): Grad-CAM thresholded at fractions of its maximum gives a mask and a
bounding box per threshold. Reuses the outcome stage's Grad-CAM maps when they exist."""

from __future__ import annotations

import numpy as np
import torch

from generator.artifacts.store import artifact_key, npz_bytes
from generator.config import ModelConfig
from generator.pipeline.context import RunContext
from generator.pipeline.inputs import displayed, model_input
from generator.pipeline.stages import Stage, register_stage
from generator.pipeline.stages.outcome import KIND as OUTCOME_KIND, outcome_key, resolve_outcome_targets

KIND = "cam_segmentation"
VERSION = "1"


def segmentation_arrays(cams: np.ndarray, thresholds, largest_component: bool = False):
    """``masks`` (T,B,H,W) bool, ``boxes`` (T,B,4) int, ``area`` (T,B) for (B,H,W) CAMs."""
    from generator.methods.attribution import cam_segmentation

    seg = cam_segmentation(torch.as_tensor(cams, dtype=torch.float32), thresholds, largest_component)
    return seg["masks"].numpy(), seg["boxes"].numpy().astype(np.int32), seg["area"].numpy().astype(np.float32)


def run_segmentation(ctx: RunContext, mc: ModelConfig, dataset_id: str, bar=None) -> None:
    from generator.methods.attribution import ATTRIBUTION_METHODS

    settings = ctx.config.evaluation.segmentation
    loaded, dataset = ctx.models[mc.id], ctx.datasets[dataset_id]
    spec = loaded.spec
    n = min(ctx.config.outcome.images, len(dataset))
    params = dict(ctx.config.outcome.params.get("gradcam", {}))
    key = artifact_key(KIND, VERSION, weights=spec.weights_digest, data=dataset.digest(), images=n,
                       params=params, target=ctx.config.outcome.target, thresholds=list(settings.thresholds),
                       largest=settings.largest_component, seed=ctx.config.seed, precision=ctx.config.precision,
                       device=ctx.device.type)

    def compute():
        stored = ctx.store.get(OUTCOME_KIND, outcome_key(ctx, mc, dataset_id, "gradcam")) \
            if "gradcam" in ctx.config.outcome.methods else None
        if stored is not None:
            cams = stored.load_npz("maps")["maps"]
            targets = stored.record["target_names"]
        else:
            x = model_input(spec, displayed(spec, dataset, n), ctx.device)
            t = resolve_outcome_targets(ctx, mc, dataset_id, x)
            explainer = ATTRIBUTION_METHODS.get("gradcam")(loaded.module, spec, **{"precision": ctx.config.precision, **params})
            cams = explainer.attribute(x, t).maps.cpu().numpy()
            targets = [spec.class_names[int(v)] for v in t.cpu()]
        masks, boxes, area = segmentation_arrays(cams, settings.thresholds, settings.largest_component)
        record = {"model": mc.id, "dataset": dataset_id, "images": [it.id for it in dataset.items[:n]],
                  "targets": list(targets), "thresholds": [float(v) for v in settings.thresholds],
                  "largest_component": settings.largest_component,
                  "area": area.round(5).tolist(), "boxes": boxes.tolist(), "layer": spec.cam_layer}
        # masks are bit-packed: T x B x H x W booleans would dominate the artifact otherwise
        return record, {"segmentation": ("segmentation.npz", npz_bytes(
            cams=cams.astype(np.float32), masks=np.packbits(masks, axis=-1), mask_shape=np.array(masks.shape),
            boxes=boxes, area=area))}

    artifact = ctx.guarded(f"CAM segmentation on {mc.id}/{dataset_id}", lambda: ctx.store.get_or_compute(KIND, key, compute))
    if artifact is not None:
        ctx.record(artifact[0], model=mc.id, dataset=dataset_id)
    if bar is not None:
        bar.update(1)




register_stage(Stage(name="CAM segmentation", order=21, run=run_segmentation,
                     enabled=lambda config: config.outcome.enabled and config.evaluation.segmentation.enabled,
                     applies=lambda ctx, mc, dataset_id: bool(ctx.models[mc.id].spec.cam_layer)))
