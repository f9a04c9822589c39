"""Evaluation pages: how far each attribution method can be trusted on each model: selectivity
(deletion / insertion), class sensitivity, the randomisation sanity check, ROAR / KAR and the
known limits of every method.

Reads the typed ``evaluation_*`` records (:mod:`generator.records.evaluation`); per-method
numbers are dicts keyed by method name (the methods are data), their values typed.

Every finding the page states checks itself first (:mod:`generator.evaluation.statistics`,
numpy only): a ranking comes with n, each method's per-image range and bootstrap interval, and a
plain verdict when the images are too few or the intervals overlap; degenerate maps are left out
and named; methods with the same maps are named; class-sensitivity and sanity flags say how
firm they are; ROAR says when the removal mask itself leaks the class.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from generator.evaluation import statistics as st
from generator.records import RoarRecord, SanityRecord, SelectivityRecord, SensitivityRecord
from generator.render import images as img
from generator.render.methods_info import info as method_info
from generator.render.pages import PageBuilder, SiteContext, register_pages
from generator.render.text import slug

#: Up to this many lines a chart shows them all (legend outside the axes); more become small
#: multiples or a highlighted few.
MOST_LINES = 6
HIGHLIGHT = "#1f5fbf"  # the panel's own method
OTHERS = "#c8c8c8"  # every other method, behind it
BAND = "#1f5fbf"
FLAGGED = "#b00020"  # a method a check flags


@dataclass(frozen=True)
class Verdict:
    """A plain-words judgement of a finding's quality figure: ``level`` weak | partial | good;
    ``text`` one paragraph, or several separated by blank lines (``paragraphs``). Plain text:
    templates escape it (``|md``)."""

    level: str
    text: str
    title: str = ""

    @property
    def paragraphs(self) -> List[str]:
        return [p for p in self.text.split("\n\n") if p.strip()]

    @property
    def weak(self) -> bool:
        return self.level == "weak"

    @property
    def admonition(self) -> str:
        return {"weak": "warning", "partial": "note", "good": "success"}.get(self.level, "note")


# --- charts --------------------------------------------------------------------------------------

def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _label(text: str) -> str:
    return str(text).replace("$", r"\$")  # a "$" in a title must not switch matplotlib to mathtext


def small_multiples(path: Path, xs: Sequence[float], panels: List[Dict[str, Any]], xlabel: str, ylabel: str,
                    title: str = "", ylim=None, columns: int = 6, reference: Optional[Dict[str, Any]] = None,
                    threshold: Optional[float] = None) -> None:
    """One small panel per method, on shared axes: the method's curve in colour (``mean``; a
    panel's ``colour`` overrides it, e.g. red for a flagged method), the spread of its per-image
    curves as a band (``low`` .. ``high``, when given), every other method's curve in light grey
    behind it, an optional dashed ``reference`` ({"label", "ys"}) and dotted ``threshold`` line
    in every panel. A panel with ``note`` (e.g. "not ranked") is drawn faded with the note.
    The figure has an opaque white background, so it reads the same in dark mode."""
    plt = _pyplot()
    cols = max(1, min(columns, len(panels)))
    rows = max(1, -(-len(panels) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(1.85 * cols + 0.6, 1.6 * rows + 0.7), sharex=True, sharey=True,
                             squeeze=False)
    for k, ax in enumerate(axes.ravel()):
        if k >= len(panels):
            ax.set_visible(False)
            continue
        p = panels[k]
        for q in panels:
            if q is not p and q.get("mean") is not None:
                ax.plot(xs, q["mean"], color=OTHERS, linewidth=0.7, zorder=1)
        if reference is not None:
            ax.plot(xs, reference["ys"], color="black", linestyle="--", linewidth=0.9, zorder=2)
        if threshold is not None:
            ax.axhline(threshold, color="#555555", linestyle=":", linewidth=1.0, zorder=2)
        faded = bool(p.get("note"))
        if p.get("low") is not None and p.get("high") is not None:
            ax.fill_between(xs, p["low"], p["high"], color=BAND, alpha=0.12 if faded else 0.22, linewidth=0,
                            zorder=2)
        if p.get("mean") is not None:
            ax.plot(xs, p["mean"], color="#8a8a8a" if faded else p.get("colour", HIGHLIGHT), linewidth=1.6, zorder=3)
        ax.set_title(_label(p["title"]), fontsize=7.5)
        if faded:
            ax.text(0.5, 0.5, _label(p["note"]), transform=ax.transAxes, ha="center", va="center", fontsize=7,
                    color="#b00020", wrap=True, zorder=4,
                    bbox={"boxstyle": "round", "facecolor": "white", "edgecolor": "#b00020", "alpha": 0.9})
        ax.tick_params(labelsize=6.5)
        ax.grid(alpha=0.3)
        if ylim:
            ax.set_ylim(*ylim)
    fig.supxlabel(xlabel, fontsize=8.5)
    fig.supylabel(ylabel, fontsize=8.5)
    if title:
        fig.suptitle(_label(title), fontsize=9.5)
    fig.tight_layout()
    img.save_figure(path, fig)


def highlighted_lines(path: Path, xs: Sequence[float], series: Dict[str, Sequence[float]], xlabel: str,
                      ylabel: str, title: str = "", ylim=None, baseline: str = "random baseline",
                      highlight: Sequence[str] = (), hlines: Sequence[Dict[str, Any]] = (),
                      marks: Sequence[Sequence[float]] = (), marks_label: str = "") -> None:
    """A line chart that stays readable with many series: up to :data:`MOST_LINES` every series
    in its own colour; beyond, only ``highlight`` (e.g. best and worst) are coloured and the rest
    are grey. ``baseline`` is dashed black; ``hlines`` ({"y", "label"}) are dotted horizontal
    references; ``marks`` ((x, y) points) are ringed in red. The legend is outside the axes,
    right of the plot; white background."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.0, 3.6))
    names = [n for n in series if n != baseline]
    coloured = names if len(names) <= MOST_LINES else [n for n in names if n in highlight]
    palette = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    grey_labelled = False
    for n in names:
        if n in coloured:
            ax.plot(xs, series[n], color=palette[coloured.index(n) % len(palette)], marker="o", markersize=3,
                    linewidth=1.5, label=_label(n), zorder=3)
        else:
            ax.plot(xs, series[n], color=OTHERS, linewidth=0.9, zorder=1,
                    label=None if grey_labelled else "other methods")
            grey_labelled = True
    if baseline in series:
        ax.plot(xs, series[baseline], color="black", linestyle="--", marker="o", markersize=3, linewidth=1.3,
                label=_label(baseline), zorder=4)
    for h in hlines:
        ax.axhline(h["y"], color="#555555", linestyle=":", linewidth=1.2, label=_label(h["label"]), zorder=2)
    if marks:
        ax.scatter([x for x, _ in marks], [y for _, y in marks], s=70, facecolors="none", edgecolors=FLAGGED,
                   linewidths=1.4, label=_label(marks_label) if marks_label else None, zorder=5)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if ylim:
        ax.set_ylim(*ylim)
    if title:
        ax.set_title(_label(title))
    ax.grid(alpha=0.3)
    if series or hlines:  # a check that ran without methods draws empty axes, no legend
        ax.legend(fontsize=7.5, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0, frameon=False)
    img.save_figure(path, fig)


