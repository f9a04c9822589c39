"""Concept pages (section "Concepts"): TCAV, regression concept vectors and dissection.

Per (model, dataset) with ``concepts_*`` artifacts (:mod:`generator.pipeline.stages.concepts`):
an overview, a TCAV page (score per class x concept x layer with its test; scores that are not
significant after the correction are greyed, never findings), an RCV page (held-out R² per
measure x layer; sensitivities and bidirectional relevance where R² is meaningful) and a
dissection page per layer (every unit's label, the per-category summary, how the masks were
made with example images). :func:`unit_labels` gives other pages a unit's label. Reads the
typed records; numpy only, never torch.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

import numpy as np

from generator.records.concepts import DissectionRecord, RcvRecord, TcavRecord
from generator.render import images as img
from generator.render.pages import PageBuilder, SiteContext, register_pages
from generator.render.text import slug

#: Below this held-out R² an RCV explains too little of its measure for its sensitivities to mean anything.
R2_MEANINGFUL = 0.2
#: Below this held-out accuracy a CAV hardly separates its concept from random images.
ACCURACY_MEANINGFUL = 0.7
THUMB = 96


def _base(model: str, dataset: str) -> str:
    return f"concepts/{slug(model)}/{slug(dataset)}"


def dissection_page(model: str, dataset: str, layer: str) -> str:
    """The path of the dissection page of ``layer`` (for links from other pages)."""
    return f"{_base(model, dataset)}/dissection-{slug(layer)}.md"


def unit_labels(manifest: Any, model: str, layer: str, dataset: Optional[str] = None) -> Dict[int, str]:
    """unit -> its dissection label (e.g. ``"striped, IoU 0.12"``) for ``model`` at ``layer``;
    units without a label are absent. Torch-free: reads the ``concepts_dissection`` record."""
    labels = {"model": model} if dataset is None else {"model": model, "dataset": dataset}
    for art in manifest.find("concepts_dissection", **labels):
        rec: DissectionRecord = art.rec
        for entry in rec.layers:
            if entry.layer == layer:
                return {lab.unit: lab.label for lab in entry.labels if lab.label is not None}
    return {}


def _title(site: SiteContext, model_id: str) -> str:
    model = site.models.get(model_id)
    if model is not None:
        return str(model["title"])
    mc = next((m for m in site.config.models if m.id == model_id), None)
    return (mc.title or mc.id) if mc is not None else model_id


def _rgb(pixels: np.ndarray) -> np.ndarray:
    return img.as_rgb(pixels)


def _strip(site: SiteContext, stem: str, images: np.ndarray) -> List[str]:
    # photographic pictures (64 px and more) as WebP, small ones as sharp PNG
    return [site.writer.image(f"{stem}-{i}{img.overlay_suffix(p)}", img.upscale(_rgb(p), THUMB))
            for i, p in enumerate(images)]


def _mask_overlay(pixels: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The image dimmed, the mask's pixels tinted red."""
    rgb = _rgb(pixels).astype(np.float64) * 0.45
    m = mask.astype(bool)
    rgb[m] = rgb[m] * 0.4 + np.array([255.0, 40.0, 40.0]) * 0.6
    return rgb.clip(0, 255).astype(np.uint8)


def _tcav_view(site: SiteContext, art: Any, rec: TcavRecord, base: str) -> Dict[str, Any]:
    arrays = art.load_npz("examples") if "examples" in rec.files else {}
    concepts = []
    for i, c in enumerate(rec.concepts):
        pics = _strip(site, f"assets/gen/{art.key}/concept-{i}", arrays[f"concept_{i}"]) \
            if f"concept_{i}" in arrays else []
        concepts.append({"name": c.name, "category": c.category, "source": c.source, "images": c.images,
                         "pictures": pics})
    randoms = _strip(site, f"assets/gen/{art.key}/random", arrays["random"]) if "random" in arrays else []
    names = {c.index: c.name for c in rec.classes}
    by_layer: Dict[str, List[Any]] = {}
    for row in rec.rows:
        by_layer.setdefault(row.layer, []).append(row)
    findings = [{"layer": row.layer, "concept": row.concept, "cls": names.get(s.cls, str(s.cls)), "mean": s.mean,
                 "random_mean": s.random_mean, "p": s.p_adjusted}
                for row in rec.rows for s in row.scores if s.significant]
    findings.sort(key=lambda f: f["p"])
    return {"rec": rec, "concepts": concepts, "randoms": randoms, "by_layer": by_layer, "class_names": names,
            "findings": findings, "page": f"{base}/tcav.md", "accuracy_meaningful": ACCURACY_MEANINGFUL}


