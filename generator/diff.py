"""Compare two report outputs, e.g. ``main`` against a branch, for review in a pull request.

``modelcard diff BASE HEAD`` reads both manifests (no torch) and reports what changed, in this
order: what changed in each model itself (source, weights and code digests, input size,
preprocessing, classes, training seed); accuracy and the predictions that changed (with the
images, before/after class and probability); per method how similar the attribution maps are,
with before/after maps of the images whose maps changed most; layer by layer, the linear CKA
between the two versions' representations (from stored Gram matrices); the feature units whose
visualisation changed most, with both renders; and the other dimensions' summaries.

It writes a Markdown summary short enough for a pull-request comment (``summary.md``: a few
lines and a link to the Review page), ``diff.json`` with every number, and the images the
Review page shows (``review-images/``), by default into HEAD's report folder (``diff/``),
where ``modelcard render`` of HEAD finds them and adds the Review page. ``--fail-on`` rules
(:func:`parse_fail_rule`) turn it into a CI gate.

Both reports' records are read typed (:mod:`generator.records`, through
:class:`~generator.render.manifest.Manifest`): a report written by another modelcard version is
refused with a line naming the manifest, the artifact or the field, never compared as if it
were current. The decision set's ``metrics`` stay a dict (see ``SurrogateRecord``).
"""

from __future__ import annotations

import difflib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from generator.artifacts.store import write_json_atomic
from generator.methods.compare.gram_cka import cka_from_grams
from generator.records import AttributionRecord, ModelRecord, PredictionsRecord, SurrogateRecord
from generator.records.similarity import GramsRecord
from generator.render.manifest import Manifest, TypedArtifact

#: Layout of ``diff.json``; the Review page refuses another one with a line saying to diff again.
DIFF_SCHEMA = 2
#: The folder (inside the diff folder) of the images the Review page shows.
REVIEW_IMAGES = "review-images"
#: A map whose rank correlation with its base is at least this reads as unchanged; a CKA too.
UNCHANGED = 0.999
#: Below this many images a CKA value is inflated and noisy (Kornblith et al. 2019; Nguyen et al. 2021).
CKA_FEW_IMAGES = 50
#: How many images, per method, get before/after maps; how many changed predictions are listed.
MAP_VIEWS = 3
CHANGED_LISTED = 20


# --- maps ------------------------------------------------------------------------------------

def _rank(values: np.ndarray) -> np.ndarray:
    """Ranks from 0, ties sharing their average rank (so a flat region ranks the same however it
    is ordered)."""
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    ends = np.r_[starts[1:], len(values)]
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[order] = np.repeat((starts + ends - 1) / 2.0, ends - starts)
    return ranks


def _as_grid(m: np.ndarray) -> np.ndarray:
    """A map as one ``H x W`` float64 grid (leading axes, e.g. channels, averaged)."""
    m = np.asarray(m, dtype=np.float64)
    while m.ndim > 2:
        m = m.mean(axis=0)
    return m.reshape(1, -1) if m.ndim < 2 else m


def resample(m: np.ndarray, shape: Tuple[int, int]) -> np.ndarray:
    """``m`` (H x W) averaged onto an ``h x w`` grid covering the same image (area weights)."""
    if m.shape == tuple(shape):
        return m
    from PIL import Image

    img = Image.fromarray(np.ascontiguousarray(m, dtype=np.float32), mode="F")
    return np.asarray(img.resize((int(shape[1]), int(shape[0])), Image.Resampling.BOX), dtype=np.float64)


def _corr(u: np.ndarray, v: np.ndarray) -> float:
    u, v = u - u.mean(), v - v.mean()
    den = np.sqrt((u * u).sum() * (v * v).sum())
    return float((u * v).sum() / den) if den > 0 else (1.0 if np.allclose(u, v) else 0.0)


def compare_maps(a: np.ndarray, b: np.ndarray) -> Dict[str, Any]:
    """Pearson and Spearman correlation of two attribution maps of one image (1 = unchanged).

    Maps of different sizes (a model at 224 px against one at 240 px) both cover the displayed
    image: each is averaged onto the smaller grid (per axis) and compared there; ``grid`` says
    so. A map with NaN or infinite values cannot be compared: ``comparable`` is False, both
    correlations are NaN and ``reason`` says why; callers count it as changed, never as unchanged.
    """
    x, y = _as_grid(a), _as_grid(b)
    grid = None
    if x.shape != y.shape:
        shape = (min(x.shape[0], y.shape[0]), min(x.shape[1], y.shape[1]))
        grid = f"{shape[0]}×{shape[1]} (base {x.shape[0]}×{x.shape[1]}, head {y.shape[0]}×{y.shape[1]})"
        x, y = resample(x, shape), resample(y, shape)
    out: Dict[str, Any] = {"grid": grid}
    bad = [name for name, m in (("base", x), ("head", y)) if not np.isfinite(m).all()]
    if bad:
        return {**out, "pearson": float("nan"), "spearman": float("nan"), "comparable": False,
                "reason": f"the {' and '.join(bad)} map has NaN or infinite values"}
    x, y = x.ravel(), y.ravel()
    return {**out, "pearson": _corr(x, y), "spearman": _corr(_rank(x), _rank(y)), "comparable": True, "reason": None}