def _title(name: str) -> str:
    return "random baseline" if name == "random" else method_info(name)["title"]


def _titles(names: Sequence[str]) -> str:
    titles = [_title(n) for n in names]
    return titles[0] if len(titles) == 1 else ", ".join(titles[:-1]) + " and " + titles[-1]


def _pct(v: float) -> str:
    return f"{100 * v:.1f}%"


def _points(v: float) -> str:
    return f"{100 * v:.1f} points"


# --- selectivity ---------------------------------------------------------------------------------

def _setting(site: SiteContext, check: str, name: str, default: Any) -> Any:
    try:
        return getattr(getattr(site.config.evaluation, check), name)
    except AttributeError:
        return default


def ranking_verdict(verdict: Dict[str, Any], ranked: Sequence[str], excluded: Sequence[str],
                    summary: Dict[str, Dict[str, Any]]) -> Verdict:
    """The plain verdict on the order of the methods (see :func:`statistics.selectivity_statistics`)."""
    n, need = verdict["images"], verdict["min_images"]
    conf = f"{100 * verdict['confidence']:.0f}%"
    count = len(ranked)
    if verdict["reason"] == "nothing":
        return Verdict("weak", "No method has usable maps on these images, so there is nothing to rank.",
                       "Nothing to rank")
    if verdict["reason"] == "too_few_images":
        fewest = verdict.get("fewest_images", n)
        per = f" (the fewest usable for one method: {fewest})" if fewest != n else ""
        return Verdict("weak", (
            f"Each method was evaluated on {n} image{'s' if n != 1 else ''}{per}. With fewer than {need} images "
            f"per method the differences between {count} methods cannot be told from chance, so the table is "
            "ordered by the mean score only to be readable: the order is not a ranking and no method is shown "
            "to be better than another. Evaluate more images (evaluation.selectivity.images, or images_by_model "
            "for this model) to rank them."), f"Not a ranking: {n} image{'s' if n != 1 else ''}")
    if verdict["reason"] == "overlap":
        top = verdict["top_group"]
        apart = sum(verdict["separated"])
        pairs = len(verdict["separated"])
        if len(top) > 1:
            lead = (f"On {n} images the best mean score, {_title(top[0])}'s, is not separated from "
                    f"{_titles(top[1:])}: the paired bootstrap {conf} interval of each difference includes 0, so "
                    f"these {len(top)} methods are statistically indistinguishable from the top.")
        else:
            lead = (f"On {n} images {_title(top[0])} is above every other method (paired bootstrap {conf} "
                    "interval of each difference above 0).")
        return Verdict("partial", lead + (
            f" Of the {pairs} neighbouring pairs in the order, {apart} {'is' if apart == 1 else 'are'} separated "
            "that way; read the order elsewhere as unresolved, not as a ranking."), "Ranking not resolved")
    return Verdict("good", (
        f"On {n} images every method's mean score is above the next one's (paired bootstrap {conf} interval of "
        "each difference above 0): the order is resolved on these images, with this baseline and cell size."),
        f"Ranking resolved on {n} images")


