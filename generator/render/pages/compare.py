"""Compare pages (section "Compare"): several models on one dataset, side by side.

Per dataset with a ``compare`` artifact (:mod:`generator.pipeline.stages.compare`): an overview
(agreement per pair of models and method, top-1 agreement, the images ordered by disagreement,
class visualisations of the same class in several models, a link to the representation
similarity page where there is one), a page per image (the image once, then one row per model
with its top prediction and its maps, all resampled to the region every model sees) and a page
per method (every model on every image). Maps are drawn with the outcome pages' colour scales
(:mod:`generator.render.images`). Reads the typed ``compare`` and ``features_classes`` records;
numpy only.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

import numpy as np

from generator.records.compare import CompareRecord, ImageAgreement, PairAgreement
from generator.records.features import ClassesRecord
from generator.render import images as img
from generator.render.methods_info import info as method_info
from generator.render.pages import PageBuilder, SiteContext, register_pages
from generator.render.pages.features import _pic
from generator.render.pages.outcome import colour_bars, picture
from generator.render.text import slug

THUMB = 160  # px: smallest side of a map's file (small images are enlarged, nearest neighbour)

#: How each class relation is said on the pages.
RELATIONS = {
    "same": "same classes: top-1 predictions compared by class",
    "shared_names": "different class sets: top-1 predictions compared by class name ({shared} names in common; "
                    "a class only one model has counts as a disagreement)",
    "disjoint": "no class name in common: top-1 agreement is not defined",
}


def _base(dataset_id: str) -> str:
    return f"compare/{slug(dataset_id)}"


def model_title(site: SiteContext, model_id: str) -> str:
    """A model's title as the pages show it (its model page's, else the config's, else its id)."""
    model = site.models.get(model_id)
    if model is not None:
        return str(model["title"])
    mc = next((m for m in site.config.models if m.id == model_id), None)
    return (mc.title or mc.id) if mc is not None else model_id


def _dataset_title(site: SiteContext, dataset_id: str) -> str:
    dc = next((d for d in site.config.datasets if d.id == dataset_id), None)
    return (dc.title or dc.id) if dc is not None else dataset_id


def _similarity_page(site: SiteContext, dataset_id: str) -> Optional[str]:
    """The representation-similarity page of the dataset, when a builder before this one wrote it."""
    page = f"{_base(dataset_id)}/similarity.md"
    return page if page in site.writer.pages else None


def _class_visualisations(site: SiteContext, model_ids: List[str]) -> List[Dict[str, Any]]:
    """Class visualisations (features stage) of the same class name in two or more of the
    compared models: one row per class name, one cell per model (None where it has none)."""
    by_model: Dict[str, Dict[str, str]] = {}
    names: Dict[str, str] = {}
    for model_id in model_ids:
        art = site.manifest.one("features_classes", model=model_id)
        if art is None:
            continue
        rec: ClassesRecord = art.rec
        pictures = art.load_npz("images")["images"]
        for j, (c, name) in enumerate(zip(rec.classes, rec.names)):
            key = name.strip().lower()
            names.setdefault(key, name)
            # the features pages write the same files (same stem, pixels and reference)
            by_model.setdefault(model_id, {})[key] = _pic(site, f"assets/gen/{art.key}/class-{int(c)}",
                                                          pictures[j], ref=f"classvis/{model_id}/{int(c)}")
    rows = []
    for key, name in names.items():
        cells = [by_model.get(m, {}).get(key) for m in model_ids]
        if sum(c is not None for c in cells) >= 2:
            rows.append({"name": name, "cells": cells})
    return rows


def _pair_view(site: SiteContext, pair: PairAgreement, methods: List[str]) -> Dict[str, Any]:
    by_method = {m.method: m for m in pair.methods}
    return {"models": [model_title(site, m) for m in pair.models], "ids": list(pair.models),
            "relation": RELATIONS[pair.classes].format(shared=pair.shared_classes), "classes": pair.classes,
            "top1_agreement": pair.top1_agreement, "top1_compared": pair.top1_compared,
            "top1_agree": list(pair.top1_agree),
            "cells": [by_method.get(m) for m in methods]}