def map_similarity(a: np.ndarray, b: np.ndarray) -> Dict[str, float]:
    """Pearson and Spearman correlation of two attribution maps (1 = unchanged; NaN: not
    comparable, see :func:`compare_maps`)."""
    found = compare_maps(a, b)
    return {"pearson": found["pearson"], "spearman": found["spearman"]}


def _is_unchanged(value: Any) -> bool:
    """True only for a finite correlation at or above :data:`UNCHANGED`: NaN is a change."""
    return value is not None and bool(np.isfinite(value)) and float(value) >= UNCHANGED


def _round(v: Optional[float], digits: int = 4) -> Optional[float]:
    """Rounded for ``diff.json``; NaN and infinity become None (JSON has neither)."""
    return None if v is None or not np.isfinite(v) else round(float(v), digits)


# --- images for the Review page -----------------------------------------------------------

def _slug(*parts: object) -> str:
    """A file name from ``parts``: readable, and unique by a short hash of the parts themselves
    (ids ``a<1>`` and ``a-1`` read the same but name different files)."""
    import hashlib

    readable = "-".join(re.sub(r"[^A-Za-z0-9_-]+", "-", str(p)).strip("-").lower() or "x" for p in parts)
    digest = hashlib.sha256("\0".join(str(p) for p in parts).encode()).hexdigest()[:8]
    return f"{readable[:80]}-{digest}"


def _fit(pixels: np.ndarray, side: int = 128) -> np.ndarray:
    """An RGB uint8 image whose shorter side is about ``side``: small ones enlarged with
    nearest neighbours (pixels stay visible), large ones reduced."""
    from PIL import Image

    from generator.render.images import as_rgb, upscale

    rgb = as_rgb(np.asarray(pixels))
    rgb = rgb if rgb.dtype == np.uint8 else np.clip(rgb, 0, 255).astype(np.uint8)
    rgb = upscale(rgb, side)
    h, w = rgb.shape[:2]
    if min(h, w) > side * 1.5:
        scale = side / min(h, w)
        rgb = np.asarray(Image.fromarray(rgb).resize((max(1, round(w * scale)), max(1, round(h * scale))),
                                                     Image.Resampling.BILINEAR))
    return rgb


@dataclass
class ImageSink:
    """Images the Review page will show, by name; written by :func:`write_diff`."""

    images: Dict[str, np.ndarray] = field(default_factory=dict)

    def add(self, name: str, pixels: np.ndarray) -> str:
        rel = f"{REVIEW_IMAGES}/{name}.png"
        self.images[rel] = pixels
        return rel

    def map_view(self, name: str, attribution: np.ndarray, signed: bool, pixels: Optional[np.ndarray]) -> str:
        from generator.render.images import colourise, overlay, upscale

        grid = _as_grid(attribution)
        if pixels is None:
            return self.add(name, upscale(colourise(grid, signed), 128))
        return self.add(name, overlay(_fit(pixels), grid, signed))


# --- the diff ----------------------------------------------------------------------------

@dataclass
class ReportDiff:
    base: str
    head: str
    base_missing: Optional[str] = None  # why there is no base report to compare with
    identity: List[Dict[str, Any]] = field(default_factory=list)  # what changed in each model
    models_added: List[str] = field(default_factory=list)
    models_removed: List[str] = field(default_factory=list)
    predictions: List[Dict[str, Any]] = field(default_factory=list)
    attributions: List[Dict[str, Any]] = field(default_factory=list)
    representations: List[Dict[str, Any]] = field(default_factory=list)  # layer-by-layer CKA
    features: List[Dict[str, Any]] = field(default_factory=list)  # feature units that changed
    sections: List[Dict[str, Any]] = field(default_factory=list)  # other dimensions' comparisons
    gate: Optional[Dict[str, Any]] = None  # the --fail-on rules and what they found
    site_url: Optional[str] = None  # where HEAD's site is published, for links
    sink: ImageSink = field(default_factory=ImageSink, repr=False, compare=False)

    @property
    def changed(self) -> bool:
        return bool(self.models_added or self.models_removed
                    or any(m["changed"] for m in self.identity)
                    or any(p["changed"] for p in self.predictions)
                    or any(a.get("note") in ("new in HEAD", "removed in HEAD") for a in self.attributions)
                    or any(not _is_unchanged(a["min_spearman"]) for a in self.attributions if a["compared"])
                    or any(r["changed"] for r in self.representations if r["compared"])
                    or any(f.get("changed") for f in self.features)
                    or any(s.get("changed") for s in self.sections))

    @property
    def failed(self) -> bool:
        return bool(self.gate and not self.gate["passed"])

    def to_json(self) -> Dict[str, Any]:
        return {"schema": DIFF_SCHEMA, "base": self.base, "head": self.head, "base_missing": self.base_missing,
                "changed": self.changed, "identity": self.identity, "models_added": self.models_added,
                "models_removed": self.models_removed, "predictions": self.predictions,
                "attributions": self.attributions, "representations": self.representations,
                "features": self.features, "sections": self.sections, "gate": self.gate, "site_url": self.site_url}


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


# --- model identity ----------------------------------------------------------------------

def _short(digest: Optional[str]) -> Optional[str]:
    return digest[:12] if digest else None