def _selectivity(site: SiteContext, art) -> Dict[str, Any]:
    rec: SelectivityRecord = art.rec
    arrays = art.load_npz("curves")
    n = len(rec.images)
    min_images = int(_setting(site, "selectivity", "min_images", st.MIN_IMAGES))
    resamples = int(_setting(site, "selectivity", "bootstrap", st.BOOTSTRAP))
    checked = rec.degenerate is not None  # records from before the self-checks have no such field
    degenerate = {m: list(v) for m, v in (rec.degenerate or {}).items()}
    left_out = {m: [d.index for d in v] for m, v in degenerate.items()}
    auc = {mode: {m: list(v) for m, v in per.items()} for mode, per in rec.auc.items()}
    stats = st.selectivity_statistics(auc, rec.methods, left_out, min_images=min_images, resamples=resamples)
    summary, verdict, ranked = stats["summary"], stats["verdict"], stats["ranking"]
    excluded = [m for m in rec.methods if m in stats["excluded"]]
    order = ranked + excluded
    identical = []
    same_as: Dict[str, List[str]] = {}
    for pair in rec.identical or []:
        a, b = pair.methods
        same_as.setdefault(a, []).append(b)
        same_as.setdefault(b, []).append(a)
        identical.append({"titles": [_title(a), _title(b)], "images": pair.images,
                          "min_correlation": pair.min_correlation,
                          "max_relative_difference": pair.max_relative_difference})

    def note(m: str) -> str:
        parts = []
        bad = degenerate.get(m, [])
        if m in excluded:
            parts.append(f"not ranked: {len(bad)} of {n} maps degenerate" if bad else "not ranked: no usable map")
        elif bad:
            parts.append(f"{len(bad)} of {n} maps degenerate, left out")
        if same_as.get(m):
            parts.append("same maps as " + _titles(same_as[m]))
        return "; ".join(parts)

    # curves averaged over each method's usable images, with the range of its per-image curves
    plots = {}
    fractions = (100 * arrays["fractions"]).tolist()
    index = {m: i for i, m in enumerate(rec.methods)}
    for mode in ("deletion", "insertion"):
        panels = []
        for m in order:
            curves = arrays[mode][index[m]].astype(np.float64)  # (n, S+1)
            keep = [i for i in range(curves.shape[0]) if i not in set(left_out.get(m, []))]
            use = curves[keep] if keep else curves[:0]
            panels.append({"title": f"{_title(m)} (n={len(keep)})",
                           "mean": use.mean(0).tolist() if len(keep) else None,
                           "low": use.min(0).tolist() if len(keep) > 1 else None,
                           "high": use.max(0).tolist() if len(keep) > 1 else None,
                           "note": "not ranked" if m in excluded else ""})
        what = "removed" if mode == "deletion" else "revealed"
        plots[mode] = site.writer.figure(
            f"assets/gen/{art.key}/{mode}.png",
            lambda p, panels=panels, what=what, mode=mode: small_multiples(
                p, fractions, panels, f"% of pixels {what}", f"target {rec.output}",
                f"{mode.capitalize()} curves: mean over each method's usable images (line), per-image range (band)",
                ylim=(0, 1.02) if rec.output == "probability" else None))
    top = set(verdict["top_group"]) if verdict["reason"] == "overlap" else set()
    rows = []
    for k, m in enumerate(order):
        f = dict(summary[m])
        if f["n"] < min_images:  # a bootstrap of a handful of values is no interval: shown as a dash
            f["ci_low"] = f["ci_high"] = None
        rows.append({"name": m, "title": _title(m), "position": "–" if m in excluded else str(k + 1),
                     "n": f["n"], "deletion": f["mean_deletion"], "insertion": f["mean_insertion"],
                     "score": f["mean"], "low": f["low"], "high": f["high"], "ci_low": f["ci_low"],
                     "ci_high": f["ci_high"], "top": m in top, "excluded": m in excluded, "note": note(m),
                     "unreliable": f"{len(rec.unreliable[m])} of {n}" if rec.unreliable.get(m) else ""})
    bad_index = {m: {d.index: d.problem for d in v} for m, v in degenerate.items()}
    per_image = [{"title": _title(m), "deletion": rec.auc["deletion"][m], "insertion": rec.auc["insertion"][m],
                  "bad": [bad_index.get(m, {}).get(i, "") for i in range(n)]} for m in rec.methods]
    degenerate_rows = [{"title": _title(m), "excluded": m in excluded, "count": len(v), "n": n,
                        "maps": [{"image": d.image, "problem": d.problem} for d in v]}
                       for m, v in degenerate.items() if v]
    unreliable = [{"title": _title(m), "notes": rec.unreliable[m]} for m in rec.methods if rec.unreliable.get(m)]
    return {"record": rec, "plots": plots, "ranking": rows, "per_image": per_image, "unreliable": unreliable,
            "verdict": ranking_verdict(verdict, ranked, excluded, summary), "resolved": verdict["resolved"],
            "reason": verdict["reason"], "top_column": bool(top), "degenerate": degenerate_rows, "checked": checked,
            "identical": identical, "identical_checked": rec.identical is not None,
            "identical_correlation": rec.identical_correlation, "constant_tolerance": rec.constant_tolerance,
            "min_images": min_images, "n": n, "confidence": verdict["confidence"], "bootstrap": resamples,
            "steps_points": len(fractions)}


