"""The Capabilities page: every attribution method of the catalogue on every model of the report.

Built from the run's manifest and stored records only (no torch): a method that ran shows its axiom
figure, computed from the per-image ``extras`` of its attribution records (LRP: median conservation
and how many maps LRP flagged unreliable; integrated gradients and DeepLIFT: median completeness
gap; others: "runs"); a method the run listed as not applicable or failed shows the reason; a
method of the catalogue that ``outcome.methods`` does not ask for says so. The words and the
figures are those of ``modelcard list methods --model`` (:mod:`generator.capabilities`).
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Sequence

from generator import catalogue
from generator.capabilities import (
    FAILED,
    FIGURE_HELP,
    NOT_APPLICABLE,
    NOT_REQUESTED,
    NOT_RUN,
    RUNS,
    Capability,
    ModelCapabilities,
    axiom_figure,
    one_line,
)
from generator.render.pages import PageBuilder, SiteContext, register_pages
from generator.render.text import slug

PAGE = "models/capabilities.md"


def capability_anchor(model_id: str) -> str:
    """The id of ``model_id``'s section on the Capabilities page."""
    return f"capabilities-{slug(model_id)}"


def capability_page(model_id: str) -> str:
    """Site-relative link to ``model_id``'s section of the Capabilities page (for the model page)."""
    return f"{PAGE}#{capability_anchor(model_id)}"


def outcome_label(method: str, model: str, dataset: str) -> str:
    """The label the outcome stage gives a method's unit (``generator.pipeline.stages.outcome``), by
    which the manifest lists its failure or the reason it is not applicable."""
    return f"{method} on {model}/{dataset}"


def _extras(art: Any, method: str) -> Dict[str, Any]:
    """The per-image extras of an attribution artifact; a figure column too long for the record
    (more than 64 images) is read from the maps file, where the stage keeps it."""
    extras = dict(art.rec.extras)
    for key in FIGURE_HELP:
        if key in catalogue.get(method).columns and not isinstance(extras.get(key), list):
            arrays = art.load_npz("maps")
            if f"extra_{key}" in arrays:
                extras[key] = [float(v) for v in arrays[f"extra_{key}"].reshape(-1)]
    return extras


def _joined(found: Sequence[tuple]) -> str:
    """One reason for several datasets: said once when it is the same everywhere."""
    reasons = {why for _, why in found}
    if len(reasons) == 1:
        return one_line(found[0][1])
    return one_line("; ".join(f"on {ds}: {why}" for ds, why in found))


def model_capabilities(config: Any, manifest: Any) -> List[ModelCapabilities]:
    """Every model of the config, every attribution method of the catalogue (then any other
    method the config asks for), from the manifest and records of the run."""
    requested_by = {mc.id: (config.outcome.methods_for(mc.id) if config.outcome.enabled else [])
                    for mc in config.models}
    requested = list(dict.fromkeys(m for ms in requested_by.values() for m in ms))
    methods = [e.name for e in catalogue.entries("attribution")]
    methods += [m for m in requested if m not in methods]
    unsupported = {f.what: f.why for f in manifest.record.unsupported}
    failures = {f.what: f.why for f in manifest.record.failures}
    datasets: Dict[str, List[str]] = {}
    for model, ds in manifest.pairs:
        datasets.setdefault(model, []).append(ds)
    out = []
    for mc in config.models:
        entry = ModelCapabilities(model=mc.id, title=mc.title or mc.id)
        if mc.id not in manifest.models:
            entry.error = one_line(failures.get(f"model {mc.id}", "the run has no record of it"))
        for method in methods:
            entry.cells.append(_cell(manifest, mc.id, method, method in requested_by[mc.id], entry.error,
                                     datasets.get(mc.id, []), unsupported, failures))
        out.append(entry)
    return out


def _cell(manifest: Any, model: str, method: str, requested: bool, error: str, datasets: Sequence[str],
          unsupported: Mapping[str, str], failures: Mapping[str, str]) -> Capability:
    if not requested:
        return Capability(method, model, NOT_REQUESTED,
                          reason="not in outcome.methods (or this model's outcome.methods_by_model)")
    if error:
        return Capability(method, model, FAILED, reason=f"the model did not load: {error}")
    failed = [(ds, failures[outcome_label(method, model, ds)]) for ds in datasets
              if outcome_label(method, model, ds) in failures]
    if failed:
        return Capability(method, model, FAILED, reason=_joined(failed))
    refused = [(ds, unsupported[outcome_label(method, model, ds)]) for ds in datasets
               if outcome_label(method, model, ds) in unsupported]
    if refused:
        return Capability(method, model, NOT_APPLICABLE, reason=_joined(refused))
    arts = manifest.find("attribution", model=model, method=method)
    if arts:
        return Capability(method, model, RUNS, figure=axiom_figure(method, [_extras(a, method) for a in arts]))
    why = "the model has no dataset to run on" if not datasets else "the run recorded no result and no reason"
    return Capability(method, model, NOT_RUN, reason=why)


def capability_pages(site: SiteContext) -> List[Any]:
    found = model_capabilities(site.config, site.manifest)
    if not found:
        return []
    titles = {e.name: e.title for e in catalogue.entries("attribution")}
    rows = []
    for i, method in enumerate(c.method for c in found[0].cells):
        cells = [m.cells[i] for m in found]
        if all(c.status == NOT_REQUESTED for c in cells):
            continue  # said once, in one line under the table
        rows.append({"method": method, "title": titles.get(method, method), "cells": cells})
    shown = {r["method"] for r in rows}
    not_requested = [c.method for c in found[0].cells if c.method not in shown]
    site.writer.page(PAGE, "capability.md.j2", models=found, rows=rows, anchor=capability_anchor,
                     help=FIGURE_HELP, not_requested=not_requested, shown=shown)
    return [{"Capabilities": PAGE}]


register_pages(PageBuilder(name="capabilities", order=12, section="Models", build=capability_pages))