def _identity_values(manifest: Manifest, model: str) -> Dict[str, Optional[str]]:
    """What the report says the model is, as display strings (None: not recorded)."""
    art = manifest.one("model", model=model)
    if art is None:
        return {}
    rec: ModelRecord = art.rec
    spec = rec.spec
    extra_spec = spec.model_extra or {}
    code = extra_spec.get("code_digest") or rec.extra.get("code_digest")
    seed: Optional[str] = None
    training = manifest.one("training", model=model)
    if training is not None:
        settings = training.rec.settings
        seed = None if settings.get("seed") is None else str(settings["seed"])
    names = list(rec.class_names)
    return {
        "source": spec.source,
        "architecture": spec.architecture or None,
        "weights": spec.weights or None,
        "weights digest": spec.weights_digest or None,
        "code digest": str(code) if code else None,
        "input size": "×".join(str(v) for v in spec.input_size),
        "preprocessing": (f"resize {spec.resize or 'straight'}, {spec.interpolation}, mean "
                          f"{[round(float(v), 4) for v in spec.mean]}, std {[round(float(v), 4) for v in spec.std]}"),
        "classes": f"{len(names)} classes",
        "class names": "|".join(names),
        "parameters": f"{rec.parameters:,}",
        "training seed": seed,
    }


def _class_change(base: str, head: str) -> str:
    a, b = base.split("|") if base else [], head.split("|") if head else []
    added = [n for n in b if n not in a]
    removed = [n for n in a if n not in b]
    parts = []
    if added:
        parts.append(f"added: {', '.join(added[:5])}{' …' if len(added) > 5 else ''}")
    if removed:
        parts.append(f"removed: {', '.join(removed[:5])}{' …' if len(removed) > 5 else ''}")
    if not parts:
        parts.append("same names, another order")
    return "; ".join(parts)


def model_identity(base: Manifest, head: Manifest, model: str) -> Dict[str, Any]:
    """Field by field, what each report says the model is; ``changed`` when any field differs.

    Digests are compared in full and shown by their first 12 characters; a field one report did
    not record (an older report has no code digest) is shown as such, and counts as a change
    only when the other report recorded it."""
    a, b = _identity_values(base, model), _identity_values(head, model)
    rows = []
    for name in b or a:
        va, vb = a.get(name), b.get(name)
        changed = va != vb
        row: Dict[str, Any] = {"field": name, "base": va, "head": vb, "changed": changed, "note": None}
        if name.endswith("digest"):
            row.update(base=_short(va), head=_short(vb), base_full=va, head_full=vb)
        if name == "class names":
            row.update(base=f"{len(va.split('|')) if va else 0} names", head=f"{len(vb.split('|')) if vb else 0} names",
                       note=_class_change(va or "", vb or "") if changed else None)
        rows.append(row)
    changed_fields = [r["field"] for r in rows if r["changed"]]
    return {"model": model, "changed": bool(changed_fields), "changed_fields": changed_fields, "fields": rows,
            "note": None if (a and b) else "no model record in " + ("either report" if not (a or b)
                                                                     else "the base" if not a else "HEAD")}


# --- predictions -------------------------------------------------------------------------

def _ids(manifest: Manifest, art: TypedArtifact, rec: PredictionsRecord, topk: Dict[str, np.ndarray]
         ) -> List[Optional[str]]:
    """The id of every image the predictions cover, where the report recorded it: all of them
    when ``topk.npz`` lists ``ids``; otherwise the shown images and the dataset's first 50."""
    if "ids" in topk and len(topk["ids"]) == rec.count:
        return [str(v) for v in topk["ids"]]
    ids: List[Optional[str]] = [None] * rec.count
    ds = manifest.one("dataset", dataset=rec.dataset)
    if ds is not None:
        for i, item in enumerate(ds.rec.items[:rec.count]):
            ids[i] = item.id
    for i, row in enumerate(rec.shown[:rec.count]):
        ids[i] = row.id
    return ids


def _pixels_by_id(manifest: Manifest, model: str, dataset: str) -> Dict[str, np.ndarray]:
    """Displayed inputs of the shown images (the model's view), then the dataset's thumbnails."""
    out: Dict[str, np.ndarray] = {}
    ds = manifest.one("dataset", dataset=dataset)
    if ds is not None and "thumbs" in ds.record.get("files", {}):
        thumbs = ds.load_npz("thumbs")
        for i, item in enumerate(thumbs.get("ids", np.array([])).tolist()):
            if f"img_{i}" in thumbs:
                out[str(item)] = thumbs[f"img_{i}"]
    pred = manifest.one("predictions", model=model, dataset=dataset)
    if pred is not None and "inputs" in pred.record.get("files", {}):
        inputs = pred.load_npz("inputs")
        for i, item in enumerate(inputs.get("ids", np.array([])).tolist()):
            out[str(item)] = inputs["pixels"][i]
    return out