# --- class sensitivity and the sanity check -----------------------------------------------------

def flag_verdict(q: Dict[str, Any], threshold: float, flagged: bool) -> str:
    """A short plain note on how firm a threshold flag is: '' when firm, and '' too when the
    images are too few (the section says so once, above the table; the interval is not shown)."""
    if q["verdict"] == "too_few_images":
        q["ci_low"] = q["ci_high"] = None  # a bootstrap of a handful of values is no interval
        return ""
    if q["verdict"] == "near_threshold":
        side = "above" if flagged else "below"
        return (f"uncertain: the mean is {side} {threshold:.2f} but its interval "
                f"[{q['ci_low']:.2f}, {q['ci_high']:.2f}] crosses it")
    return ""


def _sensitivity(site: SiteContext, art) -> Dict[str, Any]:
    rec: SensitivityRecord = art.rec
    min_images = int(_setting(site, "selectivity", "min_images", st.MIN_IMAGES))
    rows = []
    for m, r in rec.per_method.items():
        q = st.flag_quality(r.spearman_top2, rec.threshold, min_images=min_images)
        quality = flag_verdict(q, rec.threshold, r.class_insensitive)
        rows.append({"title": _title(m), "mean_spearman_top2": r.mean_spearman_top2,
                     "mean_spearman_random": r.mean_spearman_random, "mean_pearson_top2": r.mean_pearson_top2,
                     "mean_pearson_random": r.mean_pearson_random, "class_insensitive": r.class_insensitive,
                     "n": q["n"], "low": q["low"], "high": q["high"], "ci_low": q["ci_low"], "ci_high": q["ci_high"],
                     "quality": quality})
    n = len(rec.images)
    weak = n < min_images
    verdict = Verdict("weak", (
        f"The flags rest on {n} image{'s' if n != 1 else ''}: fewer than {min_images}, so they are indications, "
        "not findings.")) if weak else None
    return {"record": rec, "rows": sorted(rows, key=lambda r: -r["mean_spearman_top2"]), "verdict": verdict}


