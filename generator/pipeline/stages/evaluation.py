"""Stage: evaluation of the attribution methods on each (model, dataset) pair: selectivity
(deletion / insertion), class sensitivity and the cascading-randomisation sanity check.
ROAR / KAR, which retrains, lives in :mod:`evaluation_roar`."""

from __future__ import annotations

from typing import Any, Dict, Iterator, List, Optional

import numpy as np
import torch

from generator.artifacts.keys import effective_method_params
from generator.artifacts.store import npz_bytes
from generator.config import ModelConfig
from generator.pipeline.context import RunContext
from generator.pipeline.inputs import displayed, model_input
from generator.pipeline.stages import Stage, register_stage
from generator.pipeline.stages.outcome import KIND as OUTCOME_KIND
from generator.pipeline.stages.outcome import model_methods, outcome_key, resolve_outcome_targets
from generator.pipeline.units import Need, Unit

# 2: selectivity records the maps their method flagged unreliable, and patch alignment
# 3: selectivity records degenerate maps (left out of the means; methods with mostly degenerate
#    maps left out of the order) and methods with identical maps; the sanity check records the
#    per-image similarity after the last step (the pages judge spread and verdicts from these)
VERSION = "3"


def evaluated_methods(config, model_id: Optional[str] = None) -> List[str]:
    """``evaluation.methods``; by default the outcome methods of ``model_id``
    (``outcome.methods_by_model``), or of every model when None. Unknown names are dropped by
    the caller. Sensitivity and sanity compute their own maps, so an explicit list runs as given;
    selectivity reads stored maps and keeps only the methods the model has maps for."""
    if config.evaluation.methods is not None:
        return list(config.evaluation.methods)
    if model_id is not None:
        return model_methods(config, model_id)
    return config.outcome.all_methods([mc.id for mc in config.models])


def method_params(config, method: str) -> Dict[str, Any]:
    return {**dict(config.outcome.params.get(method, {})), **dict(config.evaluation.params.get(method, {}))}


def _check_names(names: List[str]) -> None:
    from generator.methods.attribution import ATTRIBUTION_METHODS

    for n in names:
        ATTRIBUTION_METHODS.get(n)  # raises with close-match suggestions


def _bound(ctx: RunContext, mc: ModelConfig, names: List[str]) -> Dict[str, Any]:
    from generator.methods.attribution import ATTRIBUTION_METHODS

    loaded = ctx.models[mc.id]
    return {n: ATTRIBUTION_METHODS.get(n)(loaded.module, loaded.spec,
                                         **{"precision": ctx.config.precision, **method_params(ctx.config, n)})
            for n in names}


def _count(ctx: RunContext, dataset_id: str, k: int) -> int:
    """How many of the shown images a check uses."""
    return min(k, ctx.config.outcome.images, len(ctx.datasets[dataset_id]))


def _images(ctx: RunContext, mc: ModelConfig, dataset_id: str, n: int) -> torch.Tensor:
    loaded, dataset = ctx.models[mc.id], ctx.datasets[dataset_id]
    shown = min(ctx.config.outcome.images, len(dataset))
    return model_input(loaded.spec, displayed(loaded.spec, dataset, shown)[:n], ctx.device)


def effective_params(config, names: List[str]) -> Dict[str, Dict[str, Any]]:
    """Each method's effective parameters as the checks run it (defaults merged)."""
    return {m: effective_method_params(m, {"precision": config.precision, **method_params(config, m)})
            for m in names}


def _unit(ctx: RunContext, mc: ModelConfig, dataset_id: str, check: str, compute, n: int,
          params: Dict[str, Any], needs: Optional[Dict[str, Need]] = None) -> Unit:
    """A check's unit: every check depends on the shown images, the targets, seed and device."""
    dataset = ctx.datasets[dataset_id]
    return Unit(kind=f"evaluation_{check}", family="evaluation", version=VERSION,
                label=f"evaluation {check} on {mc.id}/{dataset_id}", compute=compute, model=mc.id,
                dataset=dataset_id, needs=needs or {}, params=params,
                settings={"images": n, "seed": ctx.config.seed, "device": ctx.device.type,
                          "target": ctx.config.outcome.target,
                          "shown": min(ctx.config.outcome.images, len(dataset))})