def compare_predictions(base: Manifest, head: Manifest, model: str, dataset: str,
                        sink: Optional[ImageSink] = None) -> Optional[Dict[str, Any]]:
    """Accuracy, how many top-1 predictions changed, the mean change of the top-1 probability,
    and the changed images (id, label, class and probability before and after, a thumbnail)."""
    a, b = base.one("predictions", model=model, dataset=dataset), head.one("predictions", model=model, dataset=dataset)
    if a is None or b is None:
        return None
    sa: PredictionsRecord = a.rec
    sb: PredictionsRecord = b.rec
    ta, tb = a.load_npz("topk"), b.load_npz("topk")
    change = None if sa.accuracy is None or sb.accuracy is None else float(sb.accuracy) - float(sa.accuracy)
    out: Dict[str, Any] = {"model": model, "dataset": dataset, "accuracy_base": sa.accuracy,
                           "accuracy_head": sb.accuracy, "accuracy_change": _round(change, 6), "count": sb.count,
                           "count_base": sa.count, "compared": False, "note": None, "changed_images": []}
    ids_a, ids_b = _ids(base, a, sa, ta), _ids(head, b, sb, tb)
    if None not in ids_a and None not in ids_b and ids_a != ids_b:
        # Every image is named: compare the same images, whatever their order or number.
        where = {item: i for i, item in enumerate(ids_a)}
        pairs = [(where[item], j) for j, item in enumerate(ids_b) if item in where]
        if len(pairs) < len(ids_b) or len(pairs) < len(ids_a):
            out["note"] = f"{len(pairs)} images in both reports (base {sa.count}, head {sb.count}); compared by id"
    elif sa.count == sb.count:
        pairs = [(i, i) for i in range(sb.count)]
    else:
        out.update(changed=True, note=f"the datasets differ in size (base {sa.count}, head {sb.count}) and not every "
                                      "image's id is recorded; predictions not compared one by one")
        return out
    ia = np.array([p[0] for p in pairs], dtype=np.int64)
    ib = np.array([p[1] for p in pairs], dtype=np.int64)
    top_a, top_b = ta["index"][ia, 0], tb["index"][ib, 0]
    p_a, p_b = ta["probability"][ia, 0].astype(np.float64), tb["probability"][ib, 0].astype(np.float64)
    flipped = np.flatnonzero(top_a != top_b)
    names_a, names_b = _class_names(base, model), _class_names(head, model)
    labels = tb["label"][ib] if sb.has_labels and "label" in tb else None
    pixels = _pixels_by_id(head, model, dataset) if sink is not None else {}
    examples = []
    for k in flipped[:CHANGED_LISTED]:
        j = int(ib[k])
        item = ids_b[j]
        entry: Dict[str, Any] = {
            "image": item if item is not None else f"image {j + 1} of {sb.count} (id not recorded)",
            "index": j, "label": None, "base": _name(names_a, int(top_a[k])),
            "base_probability": _round(float(p_a[k])), "head": _name(names_b, int(top_b[k])),
            "head_probability": _round(float(p_b[k])), "thumb": None, "base_correct": None, "head_correct": None}
        if labels is not None and int(labels[k]) >= 0:
            entry.update(label=_name(names_b, int(labels[k])), base_correct=bool(top_a[k] == labels[k]),
                         head_correct=bool(top_b[k] == labels[k]))
        if sink is not None and item is not None and item in pixels:
            entry["thumb"] = sink.add(_slug("pred", model, dataset, item), _fit(pixels[item], 96))
        examples.append(entry)
    shift = np.abs(p_a - p_b) if len(pairs) else np.zeros(0)
    out.update(compared=True, changed=bool(len(flipped)) or sa.accuracy != sb.accuracy or sa.count != sb.count,
               compared_count=len(pairs), changed_count=int(len(flipped)),
               changed_fraction=_round(len(flipped) / len(pairs)) if pairs else None, changed_images=examples,
               listed=len(examples), probability_shift=_round(float(shift.mean())) if len(shift) else None,
               probability_shift_max=_round(float(shift.max())) if len(shift) else None)
    return out


# --- attribution maps --------------------------------------------------------------------

