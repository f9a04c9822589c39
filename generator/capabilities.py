"""What each attribution method does on each model: runs (with its axiom figure), not applicable
(with the reason), or failed (with the message).

Two producers share the words and the figures defined here:

* :func:`probe_capabilities` (``modelcard list methods --model report.yaml``) loads each model of a
  report and attributes ONE input with every attribution method of the catalogue, at cheap
  settings (:data:`PROBE_CAPS`);
* the site's Capabilities page (:mod:`generator.render.pages.capability`) reads the run's stored
  records instead, never torch.

So this module imports torch only inside :func:`probe_capabilities`; :class:`Capability`,
:func:`axiom_figure` and :func:`one_line` are torch-free. A figure is only ever a median of finite
per-image values the method itself reported: a method without an axiom check says "runs", and a
figure that is missing or not finite is said to be missing, never printed as NaN.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional, Sequence, Tuple

from generator import catalogue

if TYPE_CHECKING:  # torch-side types, in annotations only
    from generator.config import ModelConfig, ReportConfig

RUNS = "runs"
NOT_APPLICABLE = "not applicable"
FAILED = "failed"
NOT_REQUESTED = "not requested"
NOT_RUN = "not run"

#: Symbol and words of each status: a page or terminal never shows the symbol alone.
MARKS = {RUNS: "✓", NOT_APPLICABLE: "✗", FAILED: "✗", NOT_REQUESTED: "–", NOT_RUN: "–"}

#: Cost parameters capped by the probe (one image, to say whether a method runs, not to explain).
PROBE_CAPS = {"steps": 8, "n_samples": 4}

#: What each axiom figure is, its unit, and when it is too weak to mean anything.
FIGURE_HELP = {
    "conservation": ("conservation", "Σ relevance / target logit, the median over the maps; 1 = every bit of "
                     "the score reaches the pixels, biases absorb the rest. LRP itself flags a map unreliable when "
                     "its relevance plus what the biases absorb is outside 0.9-1.1 of the logit."),
    "completeness_gap": ("completeness gap", "|Σ attributions − (f(x) − f(baseline))| / |f(x) − f(baseline)|, "
                         "the median over the maps; 0 = the attributions add up exactly to the score difference. "
                         "It depends on the number of steps (fewer steps, larger gap), and means little when "
                         "f(x) − f(baseline) is itself near 0."),
}

MAX_REASON = 300


def one_line(text: str, limit: int = MAX_REASON) -> str:
    """``text`` on one line (whitespace collapsed), cut at ``limit`` characters with an ellipsis."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "…"


def _finite_numbers(values: Any) -> List[float]:
    if not isinstance(values, (list, tuple)):
        return []
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        if math.isfinite(float(v)):
            out.append(float(v))
    return out


def _maps(n: int) -> str:
    return f"{n} map" + ("s" if n != 1 else "")


def axiom_figure(method: str, extras: Sequence[Mapping[str, Any]]) -> str:
    """The axiom figure of ``method`` from the per-image ``extras`` of one or more results (each a
    dict of per-image lists, as stored in attribution records), or "" for a method without one.

    LRP (``conservation`` column): ``conservation 0.98 (median of 9 maps); 1 of 9 flagged
    unreliable``. Integrated gradients and DeepLIFT (``completeness_gap`` column): ``completeness
    gap 0.012 (median of 9 maps)``. Non-finite values are left out of the median and counted.
    """
    try:
        columns = catalogue.get(method).columns
    except catalogue.UnknownNameError:
        columns = ()
    key = next((k for k in FIGURE_HELP if k in columns), None)
    if key is None:
        return ""
    label = FIGURE_HELP[key][0]
    values: List[float] = []
    total = 0
    flagged = 0
    judged = 0
    for ex in extras:
        raw = ex.get(key)
        if isinstance(raw, (list, tuple)):
            total += len(raw)
            values.extend(_finite_numbers(raw))
        flags = ex.get("reliable")
        if isinstance(flags, (list, tuple)):
            judged += len(flags)
            flagged += sum(1 for f in flags if not f)
    if not values:
        return f"{label} not available (no finite value in {_maps(total)})" if total else f"{label} not recorded"
    median = statistics.median(values)
    number = f"{median:.2f}" if key == "conservation" else f"{median:.2g}"
    text = f"{label} {number} (median of {_maps(len(values))})"
    if total > len(values):
        text += f"; {total - len(values)} without a finite value"
    if key == "conservation" and judged:
        text += f"; {flagged} of {judged} flagged unreliable"
    return text


@dataclass(frozen=True)
class Capability:
    """What ``method`` does on ``model``: ``status`` is one of :data:`MARKS`; ``figure`` the axiom
    figure of a method that runs (may be ""); ``reason`` one line for any other status."""

    method: str
    model: str
    status: str
    figure: str = ""
    reason: str = ""

    @property
    def mark(self) -> str:
        return MARKS[self.status]

    def short(self) -> str:
        """A matrix cell: symbol and words, e.g. ``✓ conservation 0.98 (median of 1 map)``."""
        if self.status == RUNS:
            return f"{self.mark} {self.figure or RUNS}"
        return f"{self.mark} {self.status}"

    def text(self) -> str:
        """The full line: ``✓ runs — conservation 0.98 (median of 9 maps)``, ``✗ not applicable:
        <reason>``, ``✗ failed: <message>``, ``– not requested``."""
        if self.status == RUNS:
            return f"{self.mark} {RUNS}" + (f" — {self.figure}" if self.figure else "")
        return f"{self.mark} {self.status}" + (f": {self.reason}" if self.reason else "")