def _sanity(site: SiteContext, art) -> Dict[str, Any]:
    rec: SanityRecord = art.rec
    min_images = int(_setting(site, "selectivity", "min_images", st.MIN_IMAGES))
    layers = rec.layers
    xs = list(range(len(layers) + 1))
    ticks = ["trained"] + [f"+ {name}" for name in layers]
    order = sorted(rec.per_method, key=lambda m: -(rec.per_method[m].spearman_abs[-1]
                                                   if rec.per_method[m].spearman_abs else 0))
    curves = {_title(m): [1.0] + list(rec.per_method[m].spearman_abs) for m in order}
    flagged = {_title(m) for m in order if rec.per_method[m].weight_insensitive}

    def draw(p):
        if len(curves) <= MOST_LINES:
            highlighted_lines(p, xs, curves, "layers randomised (top down, cumulative)",
                              "Spearman ρ of |map| vs trained", "Cascading randomisation", ylim=(-0.2, 1.05),
                              hlines=[{"y": rec.threshold, "label": f"flag threshold {rec.threshold:.2f}"}])
        else:
            small_multiples(p, xs, [{"title": t, "mean": ys, **({"colour": FLAGGED} if t in flagged else {})}
                                    for t, ys in curves.items()],
                            "layers randomised (0 = trained; top down, cumulative)", "Spearman ρ of |map| vs trained",
                            f"Cascading randomisation (mean over {len(rec.images)} images; red: flagged)",
                            ylim=(-0.2, 1.05), threshold=rec.threshold)

    plot = site.writer.figure(f"assets/gen/{art.key}/cascade.png", draw)
    rows = []
    for m, r in rec.per_method.items():
        final = r.spearman_abs[-1] if r.spearman_abs else None
        if r.final_per_image:
            q = st.flag_quality(r.final_per_image, rec.threshold, min_images=min_images)
            quality = flag_verdict(q, rec.threshold, r.weight_insensitive)
        else:
            q = {"n": len(rec.images), "low": None, "high": None, "ci_low": None, "ci_high": None}
            quality = "per-image values not recorded by this run" if final is not None else ""
        rows.append({"title": _title(m), "final": final, "final_ssim": r.ssim[-1] if r.ssim else None,
                     "weight_insensitive": r.weight_insensitive, "n": q["n"], "low": q["low"], "high": q["high"],
                     "ci_low": q["ci_low"], "ci_high": q["ci_high"], "quality": quality})
    n = len(rec.images)
    verdict = Verdict("weak", (
        f"The flags rest on {n} image{'s' if n != 1 else ''}: fewer than {min_images}, so they are indications, "
        "not findings.")) if n < min_images else None
    return {"record": rec, "plot": plot, "rows": sorted(rows, key=lambda r: -(r["final"] or 0)), "verdict": verdict,
            "ticks": ticks}