def compare_attributions(base: Manifest, head: Manifest, model: str, dataset: str,
                         sink: Optional[ImageSink] = None) -> List[Dict[str, Any]]:
    """Per method, each image's map in HEAD against the same image's map in the base
    (:func:`compare_maps`), the most changed first; before/after maps of those."""
    results = []
    pixels_a = _pixels_by_id(base, model, dataset) if sink is not None else {}
    pixels_b = _pixels_by_id(head, model, dataset) if sink is not None else {}
    for art_b in head.find("attribution", model=model, dataset=dataset):
        rec_b: AttributionRecord = art_b.rec
        method = rec_b.method
        art_a = base.one("attribution", model=model, dataset=dataset, method=method)
        entry: Dict[str, Any] = {"model": model, "dataset": dataset, "method": method, "compared": False,
                                 "note": None}
        if art_a is None:
            entry["note"] = "new in HEAD"
            results.append(entry)
            continue
        rec_a: AttributionRecord = art_a.rec
        maps_a, maps_b = art_a.load_npz("maps")["maps"], art_b.load_npz("maps")["maps"]
        images_a = list(rec_a.images)
        per_image: List[Dict[str, Any]] = []
        for j, item in enumerate(rec_b.images):
            if item not in images_a:
                continue
            i = images_a.index(item)
            found = compare_maps(maps_a[i], maps_b[j])
            per_image.append({"image": item, "pearson": _round(found["pearson"]), "spearman": _round(found["spearman"]),
                              "comparable": found["comparable"], "reason": found["reason"], "grid": found["grid"],
                              "target_base": rec_a.target_names[i], "target_head": rec_b.target_names[j],
                              "base_view": None, "head_view": None, "_i": i, "_j": j})
        if not per_image:
            entry["note"] = "no image in both reports"
            results.append(entry)
            continue
        # Not comparable first (a change of unknown size), then the lowest rank correlation.
        per_image.sort(key=lambda r: (r["comparable"], r["spearman"] if r["spearman"] is not None else -2.0))
        comparable = [r["spearman"] for r in per_image if r["comparable"]]
        for r in per_image[:MAP_VIEWS]:
            i, j = r["_i"], r["_j"]
            if sink is not None and not _is_unchanged(r["spearman"]):
                stem = _slug("map", model, dataset, method, r["image"])
                r["base_view"] = sink.map_view(f"{stem}-base", maps_a[i], rec_a.signed, pixels_a.get(r["image"]))
                r["head_view"] = sink.map_view(f"{stem}-head", maps_b[j], rec_b.signed, pixels_b.get(r["image"]))
        for r in per_image:
            del r["_i"], r["_j"]
        grids = sorted({r["grid"] for r in per_image if r["grid"]})
        entry.update(compared=True, per_image=per_image,
                     mean_spearman=_round(float(np.mean(comparable))) if comparable else None,
                     min_spearman=per_image[0]["spearman"] if per_image[0]["comparable"] else None,
                     not_comparable=sum(not r["comparable"] for r in per_image),
                     grid=grids[0] if len(grids) == 1 else ("; ".join(grids) or None),
                     same_key=art_a.key == art_b.key)
        results.append(entry)
    for art_a in base.find("attribution", model=model, dataset=dataset):
        method = art_a.rec.method
        if head.one("attribution", model=model, dataset=dataset, method=method) is None:
            results.append({"model": model, "dataset": dataset, "method": method, "compared": False,
                            "note": "removed in HEAD"})
    return results


# --- representations (layer-by-layer CKA from stored Gram matrices) ----------------------

def compare_representations(base: Manifest, head: Manifest, model: str, dataset: str) -> Dict[str, Any]:
    """Linear CKA between the two versions of each layer (matched by name), from the Gram
    matrices both reports stored on the same images (``representation_grams``); when they cannot
    be compared, ``note`` says why. The Gram matrices are of centred activations; restricted to
    the images both cover and centred again they are exactly those of the common images."""
    out: Dict[str, Any] = {"model": model, "dataset": dataset, "compared": False, "changed": False, "layers": [],
                           "images": 0, "base_only": [], "head_only": [], "few_images": False, "subset_note": None,
                           "note": None}
    a = base.one("representation_grams", model=model, dataset=dataset)
    b = head.one("representation_grams", model=model, dataset=dataset)
    if a is None or b is None:
        which = "either report" if a is None and b is None else "the base report" if a is None else "HEAD"
        out["note"] = (f"no layer comparison: {which} stored no Gram matrices for {model} on {dataset} "
                       "(`compare.similarity` with `within_model: true` stores them)")
        return out
    ra: GramsRecord = a.rec
    rb: GramsRecord = b.rec
    where = {item: i for i, item in enumerate(ra.gram_images)}
    pairs = [(where[item], j) for j, item in enumerate(rb.gram_images) if item in where]
    if len(pairs) < 4:
        out["note"] = (f"no layer comparison: the reports' Gram matrices cover different images ({len(pairs)} in "
                       f"both; base {len(ra.gram_images)}, head {len(rb.gram_images)}; at least 4 are needed)")
        return out
    ia = np.array([p[0] for p in pairs])
    ib = np.array([p[1] for p in pairs])
    grams_a, grams_b = a.load_npz("grams"), b.load_npz("grams")
    layers = []
    for j, layer in enumerate(rb.layers):
        if layer not in ra.layers:
            continue
        i = ra.layers.index(layer)
        ka = np.asarray(grams_a[f"gram_{i}"], dtype=np.float64)[np.ix_(ia, ia)]
        kb = np.asarray(grams_b[f"gram_{j}"], dtype=np.float64)[np.ix_(ib, ib)]
        cka = cka_from_grams(ka, kb)
        layers.append({"layer": layer, "cka": _round(cka), "changed": not _is_unchanged(cka),
                       "reason": None if np.isfinite(cka) else "a version of this layer is constant on these images"})
    out.update(compared=bool(layers), images=len(pairs), layers=layers,
               changed=any(r["changed"] for r in layers),
               base_only=[x for x in ra.layers if x not in rb.layers],
               head_only=[x for x in rb.layers if x not in ra.layers],
               few_images=len(pairs) < CKA_FEW_IMAGES,
               note=None if layers else "no layer of the same name in both reports")
    if layers and len(pairs) < len(rb.gram_images):
        out["subset_note"] = f"on the {len(pairs)} images both reports cover"
    return out


# --- feature visualisations --------------------------------------------------------------