def compare_pages(site: SiteContext) -> List[Any]:
    manifest, writer = site.manifest, site.writer
    nav: List[Any] = []
    bars = colour_bars(site) if manifest.find("compare") else {}
    for art in manifest.find("compare"):
        rec: CompareRecord = art.rec
        base = _base(rec.dataset)
        arrays = art.load_npz("maps")
        model_ids = [m.id for m in rec.models]
        models = [{"id": m.id, "title": model_title(site, m.id),
                   "page": site.models[m.id]["page"] if m.id in site.models else None,
                   "input_size": m.input_size, "resize": m.resize, "classes": m.classes, "methods": m.methods}
                  for m in rec.models]
        methods = [{"name": name, "title": method_info(name)["title"], "read": method_info(name)["read"],
                    "signed": rec.signed[name], "page": f"{base}/method-{slug(name)}.md"} for name in rec.methods]
        images = [_image_view(site, art.key, rec, arrays, i, image, base) for i, image in enumerate(rec.images)]
        by_id = {im["id"]: im for im in images}
        pairs = [_pair_view(site, p, rec.methods) for p in rec.pairs]
        common = dict(dataset={"id": rec.dataset, "title": _dataset_title(site, rec.dataset)}, models=models,
                      methods=methods, images=images, pairs=pairs, bars=bars, top_k=rec.top_k,
                      overview=f"{base}/index.md", grid_most=rec.grid_most)
        writer.page(f"{base}/index.md", "compare_overview.md.j2",
                    ordered=[by_id[i] for i in rec.order], classvis=_class_visualisations(site, model_ids),
                    similarity=_similarity_page(site, rec.dataset), **common)
        for i, image in enumerate(images):
            writer.page(image["page"], "compare_image.md.j2", image=image, index=i, **common)
        for k, method in enumerate(methods):
            writer.page(method["page"], "compare_method.md.j2", method=method, index=k, **common)
        entries: List[Any] = [{"Overview": f"{base}/index.md"}]
        if methods:
            entries.append({"Methods": [{m["title"]: m["page"]} for m in methods]})
        entries.append({"Images": [{im["title"]: im["page"]} for im in images]})
        nav.append({f"Maps side by side: {common['dataset']['title']}": entries})
    return nav


def _image_view(site: SiteContext, key: str, rec: CompareRecord, arrays: Dict[str, np.ndarray], i: int,
                image: ImageAgreement, base: str) -> Dict[str, Any]:
    """One image: its common-region picture, and per model its prediction and map overlays."""
    writer = site.writer
    source = arrays[f"image_{i}"]
    pixels = img.upscale(source, THUMB)
    shown = picture(site, f"assets/gen/{key}/image-{i}", pixels, source)
    rows = []
    for a, row in enumerate(image.models):
        cells = []
        for b, method in enumerate(rec.methods):
            values = arrays.get(f"map_{i}_{a}_{b}")
            cells.append(None if values is None else {
                "picture": picture(site, f"assets/gen/{key}/map-{i}-{a}-{b}",
                                   img.overlay(pixels, values, rec.signed[method]), source),
                "range": img.map_range(values, rec.signed[method])})
        outcome_page = f"outcome/{slug(row.model)}/{slug(rec.dataset)}/image-{slug(image.id)}.md"
        rows.append({"model": row.model, "title": model_title(site, row.model), "top_class": row.top_class,
                     "top_probability": row.top_probability, "explains": row.explains,
                     "explains_probability": row.explains_probability, "region": row.region, "cells": cells,
                     "outcome_page": outcome_page if outcome_page in writer.pages else None})
    return {"id": image.id, "title": image.title, "page": f"{base}/image-{slug(image.id)}.md", "picture": shown,
            "size": image.size, "region": image.region, "grid": image.grid, "rows": rows,
            "mean_spearman": image.mean_spearman, "mean_topk_iou": image.mean_topk_iou,
            "undefined": image.undefined, "index": i}


# After every other dimension's pages, so the outcome pages it links to and a similarity page of
# the same section are already written.
register_pages(PageBuilder(name="compare", order=800, section="Compare", build=compare_pages))