# --- ROAR ----------------------------------------------------------------------------------------

def leak_verdict(rec: RoarRecord, leak: Dict[str, Any]) -> Verdict:
    """Plain words, with the numbers, for :func:`statistics.roar_leak`."""
    margin = _points(leak["margin"])
    parts: List[str] = []
    above = leak["above_reference"]
    if above:
        worst = above[0]
        verb = "removed" if worst["mode"] == "roar" else "kept (all others removed)"
        randoms = (f" and with random masks (at most {_pct(leak['random_best'])})"
                   if leak.get("random_best") is not None else "")
        text = (f"With {100 * worst['fraction']:.0f}% of the pixels {verb}, {_title(worst['method'])} still reaches "
                f"{_pct(worst['accuracy'])} test accuracy after retraining: above every retraining without a "
                f"method's mask, on unmodified images ({_pct(rec.reference_accuracy)}){randoms}, by more than "
                f"the margin of {margin}")
        if worst["above_original"]:
            text += f" and even above the model the maps came from ({_pct(rec.original_model_accuracy)})"
        text += (". Removing information cannot make the task easier: the retrained model reads the class from "
                 "where the pixels were removed (the filled region traces the object's outline), so these "
                 "accuracies measure the mask, not the attribution.")
        if len(above) > 1:
            text += f" {len(above) - 1} more method and fraction pair{'s' if len(above) > 2 else ''} are above too."
        parts.append(text)
    a = leak["all_above_random"]
    if a and a["holds"]:
        parts.append(
            f"Every method stays above the random ranking with {100 * a['fraction']:.0f}% of the pixels removed "
            f"(methods {_pct(a['lowest'])}–{_pct(a['highest'])}, random {_pct(a['random'])}, margin {margin}): "
            "removing each method's most important pixels hurts less than removing random ones, the opposite of "
            "what ROAR assumes" + (", another sign of the leak." if above else
                                   ": either no method ranks pixels better than chance, or the mask leaks."))
    if not leak["leak"]:
        best = f", random masks at most {_pct(leak['random_best'])}" if leak.get("random_best") is not None else ""
        return Verdict("good", (
            f"No sign that the removal mask leaks the class: no accuracy rises above the retrainings without a "
            f"method's mask (unmodified images {_pct(rec.reference_accuracy)}{best}) by more than {margin}, and not "
            "every method stays above random at high removal."), "No sign of a mask leak")
    if rec.imputation == "road":
        parts.append("This run already fills removed pixels by ROAD's noisy linear imputation, and the signs "
                     "remain: read the ROAR and KAR numbers below as unreliable for this model.")
    else:
        parts.append("Remedy: set evaluation.roar.imputation: road to fill removed pixels by ROAD's noisy linear "
                     "imputation (Rong et al. 2022, \"A Consistent and Efficient Evaluation Strategy for Attribution "
                     "Methods\"): each removed pixel becomes the weighted mean of its neighbours plus a little noise, "
                     "so the filled region continues its surroundings instead of drawing the mask. It adds a sparse "
                     "solve per image (on a CPU about as long again as the retraining). It helps where neighbours "
                     "predict a pixel, as in photographs; where they do not (noise), any filling stays visible.")
    return Verdict("weak", "\n\n".join(parts), "The removal mask leaks the class")