def compare_feature_visualisations(base: Manifest, head: Manifest, top: int = 5,
                                   sink: Optional[ImageSink] = None) -> List[Dict[str, Any]]:
    """Per model and layer, the units whose visualisation changed most (mean absolute pixel
    difference in [0, 1], and the change of the objective value), with both renders."""
    out = []
    for art_b in head.find("features_gallery"):
        # Found by the labels the manifest lists it under (the gallery's images are in its npz).
        model, layer = art_b.labels.get("model"), art_b.labels.get("layer")
        art_a = base.one("features_gallery", model=model, layer=layer)
        title = f"Feature visualisations: {model} {layer}"
        entry: Dict[str, Any] = {"title": title, "model": model, "layer": layer, "units": [], "note": None}
        if art_a is None:
            out.append({**entry, "changed": True, "lines": ["new in HEAD"]})
            continue
        a, b = art_a.load_npz("images"), art_b.load_npz("images")
        channels_a = a["channels"].tolist()
        units = []
        for j, c in enumerate(b["channels"].tolist()):
            if c not in channels_a:
                continue
            i = channels_a.index(c)
            img_a, img_b = a["images"][i], b["images"][j]
            if img_a.shape != img_b.shape:
                from PIL import Image

                img_a = np.asarray(Image.fromarray(img_a).resize(img_b.shape[1::-1], Image.Resampling.BILINEAR))
            diff = float(np.abs(img_a.astype(np.float32) - img_b.astype(np.float32)).mean() / 255)
            units.append({"unit": int(c), "pixel_change": round(diff, 4),
                          "objective_base": round(float(a["values"][i]), 4),
                          "objective_head": round(float(b["values"][j]), 4), "base_view": None, "head_view": None,
                          "_i": i, "_j": j})
        units.sort(key=lambda u: -u["pixel_change"])
        for rank, u in enumerate(units):
            i, j = u.pop("_i"), u.pop("_j")
            if sink is not None and u["pixel_change"] > 0 and rank < top:
                stem = _slug("unit", model, layer, u["unit"])
                u["base_view"] = sink.add(f"{stem}-base", _fit(a["images"][i], 96))
                u["head_view"] = sink.add(f"{stem}-head", _fit(b["images"][j], 96))
        changed = any(u["pixel_change"] > 0 for u in units)
        lines = [f"unit {u['unit']}: pixels changed {100 * u['pixel_change']:.1f}%, objective "
                 f"{u['objective_base']:.3g} → {u['objective_head']:.3g}" for u in units[:top] if u["pixel_change"] > 0]
        out.append({**entry, "changed": changed, "lines": lines or ["no unit changed"], "units": units})
    for art_a in base.find("features_gallery"):
        model, layer = art_a.labels.get("model"), art_a.labels.get("layer")
        if head.one("features_gallery", model=model, layer=layer) is None:
            out.append({"title": f"Feature visualisations: {model} {layer}", "model": model, "layer": layer,
                        "changed": True, "lines": ["removed in HEAD"], "units": [], "note": None})
    return out


def _features_note(base: Manifest, head: Manifest) -> Optional[str]:
    has_a, has_b = bool(base.find("features_gallery")), bool(head.find("features_gallery"))
    if has_a and has_b:
        return None
    which = "neither report has" if not (has_a or has_b) else "the base report has no" if not has_a else "HEAD has no"
    return f"no feature units compared: {which} feature visualisations (the `features` section)"


def compare_decision_sets(base: Manifest, head: Manifest, sink: Optional[ImageSink] = None) -> List[Dict[str, Any]]:
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
SECTION_COMPARATORS: List[Callable[..., List[Dict[str, Any]]]] = [compare_decision_sets]


def diff_reports(base_path: Path, head_path: Path, *, allow_missing_base: bool = False,
                 site_url: Optional[str] = None) -> ReportDiff:
    """Compare the reports at ``base_path`` and ``head_path`` (folders or configs).

    With ``allow_missing_base``, a base without a report (the pull request that adds the first
    one) gives a diff that says so instead of an error."""
    head_dir = _work_dir(Path(head_path))
    head = Manifest.load(head_dir)
    result = ReportDiff(base=str(base_path), head=str(head_path), site_url=site_url)
    try:
        base = Manifest.load(_work_dir(Path(base_path)))
    except FileNotFoundError as exc:
        if not allow_missing_base:
            raise
        result.base_missing = str(exc)
        result.models_added = head.models
        return result
    result.models_added = [m for m in head.models if m not in base.models]
    result.models_removed = [m for m in base.models if m not in head.models]
    result.identity = [model_identity(base, head, m) for m in head.models if m in base.models]
    sink = result.sink
    for model, dataset in head.pairs:
        if [model, dataset] not in base.pairs:
            continue
        pred = compare_predictions(base, head, model, dataset, sink)
        if pred is not None:
            result.predictions.append(pred)
        result.attributions.extend(compare_attributions(base, head, model, dataset, sink))
        result.representations.append(compare_representations(base, head, model, dataset))
    result.features = compare_feature_visualisations(base, head, sink=sink)
    note = _features_note(base, head)
    if note:
        result.features.append({"title": "Feature visualisations", "changed": False, "note": note, "lines": [note],
                                "units": []})
    for compare in SECTION_COMPARATORS:
        result.sections.extend(compare(base, head, sink))
    return result


# --- the CI gate: --fail-on rules --------------------------------------------------------

#: Rule name -> what its threshold means.
FAIL_RULES: Dict[str, str] = {
    "accuracy_drop": "top-1 accuracy of a model on a dataset fell by more than this fraction "
                     "(0.01 = one percentage point); pairs without labels are not checked",
    "map_change": "an attribution method's maps changed by more than this: 1 − the mean Spearman rank "
                  "correlation of its maps with the base's (0 unchanged, 1 unrelated, 2 reversed); a map "
                  "that cannot be compared (NaN or infinite values) fails the rule",
    "prediction_change": "more than this fraction of the images changed their top-1 class",
    "cka_drop": "a layer's linear CKA with its base version fell below 1 − this",
}