def patch_pixels(patch, side: int) -> int:
    if isinstance(patch, float) and 0 < patch < 1:
        return max(1, int(round(patch * side)))
    return max(1, int(patch))


def unreliable_maps(stored: Dict[str, Any], n: int) -> Dict[str, List[str]]:
    """Method -> "image: reason" for each of the first ``n`` maps its own method flagged as
    unreliable (LRP's conservation, integrated gradients' completeness): such a map is not the
    method's explanation, and its curves must not be read as the method's."""
    out: Dict[str, List[str]] = {}
    for method, art in stored.items():
        extras = art.record.get("extras", {})
        flags, notes = extras.get("reliable"), extras.get("reliability_note") or []
        if not isinstance(flags, list):
            continue
        bad = [f"{image}: {notes[i] if i < len(notes) else ''}".rstrip(": ")
               for i, (image, ok) in enumerate(zip(art.record["images"][:n], flags[:n])) if not ok]
        if bad:
            out[method] = bad
    return out


def selectivity_unit(ctx: RunContext, mc: ModelConfig, dataset_id: str) -> Optional[Unit]:
    """Deletion and insertion curves from the outcome stage's stored maps (no recomputation);
    None when no method's maps are stored.

    Self-checks that need the maps are recorded with the curves: each degenerate map (all
    zero, constant, not finite: its deletion order is the raster order) is left out of its
    method's means, a method with mostly degenerate maps is left out of the order
    (``excluded``), and pairs of methods whose maps are the same are named (``identical``)."""
    from generator.evaluation import deletion_insertion

    s = ctx.config.evaluation.selectivity
    names = [m for m in evaluated_methods(ctx.config, mc.id) if m in model_methods(ctx.config, mc.id)]
    keys = {m: outcome_key(ctx, mc, dataset_id, m) for m in names}
    # Only the maps that exist: a method whose maps failed is left out of the curves.
    needs = {m: Need(OUTCOME_KIND, k) for m, k in keys.items() if ctx.lookup(OUTCOME_KIND, k) is not None}
    if not needs:
        return None
    n = _count(ctx, dataset_id, s.images_for(mc.id))
    patch = patch_pixels(s.patch, int(ctx.models[mc.id].spec.input_size[1]))
    aligned = None
    tokens = ctx.models[mc.id].spec.tokens
    if tokens:  # a vision transformer: remove whole patches, as the model sees the image
        patch = int(tokens["patch"][0])
        aligned = f"cells aligned to the model's {patch} px patches"

    def compute(**stored):
        from generator.evaluation.statistics import identical_pairs, map_problems, selectivity_statistics

        loaded = ctx.models[mc.id]
        x = _images(ctx, mc, dataset_id, n)
        stored_maps = {m: np.asarray(a.load_npz("maps")["maps"][:n]) for m, a in stored.items()}
        problems = {m: map_problems(v, s.constant_tolerance) for m, v in stored_maps.items()}
        # a non-finite map is left out of the figures; zeros keep its curves computable
        maps = {m: torch.nan_to_num(torch.as_tensor(v).float(), nan=0.0, posinf=0.0, neginf=0.0)
                for m, v in stored_maps.items()}
        first = next(iter(stored.values()))
        target = torch.as_tensor(first.record["targets"][:n])
        res = deletion_insertion(loaded.module, x, maps, target, steps=s.steps, patch=patch,
                                 deletion_baseline=s.deletion_baseline, insertion_baseline=s.insertion_baseline,
                                 output=s.output, precision=ctx.config.precision)
        methods = list(maps)
        images = first.record["images"][:n]
        arrays = {"fractions": res["deletion"]["fractions"].cpu().numpy()}
        record: Dict[str, Any] = {"model": mc.id, "dataset": dataset_id, "methods": methods,
                                  "images": images, "steps": s.steps, "patch": patch,
                                  "deletion_baseline": s.deletion_baseline, "insertion_baseline": s.insertion_baseline,
                                  "output": s.output, "auc": {}, "aligned": aligned,
                                  "unreliable": unreliable_maps(stored, n)}
        for mode in ("deletion", "insertion"):
            arrays[mode] = np.stack([res[mode]["curves"][m].cpu().numpy() for m in methods]).astype(np.float32)
            record["auc"][mode] = {m: [round(float(v), 6) for v in res[mode]["auc"][m].cpu()] for m in methods}
        degenerate = {m: [{"index": i, "image": images[i], "problem": p} for i, p in enumerate(problems[m]) if p]
                      for m in methods if any(problems[m])}
        left_out = {m: [d["index"] for d in v] for m, v in degenerate.items()}
        stats = selectivity_statistics(record["auc"], methods, left_out, resamples=0)
        summary = stats["summary"]
        # means over the usable images (every image when none is): the figures the order uses
        record["mean_auc"] = {
            mode: {m: (summary[m][f"mean_{mode}"] if summary[m][f"mean_{mode}"] is not None
                       else round(float(np.mean(record["auc"][mode][m])), 6)) for m in methods}
            for mode in ("deletion", "insertion")}
        # insertion minus deletion AUC: one number where higher is better for both curves
        record["score"] = {m: round(record["mean_auc"]["insertion"][m] - record["mean_auc"]["deletion"][m], 6)
                           for m in methods}
        record.update(degenerate=degenerate, excluded=stats["excluded"],
                      ranking=sorted(stats["ranking"], key=lambda m: -record["score"][m]),
                      constant_tolerance=s.constant_tolerance, identical_correlation=s.identical_correlation,
                      identical=identical_pairs(stored_maps, {m: [not p for p in problems[m]] for m in methods},
                                                threshold=s.identical_correlation))
        return record, {"curves": ("curves.npz", npz_bytes(**arrays))}

    # min_images and bootstrap only judge the recorded numbers on the page: not part of the key
    return _unit(ctx, mc, dataset_id, "selectivity", compute, n,
                 {**s.model_dump(exclude={"models", "enabled", "min_images", "bootstrap"}), "patch_pixels": patch},
                 needs)


