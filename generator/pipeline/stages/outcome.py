"""Stage: attribution maps ("interpreting outcomes") for the first images of each dataset."""

from __future__ import annotations

from typing import Any, Dict, List

import numpy as np
import torch

from generator.artifacts.store import artifact_key, json_bytes, npz_bytes
from generator.config import ModelConfig
from generator.pipeline.context import RunContext
from generator.pipeline.finite import check_logits, check_maps
from generator.pipeline.stages import Stage, register_stage
from generator.pipeline.inputs import displayed, model_input

KIND = "attribution"


def resolve_outcome_targets(ctx: RunContext, mc: ModelConfig, dataset_id: str, x: torch.Tensor) -> torch.Tensor:
    """Per-image target class indices from ``outcome.target``."""
    from generator.methods.attribution import resolve_targets

    loaded, dataset = ctx.models[mc.id], ctx.datasets[dataset_id]
    setting = ctx.config.outcome.target
    with torch.no_grad():
        logits = loaded.module(x)
    check_logits(mc.id, logits, [it.id for it in dataset.items[: x.shape[0]]])
    if setting == "label":
        labels = dataset.labels()[: x.shape[0]]
        if (labels < 0).any():
            raise ValueError(f"outcome.target is 'label' but dataset {dataset_id!r} has unlabelled images")
        return torch.as_tensor(labels, device=x.device)
    return resolve_targets(setting, logits, loaded.spec)


def _scalars(extras: Dict[str, Any]) -> Dict[str, Any]:
    """The JSON-friendly part of a method's extras (numbers and short per-image lists)."""
    out: Dict[str, Any] = {}
    for k, v in extras.items():
        if isinstance(v, torch.Tensor):
            if v.numel() <= 64:
                out[k] = v.detach().float().cpu().numpy().round(6).tolist()
        elif isinstance(v, (int, float, str, bool)):
            out[k] = v
        elif isinstance(v, (list, tuple)) and len(v) <= 64 and all(isinstance(e, (int, float, str)) for e in v):
            out[k] = list(v)
    return out


def _arrays(extras: Dict[str, Any]) -> Dict[str, np.ndarray]:
    """Larger tensors among the extras (e.g. a CAM at layer resolution), kept as float16 arrays."""
    return {k: v.detach().float().cpu().numpy().astype(np.float16) for k, v in extras.items()
            if isinstance(v, torch.Tensor) and v.numel() > 64}


def _method_key(ctx: RunContext, spec, dataset, n: int, method: str, params: Dict[str, Any]) -> str:
    from generator.methods.attribution import ATTRIBUTION_METHODS

    cls = ATTRIBUTION_METHODS.get(method)
    return artifact_key(KIND, getattr(cls, "version", "1"), method=method, params=params,
                        weights=spec.weights_digest, data=dataset.digest(), images=n,
                        target=ctx.config.outcome.target, seed=ctx.config.seed,
                        precision=ctx.config.precision, device=ctx.device.type)


def outcome_key(ctx: RunContext, mc: ModelConfig, dataset_id: str, method: str) -> str:
    """The artifact key of ``method``'s maps for this pair (later stages look the maps up by it)."""
    loaded, dataset = ctx.models[mc.id], ctx.datasets[dataset_id]
    n = min(ctx.config.outcome.images, len(dataset))
    return _method_key(ctx, loaded.spec, dataset, n, method, dict(ctx.config.outcome.params.get(method, {})))


def run_outcome(ctx: RunContext, mc: ModelConfig, dataset_id: str, bar=None) -> None:
    """Every configured method on the shown images. Methods whose artifacts are missing run
    together through :func:`attribute_many`, so methods that share passes (saliency and
    gradient x input; the SmoothGrad family; Grad-CAM variants) pay for them once."""
    from generator.methods.attribution import ATTRIBUTION_METHODS, attribute_many

    loaded, dataset = ctx.models[mc.id], ctx.datasets[dataset_id]
    spec = loaded.spec
    n = min(ctx.config.outcome.images, len(dataset))
    display = displayed(spec, dataset, n)
    ids: List[str] = [it.id for it in dataset.items[:n]]
    keys = {m: _method_key(ctx, spec, dataset, n, m, dict(ctx.config.outcome.params.get(m, {})))
            for m in ctx.config.outcome.methods}
    missing = [m for m in ctx.config.outcome.methods if ctx.store.get(KIND, keys[m]) is None]
    results: Dict[str, Any] = {}
    explainers: Dict[str, Any] = {}
    x = targets = probs = None
    if missing:
        x = model_input(spec, display, ctx.device)
        targets = resolve_outcome_targets(ctx, mc, dataset_id, x)
        with torch.no_grad():
            probs = torch.softmax(loaded.module(x).float(), 1).cpu()
        for m in missing:
            params = dict(ctx.config.outcome.params.get(m, {}))
            built = ctx.guarded(f"{m} on {mc.id}/{dataset_id}", lambda m=m, params=params: ATTRIBUTION_METHODS.get(m)(
                loaded.module, spec, **{"precision": ctx.config.precision, **params}))
            if built is not None:
                explainers[m] = built
        torch.manual_seed(ctx.config.seed)
        shared = ctx.guarded(f"attribution on {mc.id}/{dataset_id}",
                             lambda: attribute_many(list(explainers.values()), x, targets))
        if shared is None:  # one method broke the shared run: run each alone so the others survive
            for m, explainer in explainers.items():
                torch.manual_seed(ctx.config.seed)
                r = ctx.guarded(f"{m} on {mc.id}/{dataset_id}", lambda e=explainer: e.attribute(x, targets))
                if r is not None:
                    results[m] = r
        else:
            results = shared
    for method in ctx.config.outcome.methods:
        cls = ATTRIBUTION_METHODS.get(method)

        def compute(method=method, cls=cls):
            result = results[method].cpu()
            check_maps(mc.id, method, result.maps, ids)
            t = result.targets.cpu()
            record = {
                "model": mc.id, "dataset": dataset_id, "method": method, "params": explainers[method].params,
                "signed": bool(result.signed), "reduction": result.reduction, "images": ids,
                "targets": [int(v) for v in t], "target_names": [spec.class_names[int(v)] for v in t],
                "target_probabilities": [round(float(probs[i, int(v)]), 5) for i, v in enumerate(t)],
                "extras": _scalars(result.extras), "doc": (cls.__doc__ or "").strip(),
            }
            arrays = {"maps": result.maps.numpy().astype(np.float32)}
            arrays.update({f"extra_{k}": v for k, v in _arrays(result.extras).items()})
            return record, {"maps": ("maps.npz", npz_bytes(**arrays))}

        if method in missing and method not in results:
            if bar is not None:
                bar.update(1)
            continue  # its failure is already recorded
        artifact = ctx.guarded(f"{method} on {mc.id}/{dataset_id}",
                               lambda: ctx.store.get_or_compute(KIND, keys[method], compute))
        if artifact is not None:
            ctx.record(artifact[0], model=mc.id, dataset=dataset_id, method=method)
        if bar is not None:
            bar.update(1)


register_stage(Stage(name="outcome (attribution)", order=20, run=run_outcome,
                     enabled=lambda config: config.outcome.enabled and bool(config.outcome.methods),
                     units=lambda config: len(config.outcome.methods)))