@dataclass(frozen=True)
class FailRule:
    name: str
    threshold: float

    def __str__(self) -> str:
        return f"{self.name}={self.threshold:g}"


def parse_fail_rule(text: str) -> FailRule:
    """``NAME=THRESHOLD`` (e.g. ``accuracy_drop=0.01``) as a :class:`FailRule`; a ValueError
    naming the known rules (and a close match) otherwise."""
    name, sep, value = text.partition("=")
    name = name.strip().replace("-", "_")
    if name not in FAIL_RULES:
        close = difflib.get_close_matches(name, FAIL_RULES, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ValueError(f"unknown rule {name!r}: {hint}known: {', '.join(FAIL_RULES)}")
    try:
        threshold = float(value)
    except ValueError:
        threshold = float("nan")
    if not sep or not np.isfinite(threshold) or threshold < 0:
        raise ValueError(f"{text!r}: the threshold must be a number >= 0, as in {name}=0.01")
    return FailRule(name, threshold)


def _violations(diff: ReportDiff, rule: FailRule) -> List[str]:
    t = rule.threshold
    found: List[str] = []
    if rule.name == "accuracy_drop":
        for p in diff.predictions:
            if p["accuracy_base"] is not None and p["accuracy_head"] is not None:
                drop = float(p["accuracy_base"]) - float(p["accuracy_head"])
                if drop > t:
                    found.append(f"{p['model']} on {p['dataset']}: accuracy {_pct(p['accuracy_base'])} → "
                                 f"{_pct(p['accuracy_head'])} (−{100 * drop:.2f} points)")
    elif rule.name == "prediction_change":
        for p in diff.predictions:
            if not p["compared"]:
                found.append(f"{p['model']} on {p['dataset']}: {p['note']}")
            elif (p["changed_fraction"] or 0.0) > t:
                found.append(f"{p['model']} on {p['dataset']}: {p['changed_count']} of {p['compared_count']} "
                             "top-1 predictions changed")
    elif rule.name == "map_change":
        for a in diff.attributions:
            if not a["compared"]:
                continue
            label = f"{a['model']} on {a['dataset']}, {a['method']}"
            if a["not_comparable"]:
                found.append(f"{label}: {a['not_comparable']} map(s) could not be compared "
                             f"({a['per_image'][0]['reason']})")
            elif a["mean_spearman"] is not None and 1.0 - a["mean_spearman"] > t:
                found.append(f"{label}: map change {1.0 - a['mean_spearman']:.3f} (mean rank correlation "
                             f"{a['mean_spearman']:.3f})")
    elif rule.name == "cka_drop":
        for r in diff.representations:
            for layer in r["layers"]:
                if layer["cka"] is None or 1.0 - layer["cka"] > t:
                    value = "undefined" if layer["cka"] is None else f"{layer['cka']:.3f}"
                    found.append(f"{r['model']} on {r['dataset']}, layer {layer['layer']}: CKA {value}")
    return found


def check_rules(diff: ReportDiff, rules: Sequence[FailRule]) -> Dict[str, Any]:
    """Apply the rules; the result is stored as ``diff.gate`` and returned."""
    results = []
    for rule in rules:
        found = [] if diff.base_missing else _violations(diff, rule)
        results.append({"rule": str(rule), "name": rule.name, "threshold": rule.threshold,
                        "meaning": FAIL_RULES[rule.name], "passed": not found, "failures": found})
    diff.gate = {"passed": all(r["passed"] for r in results), "rules": results,
                 "note": "no base report: nothing to check" if diff.base_missing else None}
    return diff.gate


# --- writing -----------------------------------------------------------------------------

def _pct(v: Optional[float]) -> str:
    return "–" if v is None else f"{100 * v:.2f}%"


def _num(v: Optional[float], digits: int = 3) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}"


def _cell(text: object) -> str:
    """A Markdown table cell or inline text from a user string (pipes, backticks, HTML and
    newlines neutralised) for the PR comment."""
    import html

    return html.escape(str(text), quote=False).replace("|", "\\|").replace("`", "'").replace("\n", " ")


def review_link(diff: ReportDiff, anchor: str = "") -> Optional[str]:
    if not diff.site_url:
        return None
    return f"{diff.site_url.rstrip('/')}/review.html{'#' + anchor if anchor else ''}"