@dataclass
class ModelCapabilities:
    """Every attribution method of the catalogue on one model, and the input the probe used."""

    model: str
    title: str
    cells: List[Capability] = field(default_factory=list)
    input: str = ""  # what was attributed (the first image of a dataset, or a seeded image)
    error: str = ""  # why the model did not load ("" when it did)


def probe_params(method: str, configured: Mapping[str, Any]) -> Dict[str, Any]:
    """The configured parameters of ``method`` with its cost parameters capped (:data:`PROBE_CAPS`);
    occlusion slides its window without overlap."""
    params = dict(configured)
    known = catalogue.get(method).all_params
    for name, cap in PROBE_CAPS.items():
        if name in known:
            value = params.get(name, known[name].default)
            params[name] = min(int(value), cap) if isinstance(value, (int, float)) else cap
    if "window" in known and "stride" in known:
        params["window"] = params.get("window", known["window"].default)
        params["stride"] = params["window"]
    return params


def _probe_input(config: "ReportConfig", mc: "ModelConfig", spec: Any, device: Any) -> Tuple[Any, str]:
    """(model input of one image, what it is): the first image of the model's first dataset, or,
    when that cannot be read, a seeded uniform image."""
    import numpy as np

    from generator.data.sources import load_dataset
    from generator.engine.preprocess import display_images, normalise

    ids = list(mc.datasets) if mc.datasets is not None else [dc.id for dc in config.datasets]
    for ds_id in ids[:1]:
        dc = next((d for d in config.datasets if d.id == ds_id), None)
        if dc is None:
            continue
        try:
            ds = load_dataset(dc.id, dc.source, {**dc.options, "limit": 1}, base_dir=config.base_dir)
            if len(ds):
                shown = display_images([ds.items[0].pixels], spec)
                return normalise(shown, spec, device), f"the first image of dataset {dc.id} ({ds.items[0].id})"
        except Exception:  # noqa: BLE001 - the probe falls back to a seeded image, and says so
            pass
    c, h, w = spec.input_size
    rng = np.random.default_rng(config.seed)
    pixels = rng.integers(0, 256, (1, h, w, c), dtype=np.uint8)
    return normalise(pixels, spec, device), f"a seeded random image (seed {config.seed})"


def probe_model(config: "ReportConfig", mc: "ModelConfig", loaded: Any, device: Any,
                methods: Optional[Sequence[str]] = None) -> ModelCapabilities:
    """Attribute one input with every method (all attribution methods of the catalogue by
    default) on a loaded model; a method that raises is recorded, never propagated."""
    import torch

    from generator.capability import Unsupported
    from generator.engine.hooks import script_hook_refusal
    from generator.methods.attribution import ATTRIBUTION_METHODS

    module, spec = loaded.module, loaded.spec
    out = ModelCapabilities(model=mc.id, title=mc.title or mc.id)
    x, out.input = _probe_input(config, mc, spec, device)
    with torch.no_grad():
        target = module(x).argmax(1)
    for method in methods if methods is not None else [e.name for e in catalogue.entries("attribution")]:
        params = probe_params(method, {"precision": config.precision, **config.outcome.params.get(method, {})})
        torch.manual_seed(config.seed)
        try:
            result = ATTRIBUTION_METHODS.get(method)(module, spec, **params).attribute(x, target)
            maps = result.maps
            if not bool(torch.isfinite(maps).all()):
                raise FloatingPointError(f"{method} returned a map with NaN or inf values")
            extras = _per_image(result.extras)
            out.cells.append(Capability(method, mc.id, RUNS, figure=axiom_figure(method, [extras])))
        except Exception as exc:  # noqa: BLE001 - every method gets its line, whatever it raised
            exc = script_hook_refusal(exc) or exc
            if isinstance(exc, Unsupported):
                out.cells.append(Capability(method, mc.id, NOT_APPLICABLE, reason=one_line(str(exc))))
            else:
                out.cells.append(Capability(method, mc.id, FAILED, reason=one_line(f"{type(exc).__name__}: {exc}")))
    return out


def _per_image(extras: Mapping[str, Any]) -> Dict[str, Any]:
    """The per-image lists among a result's extras (tensors as lists of floats)."""
    import torch

    out: Dict[str, Any] = {}
    for k, v in extras.items():
        if isinstance(v, torch.Tensor) and v.dim() <= 1:
            out[k] = v.detach().float().cpu().reshape(-1).tolist()
        elif isinstance(v, (list, tuple)):
            out[k] = list(v)
    return out


def probe_capabilities(config: "ReportConfig", *, methods: Optional[Sequence[str]] = None,
                       device: Optional[str] = None) -> List[ModelCapabilities]:
    """Load every model of ``config`` (already validated) and probe each attribution method on it.

    A model that does not load gets ``error`` and no cells. Trained-on-first-use models reuse
    (or fill) the report's artifact store, as ``modelcard run`` would."""
    from generator.artifacts.store import ArtifactStore
    from generator.models.sources import LoadContext, load_model
    from generator.pipeline.context import select_device
    from generator.pipeline.run import model_request

    dev = select_device(device or config.device)
    load_ctx = LoadContext(store=ArtifactStore(config.work_dir / "artifacts"), device=dev)
    found = []
    for mc in config.models:
        try:
            loaded = load_model(model_request(config, mc), load_ctx)
            loaded.module.to(dev)
        except Exception as exc:  # noqa: BLE001 - named in the listing; the other models are still probed
            found.append(ModelCapabilities(model=mc.id, title=mc.title or mc.id,
                                           error=one_line(f"{type(exc).__name__}: {exc}")))
            continue
        found.append(probe_model(config, mc, loaded, dev, methods))
    return found
