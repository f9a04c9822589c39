"""Model pages: what the network's units respond to (section "Model").

Per model: an overview, a Microscope-style gallery per layer whose images link to unit pages
(visualisation, diversity set, negative, dataset examples, deconvnet projection), class
visualisations, DeepDream and the first-layer filters. Reads the typed ``features_*`` records
(:mod:`generator.records.features`; the render ``settings`` stay a dict) of
:mod:`generator.pipeline.stages.features`; numpy only (no torch here).

Every part of a unit page can be switched off in the config (``diversity: 0``,
``negative: false``, ``examples: 0``, ``deconvnet: false``): the page then leaves that section
out, so each part is looked up here and handed to the template as ``None`` when absent.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

import numpy as np

from generator.records import (
    ClassesRecord,
    DeconvRecord,
    DeepDreamRecord,
    DiversityRecord,
    ExamplesRecord,
    GalleryRecord,
    NegativeRecord,
)
from generator.render import images as img
from generator.render.pages import PageBuilder, SiteContext, register_pages
from generator.render.pages.features_info import FEATURE_METHODS
from generator.render.text import slug

THUMB = 112  # px: smallest side of a shown visualisation (28 px renders are enlarged)

#: Everything a unit page may show besides the gallery image; each is None when switched off
#: or not computed (the template tests each one, and a missing key would be a Jinja error).
UNIT_PARTS = ("diversity", "negative", "examples", "dataset", "reduce", "description", "deconv")


def _picture(site: SiteContext, stem: str, pixels: np.ndarray, min_side: int = THUMB) -> str:
    """Write ``stem`` + .jpg (photographic, >= 64 px) or .png (small, upscaled); returns the path."""
    return site.writer.image(stem + img.picture_suffix(pixels), img.upscale(pixels, min_side))


def _one(site: SiteContext, kind: str, **labels: Any):
    return site.manifest.one(kind, **labels)


def _layer_slug(layer: str) -> str:
    return slug(layer)


def unit_page(base: str, layer: str, channel: int) -> str:
    return f"{base}/{_layer_slug(layer)}/unit-{int(channel)}.md"


def _gallery(site: SiteContext, model_id: str, base: str, art) -> Dict[str, Any]:
    """Write a layer's gallery images; returns the layer's data for its pages."""
    rec: GalleryRecord = art.rec
    arrays = art.load_npz("images")
    layer = rec.layer
    units = []
    for j, c in enumerate(rec.channels):
        path = _picture(site, f"assets/gen/{art.key}/c{int(c)}", arrays["images"][j])
        site.writer.ref(f"features/{model_id}/{layer}/{int(c)}", path)
        units.append({"channel": int(c), "image": path, "value": rec.values[j],
                      "description": rec.descriptions[j], "page": unit_page(base, layer, c)})
    return {"layer": layer, "units": units, "page": f"{base}/{_layer_slug(layer)}/index.md",
            "layer_channels": rec.layer_channels, "settings": rec.settings, "description": rec.description}


def _unit_sets(site: SiteContext, model_id: str, layer: str) -> Dict[int, Dict[str, Any]]:
    """Diversity sets and negatives per channel (whatever of them exists)."""
    out: Dict[int, Dict[str, Any]] = {}
    div = _one(site, "features_diversity", model=model_id, layer=layer)
    if div is not None:
        drec: DiversityRecord = div.rec
        arrays = div.load_npz("images")
        n = drec.per_unit
        for j, c in enumerate(drec.channels):
            out.setdefault(int(c), {})["diversity"] = {
                "images": [_picture(site, f"assets/gen/{div.key}/c{int(c)}-{r}", arrays["images"][j, r])
                           for r in range(n)],
                "values": [float(v) for v in arrays["values"][j]],
                "description": drec.descriptions[j * n]}
    neg = _one(site, "features_negative", model=model_id, layer=layer)
    if neg is not None:
        nrec: NegativeRecord = neg.rec
        arrays = neg.load_npz("images")
        for j, c in enumerate(nrec.channels):
            out.setdefault(int(c), {})["negative"] = {
                "image": _picture(site, f"assets/gen/{neg.key}/c{int(c)}", arrays["images"][j]),
                "value": nrec.values[j], "description": nrec.descriptions[j]}
    return out


def _examples(site: SiteContext, model_id: str, layer: str) -> Dict[int, Dict[str, Any]]:
    """Dataset examples (crops with signed activation values) and deconvnet projections."""
    out: Dict[int, Dict[str, Any]] = {}
    ex = _one(site, "features_examples", model=model_id, layer=layer)
    if ex is None:
        return out
    rec: ExamplesRecord = ex.rec
    arrays = ex.load_npz("examples")
    for j, c in enumerate(rec.channels):
        rows = []
        for r in range(rec.k):
            crop = _picture(site, f"assets/gen/{ex.key}/c{int(c)}-{r}", arrays["crops"][j, r], 96)
            rows.append({"rank": r + 1, "item": rec.items[j][r], "title": rec.titles[j][r],
                         "value": rec.values[j][r], "crop": crop})
        out[int(c)] = {"examples": rows, "dataset": rec.dataset, "reduce": rec.reduce,
                       "description": rec.description.replace("channel c", f"channel {int(c)}")}
    dec = _one(site, "features_deconv", model=model_id, layer=layer)
    if dec is not None:
        drec: DeconvRecord = dec.rec
        arrays = dec.load_npz("projections")
        for j, c in enumerate(drec.channels):
            out.setdefault(int(c), {})["deconv"] = {
                "crop": _picture(site, f"assets/gen/{dec.key}/c{int(c)}-crop", arrays["crops"][j], 96),
                "full": _picture(site, f"assets/gen/{dec.key}/c{int(c)}", arrays["images"][j]),
                "item": drec.items[j], "position": drec.positions[j],
                "description": drec.description}
    return out


def _classes(site: SiteContext, model_id: str, base: str) -> Optional[Dict[str, Any]]:
    art = _one(site, "features_classes", model=model_id)
    if art is None:
        return None
    rec: ClassesRecord = art.rec
    arrays = art.load_npz("images")
    items = []
    for j, (c, name) in enumerate(zip(rec.classes, rec.names)):
        path = _picture(site, f"assets/gen/{art.key}/class-{int(c)}", arrays["images"][j])
        site.writer.ref(f"classvis/{model_id}/{int(c)}", path)
        items.append({"index": int(c), "name": name, "image": path, "value": rec.values[j],
                      "description": rec.descriptions[j]})
    return {"items": items, "source": rec.source, "dataset": rec.dataset, "settings": rec.settings,
            "page": f"{base}/classes.md"}


def _plain_dream(layer: str) -> str:
    """DeepDream's objective on a layer read as it is (a CNN's map); the page shows only the
    objectives that say more (a token layer read over its patch tokens, a model that refused the
    size or octaves asked: :mod:`generator.pipeline.stages.features_compute` appends those notes)."""
    return f"layer({layer}): mean squared activation of {layer}"


def _deepdream(site: SiteContext, model_id: str, base: str) -> Optional[Dict[str, Any]]:
    art = _one(site, "features_deepdream", model=model_id)
    if art is None:
        return None
    rec: DeepDreamRecord = art.rec
    arrays = art.load_npz("dreams")
    originals = [_picture(site, f"assets/gen/{art.key}/{slug(item)}-original", arrays["originals"][i])
                 for i, item in enumerate(rec.items)]
    rows = []
    for li, layer in enumerate(rec.layers):
        cells = []
        for i, item in enumerate(rec.items):
            path = _picture(site, f"assets/gen/{art.key}/{slug(item)}-{_layer_slug(layer)}", arrays["dreams"][li, i])
            site.writer.ref(f"deepdream/{model_id}/{item}/{layer}", path)
            cells.append(path)
        description = rec.descriptions[li]
        rows.append({"layer": layer, "cells": cells, "description": description,
                     "note": None if description == _plain_dream(layer) else description})
    photos = [{"item": item, "title": title, "original": originals[i]}
              for i, (item, title) in enumerate(zip(rec.items, rec.titles))]
    # a few photos per table keeps the rows readable on a laptop screen
    groups = [list(range(s, min(len(photos), s + 4))) for s in range(0, len(photos), 4)]
    return {"photos": photos, "rows": rows, "groups": groups, "dataset": rec.dataset, "size": rec.size,
            "steps": rec.steps, "octaves": rec.octaves, "page": f"{base}/deepdream.md",
            "notes": [row for row in rows if row["note"] is not None]}


def _filters(site: SiteContext, model_id: str, base: str) -> Optional[Dict[str, Any]]:
    art = _one(site, "features_filters", model=model_id)
    if art is None:
        return None
    grid = art.load_npz("grid")["grid"]
    path = site.writer.image(f"assets/gen/{art.key}/filters.png", grid)
    return {"image": path, "record": art.rec, "page": f"{base}/filters.md"}


def feature_pages(site: SiteContext) -> List[Any]:
    manifest, writer = site.manifest, site.writer
    nav: List[Any] = []
    for model_id in manifest.models:
        galleries = manifest.find("features_gallery", model=model_id)
        extras = [manifest.find(k, model=model_id)
                  for k in ("features_classes", "features_deepdream", "features_filters")]
        if not galleries and not any(extras):
            continue
        model = site.models.get(model_id, {"id": model_id, "title": model_id, "page": None})
        base = f"features/{slug(model_id)}"
        layers = [_gallery(site, model_id, base, art) for art in galleries]
        for layer in layers:
            sets = _unit_sets(site, model_id, layer["layer"])
            examples = _examples(site, model_id, layer["layer"])
            units = layer["units"]
            for j, unit in enumerate(units):
                extra = {**dict.fromkeys(UNIT_PARTS), **sets.get(unit["channel"], {}),
                         **examples.get(unit["channel"], {})}
                writer.page(unit["page"], "features_unit.md.j2", model=model, layer=layer, unit=unit,
                            extra=extra, methods=FEATURE_METHODS,
                            previous=units[j - 1] if j > 0 else None,
                            next=units[j + 1] if j + 1 < len(units) else None)
            writer.page(layer["page"], "features_gallery.md.j2", model=model, layer=layer, methods=FEATURE_METHODS,
                        has_examples=bool(examples))
        classes = _classes(site, model_id, base)
        dream = _deepdream(site, model_id, base)
        filters = _filters(site, model_id, base)
        if classes:
            writer.page(classes["page"], "features_classes.md.j2", model=model, classes=classes,
                        methods=FEATURE_METHODS)
        if dream:
            writer.page(dream["page"], "features_deepdream.md.j2", model=model, dream=dream, methods=FEATURE_METHODS)
        if filters:
            writer.page(filters["page"], "features_filters.md.j2", model=model, filters=filters,
                        methods=FEATURE_METHODS)
        overview = f"{base}/index.md"
        writer.page(overview, "features_overview.md.j2", model=model, layers=layers, classes=classes, dream=dream,
                    filters=filters, methods=FEATURE_METHODS)
        entries: List[Any] = [{"Overview": overview}]
        if layers:
            entries.append({"Layer galleries": [{layer["layer"]: layer["page"]} for layer in layers]})
        if classes:
            entries.append({"Class visualisations": classes["page"]})
        if dream:
            entries.append({"DeepDream": dream["page"]})
        if filters:
            entries.append({"First-layer filters": filters["page"]})
        nav.append({f"Features: {model['title']}": entries})
    return nav


register_pages(PageBuilder(name="features", order=25, section="Model", build=feature_pages))