def summary_markdown(diff: ReportDiff, max_rows: int = 5) -> str:
    """A short Markdown summary for a pull-request comment: what changed, the gate, and links to
    the Review page, where the images and every number are."""
    link = review_link(diff)
    where = f"[the Review page]({link})" if link else "the Review page of HEAD's site (`review.html`)"
    lines = [f"## Model report diff: `{_cell(diff.base)}` → `{_cell(diff.head)}`", ""]
    if diff.base_missing:
        lines += [f"**No base report yet**, nothing to compare: {_cell(diff.base_missing)}", "",
                  f"Models in HEAD: {_cell(', '.join(diff.models_added) or 'none')}."]
        return "\n".join(lines) + "\n"
    if diff.gate is not None:
        if diff.gate["passed"]:
            lines.append("**Gate passed**: " + ", ".join(f"`{r['rule']}`" for r in diff.gate["rules"]) + ".")
        else:
            lines.append("**Gate failed**:")
            lines += [f"- `{r['rule']}`: {_cell(f)}" for r in diff.gate["rules"] for f in r["failures"][:max_rows]]
        lines.append("")
    if not diff.changed:
        lines.append("**No change**: the same models, predictions, attribution maps and representations.")
        return "\n".join(lines) + "\n"
    if diff.models_added or diff.models_removed:
        lines += [f"Models added: {_cell(', '.join(diff.models_added) or 'none')}; removed: "
                  f"{_cell(', '.join(diff.models_removed) or 'none')}.", ""]
    for m in diff.identity:
        if m["changed"]:
            parts = []
            for r in m["fields"]:
                if r["changed"] and r["field"] != "class names":
                    before, after = r["base"] or "not recorded", r["head"] or "not recorded"
                    parts.append(f"{r['field']} {_cell(before)} → {_cell(after)}")
                elif r["changed"]:
                    parts.append(f"class names ({_cell(r.get('note') or '')})")
            lines.append(f"- **{_cell(m['model'])}** changed: " + "; ".join(parts))
    if any(m["changed"] for m in diff.identity):
        lines.append("")
    if diff.predictions:
        lines += ["| Model | Dataset | Accuracy (base → head) | Top-1 changed | Mean top-1 prob. shift |",
                  "|---|---|---|---|---|"]
        for p in diff.predictions:
            changed = f"{p['changed_count']} of {p['compared_count']}" if p["compared"] else _cell(p["note"])
            lines.append(f"| {_cell(p['model'])} | {_cell(p['dataset'])} | {_pct(p['accuracy_base'])} → "
                         f"{_pct(p['accuracy_head'])} | {changed} | {_num(p.get('probability_shift'))} |")
        lines.append("")
    changed_maps = [a for a in diff.attributions if a["compared"] and not _is_unchanged(a["min_spearman"])]
    if changed_maps:
        lines += ["| Model | Method | Mean rank corr. of maps | Most changed image |", "|---|---|---|---|"]
        for a in sorted(changed_maps, key=lambda a: (a["not_comparable"] == 0, a["mean_spearman"] or -2.0))[:max_rows]:
            worst = a["per_image"][0]
            value = _num(worst["spearman"]) if worst["comparable"] else "not comparable"
            lines.append(f"| {_cell(a['model'])} | {_cell(a['method'])} | {_num(a['mean_spearman'])} | "
                         f"{_cell(worst['image'])} ({value}) |")
        if len(changed_maps) > max_rows:
            lines.append(f"\n… and {len(changed_maps) - max_rows} more methods.")
        lines.append("")
    for r in diff.representations:
        if r["compared"] and r["changed"]:
            worst = sorted(r["layers"], key=lambda x: x["cka"] if x["cka"] is not None else -1.0)[:3]
            lines.append(f"Layers of {_cell(r['model'])} that changed most (linear CKA with base, "
                         f"{r['images']} images): " + ", ".join(f"{_cell(x['layer'])} {_num(x['cka'])}" for x in worst)
                         + ".")
    for section in [*diff.features, *diff.sections]:
        if section.get("changed"):
            lines.append(f"**{_cell(section['title'])}**: " + "; ".join(_cell(x) for x in section["lines"][:3]))
    lines += ["", f"Images, maps and every number: {where}."]
    return "\n".join(lines).rstrip() + "\n"


def write_diff(diff: ReportDiff, head_path: Path, out: Optional[Path] = None) -> Tuple[Path, Path]:
    """Write ``summary.md``, ``diff.json`` and the Review page's images (``review-images/``), by
    default into HEAD's report folder, ``diff/``, where ``modelcard render`` of HEAD reads them."""
    from generator.render.images import save_image

    folder = out or default_output(head_path)
    folder.mkdir(parents=True, exist_ok=True)
    images = folder / REVIEW_IMAGES
    if images.is_dir():  # last diff's images: only the PNGs this function wrote
        for old in images.glob("*.png"):
            old.unlink()
    for rel, pixels in diff.sink.images.items():
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        save_image(path, pixels)
    md = folder / "summary.md"
    md.write_text(summary_markdown(diff))
    js = folder / "diff.json"
    write_json_atomic(js, diff.to_json())
    return md, js


def default_output(head_path: Path) -> Path:
    """Where ``modelcard render`` of HEAD looks for the diff: its report folder's ``diff/``."""
    return _work_dir(Path(head_path)) / "diff"


def load_diff(work_dir: Path) -> Optional[Dict[str, Any]]:
    """``diff.json`` of a report folder (None when ``modelcard diff`` did not write one)."""
    path = work_dir / "diff" / "diff.json"
    if not path.exists():
        return None
    data = json.loads(path.read_text())
    return data if isinstance(data, dict) else {"schema": None}


def review_image(work_dir: Path, rel: str) -> Optional[Path]:
    """The file of an image ``diff.json`` names, only inside ``diff/review-images`` (a path from
    a file is never followed elsewhere)."""
    if not re.fullmatch(rf"{REVIEW_IMAGES}/[a-z0-9_-]+\.png", rel):
        return None
    path = work_dir / "diff" / rel
    return path if path.is_file() else None