def _roar(site: SiteContext, art) -> Dict[str, Any]:
    rec: RoarRecord = art.rec
    margin = float(_setting(site, "roar", "leak_margin", st.LEAK_MARGIN))
    leak = st.roar_leak(rec.fractions, rec.reference_accuracy, rec.original_model_accuracy, rec.roar, rec.kar,
                        test_images=rec.budget.test_images, margin=margin)
    xs = [100 * f for f in rec.fractions]
    curves = {"roar": rec.roar, "kar": rec.kar}
    hlines = [{"y": rec.reference_accuracy, "label": "unmodified images (same budget)"}]
    plots = {}
    for mode in ("roar", "kar"):
        table = curves[mode]
        methods = [m for m in table if m != "random"]
        by_mean = sorted(methods, key=lambda m: float(np.mean(table[m])))
        highlight = [_title(m) for m in (by_mean[:1] + by_mean[-1:])]
        series = {_title(m): accs for m, accs in table.items()}
        marks = [(100 * a["fraction"], a["accuracy"]) for a in leak["above_reference"] if a["mode"] == mode]
        plots[mode] = site.writer.figure(f"assets/gen/{art.key}/{mode}.png", lambda p, series=series, mode=mode,
                                         highlight=highlight, marks=marks: highlighted_lines(
            p, xs, series, f"% of pixels {'removed' if mode == 'roar' else 'kept'} (top-k by the method)",
            "test accuracy after retraining", mode.upper(), ylim=(0, 1), highlight=highlight, hlines=hlines,
            marks=marks, marks_label="above unmodified: the mask leaks"))
    rows = [{"title": _title(m), "roar": rec.roar[m], "kar": rec.kar[m],
             "roar_mean": float(np.mean(rec.roar[m])), "kar_mean": float(np.mean(rec.kar[m])),
             "above": [(a["mode"], a["fraction"]) for a in leak["above_reference"] if a["method"] == m]}
            for m in rec.roar]
    marked = {(a["method"], a["mode"], round(a["fraction"], 6)) for a in leak["above_reference"]}
    for r, m in zip(rows, rec.roar):
        r["roar_marks"] = [(m, "roar", round(f, 6)) in marked for f in rec.fractions]
        r["kar_marks"] = [(m, "kar", round(f, 6)) in marked for f in rec.fractions]
    se = leak["standard_error"]
    return {"record": rec, "plots": plots, "rows": rows, "leak": leak, "verdict": leak_verdict(rec, leak),
            "standard_error": se, "margin": leak["margin"]}


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
                    sensitivity=(_sensitivity(site, found["evaluation_sensitivity"])
                                 if found["evaluation_sensitivity"] else None),
                    sanity=_sanity(site, found["evaluation_sanity"]) if found["evaluation_sanity"] else None,
                    roar=_roar(site, found["evaluation_roar"]) if found["evaluation_roar"] else None,
                    limits=limits, has_masks=False)
        nav.append({f"{models[model_id]['title']} on {ds_id}": page})
    return nav


register_pages(PageBuilder(name="evaluation", order=60, section="Evaluation", build=evaluation_pages))
