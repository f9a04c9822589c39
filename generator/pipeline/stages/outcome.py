"""Stage: attribution maps ("interpreting outcomes") for the first images of each dataset."""

from __future__ import annotations

import logging
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import numpy as np
import torch

from generator.artifacts.keys import effective_method_params, method_version
from generator.artifacts.store import npz_bytes
from generator.config import ModelConfig, ReportConfig
from generator.pipeline.context import RunContext
from generator.pipeline.finite import check_logits, check_maps
from generator.pipeline.inputs import displayed, model_input
from generator.pipeline.stages import Stage, register_stage
from generator.pipeline.units import Unit, unit_key

KIND = "attribution"
log = logging.getLogger(__name__)


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


def outcome_unit(ctx: RunContext, mc: ModelConfig, dataset_id: str, method: str,
                 compute: Optional[Callable[[], Any]] = None) -> Unit:
    """The unit of ``method``'s maps for this pair (its key is what later stages look them up by)."""
    dataset = ctx.datasets[dataset_id]
    params = {"precision": ctx.config.precision, **ctx.config.outcome.params.get(method, {})}
    return Unit(kind=KIND, family="attribution", label=f"{method} on {mc.id}/{dataset_id}",
                compute=compute or _declared_only, model=mc.id, dataset=dataset_id,
                method=method, params=effective_method_params(method, params), method_version=method_version(method),
                settings={"images": min(ctx.config.outcome.images, len(dataset)), "target": ctx.config.outcome.target,
                          "seed": ctx.config.seed, "device": ctx.device.type},
                labels={"method": method})


def _declared_only():
    raise RuntimeError("this unit was declared for its key only")


def outcome_key(ctx: RunContext, mc: ModelConfig, dataset_id: str, method: str) -> str:
    """The artifact key of ``method``'s maps for this pair."""
    return unit_key(ctx, outcome_unit(ctx, mc, dataset_id, method))


def shared_pass(method: str) -> str:
    """The methods whose maps come from one shared pass are computed together (and by one rank
    of a sharded run): the class attribute ``shares`` of the method ("gradient", "noise",
    "cam"), or the method alone."""
    from generator.methods.attribution import ATTRIBUTION_METHODS

    return getattr(ATTRIBUTION_METHODS.get(method), "shares", None) or f"own:{method}"


class JointAttribution:
    """The maps of the methods of a pair whose artifacts are missing, computed on first request
    through :func:`attribute_many` together with the other missing methods of the same shared
    pass (:func:`shared_pass`: saliency and gradient x input; the SmoothGrad family; Grad-CAM
    variants), so those pay for it once. Each unit then takes its own method's result, or
    re-raises its own method's error. Methods of different passes are computed separately (each
    from the same seed), so a rank of a sharded run computes only its own units' passes."""

    def __init__(self, ctx: RunContext, mc: ModelConfig, dataset_id: str, keys: Dict[str, str]) -> None:
        self.ctx, self.mc, self.dataset_id, self.keys = ctx, mc, dataset_id, keys
        self.done: set = set()  # shared passes already run (or failed)
        self.results: Dict[str, Any] = {}
        self.errors: Dict[str, BaseException] = {}
        self.explainers: Dict[str, Any] = {}
        self.probs: Optional[torch.Tensor] = None
        self._inputs: Optional[Tuple[torch.Tensor, torch.Tensor]] = None

    def _prepare(self) -> Tuple[torch.Tensor, torch.Tensor]:
        """The shown images as model input, their targets and probabilities (once per pair)."""
        if self._inputs is None:
            ctx, mc, dataset_id = self.ctx, self.mc, self.dataset_id
            loaded, dataset = ctx.models[mc.id], ctx.datasets[dataset_id]
            n = min(ctx.config.outcome.images, len(dataset))
            x = model_input(loaded.spec, displayed(loaded.spec, dataset, n), ctx.device)
            targets = resolve_outcome_targets(ctx, mc, dataset_id, x)
            with torch.no_grad():
                self.probs = torch.softmax(loaded.module(x).float(), 1).cpu()
            self._inputs = (x, targets)
        return self._inputs

    def _run(self, methods: List[str]) -> None:
        from generator.methods.attribution import ATTRIBUTION_METHODS, attribute_many

        ctx, mc = self.ctx, self.mc
        loaded = ctx.models[mc.id]
        x, targets = self._prepare()
        explainers = {}
        for m in methods:
            params = {"precision": ctx.config.precision, **ctx.config.outcome.params.get(m, {})}
            try:
                explainers[m] = self.explainers[m] = ATTRIBUTION_METHODS.get(m)(loaded.module, loaded.spec, **params)
            except Exception as exc:  # noqa: BLE001 - that method's unit reports it
                self.errors[m] = exc
        torch.manual_seed(ctx.config.seed)
        try:
            self.results.update(attribute_many(list(explainers.values()), x, targets))
            return
        except Exception:  # noqa: BLE001 - not a result of its own: the methods rerun alone and report
            log.debug("shared attribution pass on %s/%s failed; each method alone", mc.id, self.dataset_id,
                      exc_info=True)
        for m, explainer in explainers.items():  # one method broke the shared run: each alone
            torch.manual_seed(ctx.config.seed)
            try:
                self.results[m] = explainer.attribute(x, targets)
            except Exception as exc:  # noqa: BLE001
                self.errors[m] = exc

    def result(self, method: str) -> Any:
        shared = shared_pass(method)
        if shared not in self.done:
            self.done.add(shared)  # once, even when it raises: the error below is then every unit's
            members = [m for m, key in self.keys.items()
                       if shared_pass(m) == shared and (m == method or self.ctx.store.get(KIND, key) is None)]
            try:
                self._run(members)
            except Exception as exc:  # noqa: BLE001
                self.errors.update({m: exc for m in members})
        if method in self.errors:
            raise self.errors[method]
        if method not in self.results:
            raise RuntimeError(f"{method} was stored when the run started and has gone since")
        return self.results[method]