def _targets(ctx: RunContext, mc: ModelConfig, dataset_id: str, x: torch.Tensor) -> torch.Tensor:
    shown = min(ctx.config.outcome.images, len(ctx.datasets[dataset_id]))
    x_all = model_input(ctx.models[mc.id].spec, displayed(ctx.models[mc.id].spec, ctx.datasets[dataset_id], shown),
                        ctx.device)
    return resolve_outcome_targets(ctx, mc, dataset_id, x_all)[: x.shape[0]]


def sensitivity_unit(ctx: RunContext, mc: ModelConfig, dataset_id: str) -> Unit:
    """Class sensitivity: does each method's map change when the target class does?"""
    from generator.evaluation import class_sensitivity

    s = ctx.config.evaluation.sensitivity
    names = evaluated_methods(ctx.config, mc.id)
    _check_names(names)
    n = _count(ctx, dataset_id, s.images_for(mc.id))

    def compute():
        loaded = ctx.models[mc.id]
        x = _images(ctx, mc, dataset_id, n)
        with torch.no_grad():
            logits = loaded.module(x).float()
        torch.manual_seed(ctx.config.seed)
        res = class_sensitivity(_bound(ctx, mc, names), x, logits, seed=ctx.config.seed, threshold=s.threshold)
        spec = loaded.spec
        first = next(iter(res.values()))
        record: Dict[str, Any] = {
            "model": mc.id, "dataset": dataset_id, "methods": names, "threshold": s.threshold,
            "images": [it.id for it in ctx.datasets[dataset_id].items[:n]],
            "classes": {k: [spec.class_names[int(v)] for v in t.cpu()] for k, t in first["targets"].items()},
            "per_method": {m: {k: [round(float(v), 6) for v in r[k].cpu()] for k in
                               ("spearman_top2", "spearman_random", "pearson_top2", "pearson_random")}
                           | {"class_insensitive": r["class_insensitive"]} for m, r in res.items()},
        }
        for r in record["per_method"].values():
            for k in ("spearman_top2", "spearman_random", "pearson_top2", "pearson_random"):
                r[f"mean_{k}"] = round(float(np.mean(r[k])), 6)
        return record, {}

    return _unit(ctx, mc, dataset_id, "sensitivity", compute, n,
                 {"methods": effective_params(ctx.config, names), "threshold": s.threshold})