def _rcv_view(rec: RcvRecord, base: str) -> Dict[str, Any]:
    grid: Dict[str, Dict[str, Any]] = {}
    for row in rec.rows:
        grid.setdefault(row.measure, {})[row.layer] = row
    best = []
    for m in rec.measures:
        rows = [r for r in grid.get(m.name, {}).values() if r.r2 is not None]
        if rows:
            top = max(rows, key=lambda r: r.r2)
            best.append({"measure": m.name, "layer": top.layer, "r2": top.r2})
    return {"rec": rec, "grid": grid, "names": {c.index: c.name for c in rec.classes}, "best": best,
            "page": f"{base}/rcv.md", "r2_meaningful": R2_MEANINGFUL}


def _dissection_views(site: SiteContext, art: Any, rec: DissectionRecord, base: str) -> List[Dict[str, Any]]:
    arrays = art.load_npz("examples") if "examples" in rec.files else {}
    examples = []
    for e in range(rec.example_count):
        image = arrays[f"image_{e}"]
        suffix = img.overlay_suffix(image)  # WebP for photos, PNG for 28 px images
        row = {"image": site.writer.image(f"assets/gen/{art.key}/example-{e}{suffix}",
                                          img.upscale(_rgb(image), THUMB)),
               "masks": []}
        for k in range(len(rec.examples)):
            mask = arrays[f"mask_{e}_{k}"]
            if mask.shape != image.shape[:2]:  # masks at the dissection resolution: nearest upsampling
                ry, rx = image.shape[0] / mask.shape[0], image.shape[1] / mask.shape[1]
                rows, cols = (np.arange(image.shape[0]) / ry).astype(int), (np.arange(image.shape[1]) / rx).astype(int)
                mask = mask[rows][:, cols]
            row["masks"].append(site.writer.image(f"assets/gen/{art.key}/example-{e}-{k}{suffix}",
                                                  img.upscale(_mask_overlay(image, mask), THUMB)))
        examples.append(row)
    out = []
    for entry in rec.layers:
        out.append({"layer": entry.layer, "page": dissection_page(rec.model, rec.dataset, entry.layer),
                    "entry": entry, "labelled_units": [lab for lab in entry.labels if lab.label is not None],
                    "examples": examples})
    return out


def concept_pages(site: SiteContext) -> List[Any]:
    manifest, writer = site.manifest, site.writer
    pairs: Dict[tuple, Dict[str, Any]] = {}
    for kind in ("concepts_tcav", "concepts_rcv", "concepts_dissection"):
        for art in manifest.find(kind):
            pairs.setdefault((art.rec.model, art.rec.dataset), {})[kind] = art
    nav: List[Any] = []
    for (model, dataset), arts in sorted(pairs.items()):
        base = _base(model, dataset)
        title = _title(site, model)
        dc = next((d for d in site.config.datasets if d.id == dataset), None)
        common = {"model": {"id": model, "title": title, "page": site.models.get(model, {}).get("page")},
                  "dataset": {"id": dataset, "title": (dc.title or dc.id) if dc else dataset}}
        tcav = _tcav_view(site, arts["concepts_tcav"], arts["concepts_tcav"].rec, base) \
            if "concepts_tcav" in arts else None
        rcv = _rcv_view(arts["concepts_rcv"].rec, base) if "concepts_rcv" in arts else None
        layers = (_dissection_views(site, arts["concepts_dissection"], arts["concepts_dissection"].rec, base)
                  if "concepts_dissection" in arts else [])
        dissection = arts["concepts_dissection"].rec if "concepts_dissection" in arts else None
        writer.page(f"{base}/index.md", "concepts_overview.md.j2", tcav=tcav, rcv=rcv, layers=layers,
                    dissection=dissection, **common)
        entries: List[Any] = [{"Overview": f"{base}/index.md"}]
        if tcav is not None:
            writer.page(tcav["page"], "concepts_tcav.md.j2", tcav=tcav, **common)
            entries.append({"TCAV": tcav["page"]})
        if rcv is not None:
            writer.page(rcv["page"], "concepts_rcv.md.j2", rcv=rcv, **common)
            entries.append({"Regression concept vectors": rcv["page"]})
        for view in layers:
            writer.page(view["page"], "concepts_dissection.md.j2", view=view, rec=dissection, **common)
        if layers:
            entries.append({"Dissection": [{v["layer"]: v["page"]} for v in layers]})
        nav.append({f"{title} on {common['dataset']['title']}": entries})
    return nav


register_pages(PageBuilder(name="concepts", order=700, section="Concepts", build=concept_pages))