def model_methods(config: ReportConfig, model_id: str) -> List[str]:
    """The attribution methods computed for ``model_id``: ``outcome.methods_by_model[model_id]``
    where the config names the model there, else ``outcome.methods``."""
    return config.outcome.methods_for(model_id)


def _any_methods(config: ReportConfig) -> bool:
    return any(model_methods(config, mc.id) for mc in config.models)


def _most_methods(config: ReportConfig) -> int:
    return max((len(model_methods(config, mc.id)) for mc in config.models), default=0)


def declare_outcome(ctx: RunContext, mc: ModelConfig, dataset_id: str) -> Iterator[Unit]:
    """One unit per method computed for this model (:func:`model_methods`), on the shown images."""
    from generator.methods.attribution import ATTRIBUTION_METHODS

    loaded, dataset = ctx.models[mc.id], ctx.datasets[dataset_id]
    spec = loaded.spec
    n = min(ctx.config.outcome.images, len(dataset))
    ids: List[str] = [it.id for it in dataset.items[:n]]
    methods = model_methods(ctx.config, mc.id)
    units = {m: outcome_unit(ctx, mc, dataset_id, m) for m in methods}
    joint = JointAttribution(ctx, mc, dataset_id, {m: unit_key(ctx, u) for m, u in units.items()})
    for method, unit in units.items():
        cls = ATTRIBUTION_METHODS.get(method)

        def compute(method=method, cls=cls):
            result = joint.result(method).cpu()
            check_maps(mc.id, method, result.maps, ids)
            t = result.targets.cpu()
            probs = joint.probs
            record = {
                "model": mc.id, "dataset": dataset_id, "method": method, "params": joint.explainers[method].params,
                "signed": bool(result.signed), "reduction": result.reduction, "images": ids,
                "targets": [int(v) for v in t], "target_names": [spec.class_names[int(v)] for v in t],
                "target_probabilities": [round(float(probs[i, int(v)]), 5) for i, v in enumerate(t)],
                "extras": _scalars(result.extras), "doc": (cls.__doc__ or "").strip(),
            }
            arrays = {"maps": result.maps.numpy().astype(np.float32)}
            arrays.update({f"extra_{k}": v for k, v in _arrays(result.extras).items()})
            return record, {"maps": ("maps.npz", npz_bytes(**arrays))}

        unit.compute = compute
        # Methods of one shared pass run on one rank (JointAttribution computes them together).
        unit.group = f"attribution|{mc.id}|{dataset_id}|{shared_pass(method)}"
        yield unit


register_stage(Stage(name="outcome (attribution)", order=20, declare=declare_outcome,
                     enabled=lambda config: config.outcome.enabled and _any_methods(config),
                     expected=_most_methods))
