"""Evaluation pages: how far each attribution method can be trusted on each model: selectivity
(deletion / insertion), class sensitivity, the randomisation sanity check, ROAR / KAR and the
known limits of every method.

Reads the typed ``evaluation_*`` records (:mod:`generator.records.evaluation`); per-method
numbers are dicts keyed by method name (the methods are data), their values typed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Sequence

import numpy as np

from generator.records import RoarRecord, SanityRecord, SelectivityRecord, SensitivityRecord
from generator.render import images as img
from generator.render.methods_info import info as method_info
from generator.render.pages import PageBuilder, SiteContext, register_pages
from generator.render.text import slug


def many_lines(path: Path, xs: Sequence[float], series: Dict[str, Sequence[float]], xlabel: str, ylabel: str,
               title: str = "", ylim=None, xticks: Sequence[str] = ()) -> None:
    """A line plot for up to ~20 series (tab20 colours, legend beside the axes)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.2, 3.8))
    colours = matplotlib.colormaps["tab20"](np.linspace(0, 1, 20))
    for i, (label, ys) in enumerate(series.items()):
        dashed = label == "random"
        ax.plot(xs, ys, color="black" if dashed else colours[i % 20], linestyle="--" if dashed else "-",
                marker="o", markersize=3, linewidth=1.4, label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if xticks:
        ax.set_xticks(list(xs), list(xticks), rotation=60, ha="right", fontsize=7)
    if ylim:
        ax.set_ylim(*ylim)
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    if series:  # a check that ran without methods (outcome.methods: []) draws empty axes, no legend
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    img.save_figure(path, fig)


def _title(name: str) -> str:
    return "random baseline" if name == "random" else method_info(name)["title"]


def _selectivity(site: SiteContext, art) -> Dict[str, Any]:
    rec: SelectivityRecord = art.rec
    arrays = art.load_npz("curves")
    xs = (100 * arrays["fractions"]).tolist()
    plots = {}
    for mode in ("deletion", "insertion"):
        mean = arrays[mode].mean(axis=1)  # (M,S+1): averaged over images
        plots[mode] = site.writer.figure(f"assets/gen/{art.key}/{mode}.png", lambda p, mode=mode, mean=mean: many_lines(
            p, xs, {_title(m): mean[i].tolist() for i, m in enumerate(rec.methods)},
            f"% of pixels {'removed' if mode == 'deletion' else 'revealed'}",
            f"target {rec.output}", f"{mode.capitalize()} curves (mean over {arrays[mode].shape[1]} images)"))
    n = len(rec.images)
    ranking = [{"name": m, "title": _title(m), "deletion": rec.mean_auc["deletion"][m],
                "insertion": rec.mean_auc["insertion"][m], "score": rec.score[m],
                "unreliable": f"{len(rec.unreliable[m])} of {n}" if rec.unreliable.get(m) else ""}
               for m in rec.ranking]
    per_image = [{"title": _title(m), "deletion": rec.auc["deletion"][m], "insertion": rec.auc["insertion"][m]}
                 for m in rec.methods]
    unreliable = [{"title": _title(m), "notes": rec.unreliable[m]} for m in rec.methods if rec.unreliable.get(m)]
    return {"record": rec, "plots": plots, "ranking": ranking, "per_image": per_image, "unreliable": unreliable}


def _sensitivity(art) -> Dict[str, Any]:
    rec: SensitivityRecord = art.rec
    rows = [{"title": _title(m), "mean_spearman_top2": r.mean_spearman_top2,
             "mean_spearman_random": r.mean_spearman_random, "mean_pearson_top2": r.mean_pearson_top2,
             "mean_pearson_random": r.mean_pearson_random, "class_insensitive": r.class_insensitive}
            for m, r in rec.per_method.items()]
    return {"record": rec, "rows": sorted(rows, key=lambda r: -r["mean_spearman_top2"])}


def _sanity(site: SiteContext, art) -> Dict[str, Any]:
    rec: SanityRecord = art.rec
    layers = rec.layers
    xs = list(range(len(layers) + 1))
    ticks = ["trained"] + [f"+ {name}" for name in layers]
    plot = site.writer.figure(f"assets/gen/{art.key}/cascade.png", lambda p: many_lines(
        p, xs, {_title(m): [1.0] + r.spearman_abs for m, r in rec.per_method.items()},
        "layers randomised (top down, cumulative)", "Spearman ρ of |map| vs trained",
        "Cascading randomisation", ylim=(-0.2, 1.05), xticks=ticks))
    rows = [{"title": _title(m), "final": r.spearman_abs[-1] if r.spearman_abs else None,
             "final_ssim": r.ssim[-1] if r.ssim else None, "weight_insensitive": r.weight_insensitive}
            for m, r in rec.per_method.items()]
    return {"record": rec, "plot": plot, "rows": sorted(rows, key=lambda r: -(r["final"] or 0))}


def _roar(site: SiteContext, art) -> Dict[str, Any]:
    rec: RoarRecord = art.rec
    xs = [100 * f for f in rec.fractions]
    curves = {"roar": rec.roar, "kar": rec.kar}
    plots = {mode: site.writer.figure(f"assets/gen/{art.key}/{mode}.png", lambda p, mode=mode: many_lines(
        p, xs, {_title(m): accs for m, accs in curves[mode].items()},
        f"% of pixels {'removed' if mode == 'roar' else 'kept'} (top-k by the method)",
        "test accuracy after retraining", mode.upper(), ylim=(0, 1)))
        for mode in ("roar", "kar")}
    rows = [{"title": _title(m), "roar": rec.roar[m], "kar": rec.kar[m],
             "roar_mean": float(np.mean(rec.roar[m])), "kar_mean": float(np.mean(rec.kar[m]))}
            for m in rec.roar]
    return {"record": rec, "plots": plots, "rows": rows}


def evaluation_pages(site: SiteContext) -> List[Any]:
    manifest, writer, models = site.manifest, site.writer, site.models
    nav: List[Any] = []
    for model_id, ds_id in manifest.pairs:
        found = {kind: manifest.one(kind, model=model_id, dataset=ds_id) for kind in
                 ("evaluation_selectivity", "evaluation_sensitivity", "evaluation_sanity", "evaluation_roar")}
        if model_id not in models or not any(found.values()):
            continue
        docs = {}
        for art in manifest.find("attribution", model=model_id, dataset=ds_id):
            docs[art.rec.method] = art.rec.doc
        limits = [{"title": _title(n), "doc": d, "page": f"outcome/{slug(model_id)}/{slug(ds_id)}/method-{slug(n)}.md"}
                  for n, d in docs.items()]
        page = f"evaluation/{slug(model_id)}/{slug(ds_id)}.md"
        writer.page(page, "evaluation.md.j2", model=models[model_id], dataset=ds_id,
                    selectivity=(_selectivity(site, found["evaluation_selectivity"])
                                 if found["evaluation_selectivity"] else None),
                    sensitivity=(_sensitivity(found["evaluation_sensitivity"])
                                 if found["evaluation_sensitivity"] else None),
                    sanity=_sanity(site, found["evaluation_sanity"]) if found["evaluation_sanity"] else None,
                    roar=_roar(site, found["evaluation_roar"]) if found["evaluation_roar"] else None,
                    limits=limits, has_masks=False)
        nav.append({f"{models[model_id]['title']} on {ds_id}": page})
    return nav


register_pages(PageBuilder(name="evaluation", order=60, section="Evaluation", build=evaluation_pages))
