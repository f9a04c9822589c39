"""Compare two report outputs, e.g. ``main`` against a branch, for review in a pull request.

``modelcard diff BASE HEAD`` reads both manifests (no torch) and reports what changed:
accuracy and the predictions that changed, per image and method how similar the attribution
maps are (the images that changed most first), and, where both reports have them, the other
dimensions' summaries. It writes a Markdown summary short enough for a pull-request comment,
``diff.json`` with every number, and the HEAD report's site then shows a "Review" page.

Both reports' records are read typed (:mod:`generator.records`, through
:class:`~generator.render.manifest.Manifest`): a report written by another modelcard version is
refused with a line naming the manifest, the artifact or the field, never compared as if it
were current. The decision set's ``metrics`` stay a dict (see ``SurrogateRecord``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from generator.artifacts.store import write_json_atomic
from generator.records import AttributionRecord, ModelRecord, PredictionsRecord, SurrogateRecord
from generator.render.manifest import Manifest


def _rank(values: np.ndarray) -> np.ndarray:
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[order] = np.arange(len(values), dtype=np.float64)
    return ranks


def map_similarity(a: np.ndarray, b: np.ndarray) -> Dict[str, float]:
    """Pearson and Spearman correlation of two attribution maps (1 = unchanged)."""
    x, y = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    if x.shape != y.shape:
        return {"pearson": float("nan"), "spearman": float("nan")}

    def corr(u: np.ndarray, v: np.ndarray) -> float:
        u, v = u - u.mean(), v - v.mean()
        den = np.sqrt((u * u).sum() * (v * v).sum())
        return float((u * v).sum() / den) if den > 0 else (1.0 if np.allclose(u, v) else 0.0)

    return {"pearson": corr(x, y), "spearman": corr(_rank(x), _rank(y))}


@dataclass
class ReportDiff:
    base: str
    head: str
    models_added: List[str] = field(default_factory=list)
    models_removed: List[str] = field(default_factory=list)
    predictions: List[Dict[str, Any]] = field(default_factory=list)
    attributions: List[Dict[str, Any]] = field(default_factory=list)
    sections: List[Dict[str, Any]] = field(default_factory=list)  # other dimensions' comparisons

    @property
    def changed(self) -> bool:
        return bool(self.models_added or self.models_removed
                    or any(p["changed"] for p in self.predictions)
                    or any(a["min_spearman"] < 0.999 for a in self.attributions if a["compared"])
                    or any(s.get("changed") for s in self.sections))

    def to_json(self) -> Dict[str, Any]:
        return {"base": self.base, "head": self.head, "changed": self.changed, "models_added": self.models_added,
                "models_removed": self.models_removed, "predictions": self.predictions,
                "attributions": self.attributions, "sections": self.sections}


def _work_dir(path: Path) -> Path:
    """A report output folder (holding manifest.json) from a folder or a config file."""
    if path.is_file():
        from generator.config import load_config

        return load_config(path).work_dir
    if (path / "manifest.json").exists():
        return path
    if (path / ".modelcard" / "manifest.json").exists():
        return path / ".modelcard"
    raise FileNotFoundError(f"{path}: no manifest.json here or in {path / '.modelcard'}; run `modelcard run` first")


def _class_names(manifest: Manifest, model: str) -> List[str]:
    art = manifest.one("model", model=model)
    if art is None:
        return []
    info: ModelRecord = art.rec
    return list(info.class_names)


def _name(names: List[str], index: int) -> str:
    return names[index] if 0 <= index < len(names) else f"class {index}"


def compare_predictions(base: Manifest, head: Manifest, model: str, dataset: str) -> Optional[Dict[str, Any]]:
    a, b = base.one("predictions", model=model, dataset=dataset), head.one("predictions", model=model, dataset=dataset)
    if a is None or b is None:
        return None
    # the record is the artifact's summary.json, typed
    sa: PredictionsRecord = a.rec
    sb: PredictionsRecord = b.rec
    ta, tb = a.load_npz("topk"), b.load_npz("topk")
    out: Dict[str, Any] = {"model": model, "dataset": dataset, "accuracy_base": sa.accuracy,
                           "accuracy_head": sb.accuracy, "count": sb.count}
    if len(ta["index"]) != len(tb["index"]):
        out.update(changed=True, note="the datasets differ in size; predictions not compared one by one",
                   changed_images=[])
        return out
    top_a, top_b = ta["index"][:, 0], tb["index"][:, 0]
    changed_idx = np.flatnonzero(top_a != top_b)
    shown_ids = [r.id for r in sb.shown]
    names_a = _class_names(base, model)
    names_b = _class_names(head, model)
    examples = []
    for i in changed_idx[:20]:
        item = shown_ids[i] if i < len(shown_ids) else f"#{int(i)}"
        examples.append({"image": item, "base": _name(names_a, int(top_a[i])), "head": _name(names_b, int(top_b[i]))})
    out.update(changed=bool(len(changed_idx)) or sa.accuracy != sb.accuracy,
               changed_count=int(len(changed_idx)), changed_images=examples,
               probability_shift=float(np.abs(ta["probability"][:, 0] - tb["probability"][:, 0]).mean()))
    return out


def compare_attributions(base: Manifest, head: Manifest, model: str, dataset: str) -> List[Dict[str, Any]]:
    results = []
    for art_b in head.find("attribution", model=model, dataset=dataset):
        rec_b: AttributionRecord = art_b.rec
        method = rec_b.method
        art_a = base.one("attribution", model=model, dataset=dataset, method=method)
        entry: Dict[str, Any] = {"model": model, "dataset": dataset, "method": method, "compared": False}
        if art_a is None:
            entry["note"] = "new in HEAD"
            results.append(entry)
            continue
        rec_a: AttributionRecord = art_a.rec
        maps_a, maps_b = art_a.load_npz("maps")["maps"], art_b.load_npz("maps")["maps"]
        images_a, images_b = rec_a.images, rec_b.images
        per_image: List[Dict[str, Any]] = []
        for j, item in enumerate(images_b):
            if item in images_a:
                sim = map_similarity(maps_a[images_a.index(item)], maps_b[j])
                per_image.append({"image": item, **{k: round(v, 4) for k, v in sim.items()},
                                  "target_base": rec_a.target_names[images_a.index(item)],
                                  "target_head": rec_b.target_names[j]})
        if per_image:
            per_image.sort(key=lambda r: r["spearman"])
            entry.update(compared=True, per_image=per_image,
                         mean_spearman=round(float(np.mean([r["spearman"] for r in per_image])), 4),
                         min_spearman=per_image[0]["spearman"], same_key=art_a.key == art_b.key)
        results.append(entry)
    return results


def diff_reports(base_path: Path, head_path: Path) -> ReportDiff:
    base_dir, head_dir = _work_dir(Path(base_path)), _work_dir(Path(head_path))
    base, head = Manifest.load(base_dir), Manifest.load(head_dir)
    result = ReportDiff(base=str(base_path), head=str(head_path))
    result.models_added = [m for m in head.models if m not in base.models]
    result.models_removed = [m for m in base.models if m not in head.models]
    for model, dataset in head.pairs:
        if [model, dataset] not in base.pairs:
            continue
        pred = compare_predictions(base, head, model, dataset)
        if pred is not None:
            result.predictions.append(pred)
        result.attributions.extend(compare_attributions(base, head, model, dataset))
    for compare in SECTION_COMPARATORS:
        result.sections.extend(compare(base, head))
    return result


def compare_feature_visualisations(base: Manifest, head: Manifest, top: int = 5) -> List[Dict[str, Any]]:
    """Per model and layer, the units whose visualisation changed most (mean absolute pixel
    difference in [0, 1], and the change of the objective value)."""
    out = []
    for art_b in head.find("features_gallery"):
        # Found by the labels the manifest lists it under (the gallery's images are in its npz).
        model, layer = art_b.labels.get("model"), art_b.labels.get("layer")
        art_a = base.one("features_gallery", model=model, layer=layer)
        title = f"Feature visualisations: {model} {layer}"
        if art_a is None:
            out.append({"title": title, "changed": True, "lines": ["new in HEAD"], "units": []})
            continue
        a, b = art_a.load_npz("images"), art_b.load_npz("images")
        common = [c for c in b["channels"].tolist() if c in a["channels"].tolist()]
        units = []
        for c in common:
            i, j = a["channels"].tolist().index(c), b["channels"].tolist().index(c)
            if a["images"][i].shape != b["images"][j].shape:
                continue
            diff = float(np.abs(a["images"][i].astype(np.float32) - b["images"][j].astype(np.float32)).mean() / 255)
            units.append({"unit": int(c), "pixel_change": round(diff, 4),
                          "objective_base": round(float(a["values"][i]), 4),
                          "objective_head": round(float(b["values"][j]), 4)})
        units.sort(key=lambda u: -u["pixel_change"])
        changed = any(u["pixel_change"] > 0 for u in units)
        lines = [f"unit {u['unit']}: pixels changed {100 * u['pixel_change']:.1f}%, objective "
                 f"{u['objective_base']:.3g} → {u['objective_head']:.3g}" for u in units[:top] if u["pixel_change"] > 0]
        out.append({"title": title, "changed": changed, "lines": lines or ["no unit changed"], "units": units})
    return out


def compare_decision_sets(base: Manifest, head: Manifest) -> List[Dict[str, Any]]:
    """Rules added and removed, and the change of fidelity, per model and dataset."""
    out = []
    for art_b in head.find("data_surrogate"):
        rec_b: SurrogateRecord = art_b.rec
        art_a = base.one("data_surrogate", model=rec_b.model, dataset=rec_b.dataset)
        title = f"Decision set: {rec_b.model} on {rec_b.dataset}"
        if art_a is None:
            out.append({"title": title, "changed": True, "lines": ["new in HEAD"]})
            continue
        rec_a: SurrogateRecord = art_a.rec
        rules_a = [r.text for r in rec_a.rules]
        rules_b = [r.text for r in rec_b.rules]
        added = [r for r in rules_b if r not in rules_a]
        removed = [r for r in rules_a if r not in rules_b]
        fid = [rec.metrics.get("ids", {}).get("held_out", {}).get("fidelity") for rec in (rec_a, rec_b)]
        lines = [f"added: {r}" for r in added] + [f"removed: {r}" for r in removed]
        if fid[0] is not None and fid[1] is not None and fid[0] != fid[1]:
            lines.append(f"fidelity {100 * fid[0]:.1f}% → {100 * fid[1]:.1f}%")
        out.append({"title": title, "changed": bool(added or removed or fid[0] != fid[1]),
                    "lines": lines or ["same rules"]})
    return out


# Each returns ``[{title, changed, lines: [...]}]`` for one dimension of the two reports.
SECTION_COMPARATORS: List[Any] = [compare_feature_visualisations, compare_decision_sets]


def _pct(v: Optional[float]) -> str:
    return "–" if v is None else f"{100 * v:.2f}%"


def summary_markdown(diff: ReportDiff, max_rows: int = 8) -> str:
    """A short Markdown summary for a pull-request comment."""
    lines = [f"## Model report diff: `{diff.base}` → `{diff.head}`", ""]
    if not diff.changed:
        lines.append("**No change**: same predictions and the same attribution maps.")
        return "\n".join(lines) + "\n"
    if diff.models_added or diff.models_removed:
        lines.append(f"Models added: {', '.join(diff.models_added) or 'none'}; removed: "
                     f"{', '.join(diff.models_removed) or 'none'}.")
        lines.append("")
    if diff.predictions:
        lines += ["| Model | Dataset | Accuracy (base → head) | Changed top-1 predictions |", "|---|---|---|---|"]
        for p in diff.predictions:
            lines.append(f"| {p['model']} | {p['dataset']} | {_pct(p['accuracy_base'])} → {_pct(p['accuracy_head'])} | "
                         f"{p.get('changed_count', '–')} of {p['count']} |")
        lines.append("")
        examples = [(p, e) for p in diff.predictions for e in p.get("changed_images", [])][:max_rows]
        if examples:
            lines.append("Changed predictions: " + "; ".join(
                f"{p['model']}/{e['image']}: {e['base']} → {e['head']}" for p, e in examples) + ".")
            lines.append("")
    compared = [a for a in diff.attributions if a["compared"]]
    if compared:
        lines += ["| Model | Method | Mean rank corr. of maps | Most changed image |", "|---|---|---|---|"]
        for a in sorted(compared, key=lambda a: a["mean_spearman"])[:max_rows]:
            worst = a["per_image"][0]
            lines.append(f"| {a['model']} | {a['method']} | {a['mean_spearman']:.3f} | {worst['image']} "
                         f"({worst['spearman']:.3f}) |")
        lines.append("")
    for section in diff.sections:
        if section.get("changed"):
            lines.append(f"**{section['title']}**: " + "; ".join(section.get("lines", [])[:max_rows]))
    return "\n".join(lines).rstrip() + "\n"


def write_diff(diff: ReportDiff, head_path: Path, out: Optional[Path] = None) -> Tuple[Path, Path]:
    """Write ``summary.md`` and ``diff.json`` (by default into HEAD's report folder, ``diff/``)."""
    folder = out or (_work_dir(Path(head_path)) / "diff")
    folder.mkdir(parents=True, exist_ok=True)
    md = folder / "summary.md"
    md.write_text(summary_markdown(diff))
    js = folder / "diff.json"
    write_json_atomic(js, diff.to_json())
    return md, js


def load_diff(work_dir: Path) -> Optional[Dict[str, Any]]:
    path = work_dir / "diff" / "diff.json"
    return json.loads(path.read_text()) if path.exists() else None