def sanity_unit(ctx: RunContext, mc: ModelConfig, dataset_id: str) -> Unit:
    """Cascading randomisation: do the maps change when the weights are randomised?"""
    from generator.evaluation import cascading_randomization
    from generator.evaluation.sanity import default_cascade
    from generator.methods.attribution import ATTRIBUTION_METHODS

    s = ctx.config.evaluation.sanity
    names = evaluated_methods(ctx.config, mc.id)
    _check_names(names)
    n = _count(ctx, dataset_id, s.images_for(mc.id))
    loaded = ctx.models[mc.id]
    layers = default_cascade(loaded.module)[: s.max_layers]

    def compute():
        x = _images(ctx, mc, dataset_id, n)
        target = _targets(ctx, mc, dataset_id, x)
        methods = {m: (ATTRIBUTION_METHODS.get(m), loaded.spec, {"precision": ctx.config.precision,
                                                                  **method_params(ctx.config, m)}) for m in names}
        torch.manual_seed(ctx.config.seed)
        res = cascading_randomization(loaded.module, methods, x, target, layers=layers, seed=ctx.config.seed,
                                      threshold=s.threshold)
        record = {"model": mc.id, "dataset": dataset_id, "methods": names, "layers": layers, "threshold": s.threshold,
                  "images": [it.id for it in ctx.datasets[dataset_id].items[:n]],
                  "per_method": {m: {"spearman_abs": [round(v, 6) for v in r["spearman_abs"]],
                                     "spearman": [round(v, 6) for v in r["spearman"]],
                                     "ssim": [round(v, 6) for v in r["ssim"]],
                                     "final_per_image": [round(v, 6) for v in r["final_per_image"]],
                                     "weight_insensitive": r["weight_insensitive"]} for m, r in res.items()}}
        return record, {}

    return _unit(ctx, mc, dataset_id, "sanity", compute, n,
                 {"methods": effective_params(ctx.config, names), "threshold": s.threshold, "layers": layers})


CHECKS = (("selectivity", selectivity_unit), ("sensitivity", sensitivity_unit), ("sanity", sanity_unit))


def declare_evaluation(ctx: RunContext, mc: ModelConfig, dataset_id: str) -> Iterator[Unit]:
    """One unit per check that applies to the model. A check that cannot even be declared (an
    unknown method name) is reported under its own name and the other checks still run."""
    for name, make in CHECKS:
        if getattr(ctx.config.evaluation, name).applies_to(mc.id):
            unit = ctx.guarded(f"evaluation {name} on {mc.id}/{dataset_id}",
                               lambda make=make: make(ctx, mc, dataset_id))
            if unit is not None:
                yield unit


register_stage(Stage(name="evaluation", order=40, declare=declare_evaluation,
                     # With no attribution method to evaluate there is nothing to check.
                     enabled=lambda config: (config.evaluation.enabled and config.outcome.enabled
                                             and bool(evaluated_methods(config))),
                     expected=lambda config: len(CHECKS)))
