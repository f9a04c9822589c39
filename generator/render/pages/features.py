"""Model pages: what the network's units respond to (section "Model").

Per model: an overview, a Microscope-style gallery per layer whose images link to unit pages
(visualisation, diversity set, negative, dataset examples, deconvnet projection), class
visualisations, DeepDream and the first-layer filters. Reads the typed ``features_*`` records
(:mod:`generator.records.features`; the render ``settings`` stay a dict) of
:mod:`generator.pipeline.stages.features`; numpy only (no torch here).

Every part of a unit page can be switched off in the config (``diversity: 0``,
``negative: false``, ``examples: 0``, ``deconvnet: false``): the page then leaves that section
out, so each part is looked up here and handed to the template as ``None`` when absent.

Images: a page shows a WebP copy of each photographic image, no larger than it is drawn
(``SHOWN_SIDE``); the full size is a JPEG the lightbox opens, written only where it is larger
or a hand-written page may reference it. Small images (28 px Fashion-MNIST) are enlarged with
nearest neighbours and kept PNG, drawn pixelated.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

import numpy as np

from generator.records import (
    ClassesRecord,
    DatasetRecord,
    DeconvRecord,
    DeepDreamRecord,
    DiversityRecord,
    ExamplesRecord,
    GalleryRecord,
    NegativeRecord,
)
from generator.render import images as img
from generator.render.pages import PageBuilder, SiteContext, register_pages
from generator.render.pages.concepts import unit_labels
from generator.render.pages.features_info import FEATURE_METHODS
from generator.render.text import slug

THUMB = 112  # px: smallest side of a shown small visualisation (28 px renders are enlarged)
#: Longest side of the copy a page shows of a photographic image: gallery cards draw about
#: 130 px, DeepDream and diversity cells 150-160 px; a GPU build's 224 px renders open in full
#: in the lightbox. Keeps a gallery of every channel of a 320-channel stage near 2 MB.
SHOWN_SIDE = 160
UNIT_SIDE = 224  # the unit page's main image is drawn at 224 px
#: Below this many images a unit's "top" dataset examples are most of the dataset: they order
#: a handful of images instead of showing what the unit is selective for.
FEW_IMAGES = 100
#: A grey ramp for the maps drawn grey at 0 (filters, deconvnet projections): its own file,
#: not one of the heat-map colour bars.
GREY_BAR = "assets/gen/features-grey-scale.png"

#: Everything a unit page may show besides the gallery image; each is None when switched off
#: or not computed (the template tests each one, and a missing key would be a Jinja error).
UNIT_PARTS = ("diversity", "negative", "examples", "dataset", "dataset_title", "dataset_size", "reduce",
              "description", "deconv")


def _pic(site: SiteContext, stem: str, pixels: np.ndarray, side: int = SHOWN_SIDE, min_side: int = THUMB,
         ref: Optional[str] = None) -> Dict[str, Any]:
    """Write an image and say how a page draws it: ``src`` the file shown, ``full`` the larger
    file the lightbox opens (None when ``src`` is the full size), ``small`` an enlarged small
    image (drawn pixelated). ``ref``: offered to hand-written pages as ``modelcard:<ref>`` (the
    full size)."""
    if min(pixels.shape[:2]) < img.PHOTO_MIN_SIDE:
        path = site.writer.image(stem + ".png", img.upscale(pixels, min_side))
        if ref:
            site.writer.ref(ref, path)
        return {"src": path, "full": None, "small": True}
    shown = img.thumbnail(pixels, side)
    larger = shown.shape != pixels.shape
    src = site.writer.image(f"{stem}-{side}px.webp" if larger else f"{stem}.webp", shown)
    full = site.writer.image(stem + ".jpg", pixels) if larger or ref else None
    if ref:
        site.writer.ref(ref, full)
    return {"src": src, "full": full if larger else None, "small": False}


def _one(site: SiteContext, kind: str, **labels: Any):
    return site.manifest.one(kind, **labels)


def _layer_slug(layer: str) -> str:
    return slug(layer)


def unit_page(base: str, layer: str, channel: int) -> str:
    return f"{base}/{_layer_slug(layer)}/unit-{int(channel)}.md"


def dataset_title(site: SiteContext, dataset_id: str) -> str:
    """The dataset's configured title (its id when it has none)."""
    # A page built without a config (a bare manifest) falls back to the id.
    dc = next((d for d in getattr(site.config, "datasets", None) or [] if d.id == dataset_id), None)
    return (dc.title or dc.id) if dc is not None else dataset_id


def dataset_size(site: SiteContext, dataset_id: str) -> Optional[int]:
    """How many images the dataset has (its ``dataset`` record), None when not recorded."""
    art = _one(site, "dataset", dataset=dataset_id)
    if art is None:
        return None
    rec: DatasetRecord = art.rec
    return int(rec.count)


def coverage(shown: int, layer_channels: int) -> Dict[str, Any]:
    """How much of a layer a gallery shows: ``shown`` of ``total`` channels, ``complete`` when
    every channel is there. The page says how to get the rest (the ``features`` settings
    ``channels: all`` or ``profile: full``, :mod:`generator.settings.features`)."""
    return {"shown": int(shown), "total": int(layer_channels), "complete": int(shown) >= int(layer_channels)}


def few_images(size: Optional[int]) -> bool:
    """Whether dataset examples drawn from ``size`` images are too few to show selectivity."""
    return size is not None and size < FEW_IMAGES


def _gallery(site: SiteContext, model_id: str, base: str, art) -> Dict[str, Any]:
    """Write a layer's gallery images; returns the layer's data for its pages."""
    rec: GalleryRecord = art.rec
    arrays = art.load_npz("images")
    layer = rec.layer
    units = []
    for j, c in enumerate(rec.channels):
        stem = f"assets/gen/{art.key}/c{int(c)}"
        pixels = arrays["images"][j]
        image = _pic(site, stem, pixels, side=UNIT_SIDE, ref=f"features/{model_id}/{layer}/{int(c)}")
        thumb = _pic(site, stem, pixels, side=SHOWN_SIDE)
        units.append({"channel": int(c), "image": image, "thumb": thumb, "value": rec.values[j],
                      "description": rec.descriptions[j], "page": unit_page(base, layer, c)})
    return {"layer": layer, "units": units, "page": f"{base}/{_layer_slug(layer)}/index.md",
            "layer_channels": rec.layer_channels, "coverage": coverage(len(units), rec.layer_channels),
            "settings": rec.settings, "description": rec.description}


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
                "images": [_pic(site, f"assets/gen/{div.key}/c{int(c)}-{r}", arrays["images"][j, r])
                           for r in range(n)],
                "values": [float(v) for v in arrays["values"][j]],
                "values_text": ", ".join(f"{float(v):.2f}" for v in arrays["values"][j]),
                "description": drec.descriptions[j * n]}
    neg = _one(site, "features_negative", model=model_id, layer=layer)
    if neg is not None:
        nrec: NegativeRecord = neg.rec
        arrays = neg.load_npz("images")
        for j, c in enumerate(nrec.channels):
            out.setdefault(int(c), {})["negative"] = {
                "image": _pic(site, f"assets/gen/{neg.key}/c{int(c)}", arrays["images"][j]),
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
    title, size = dataset_title(site, rec.dataset), dataset_size(site, rec.dataset)
    top_crops: Dict[int, Dict[str, Any]] = {}
    for j, c in enumerate(rec.channels):
        rows = []
        for r in range(rec.k):
            crop = _pic(site, f"assets/gen/{ex.key}/c{int(c)}-{r}", arrays["crops"][j, r], side=96, min_side=96)
            rows.append({"rank": r + 1, "item": rec.items[j][r], "title": rec.titles[j][r],
                         "value": rec.values[j][r], "crop": crop})
        top_crops[int(c)] = rows[0]["crop"] if rows else None
        out[int(c)] = {"examples": rows, "dataset": rec.dataset, "dataset_title": title, "dataset_size": size,
                       "reduce": rec.reduce, "description": rec.description.replace("channel c", f"channel {int(c)}")}
    dec = _one(site, "features_deconv", model=model_id, layer=layer)
    if dec is not None:
        drec: DeconvRecord = dec.rec
        arrays = dec.load_npz("projections")
        for j, c in enumerate(drec.channels):
            out.setdefault(int(c), {})["deconv"] = {
                "crop": _pic(site, f"assets/gen/{dec.key}/c{int(c)}-crop", arrays["crops"][j], side=96, min_side=96),
                "full": _pic(site, f"assets/gen/{dec.key}/c{int(c)}", arrays["images"][j]),
                # the top example's own crop: the input the projection explains, beside it
                "input": top_crops.get(int(c)),
                "item": drec.items[j], "position": drec.positions[j], "peak": float(drec.peaks[j]),
                "description": drec.description}
    return out


def examples_summary(site: SiteContext, model_id: str, layer: str) -> Optional[Dict[str, Any]]:
    """The gallery's line about its unit pages' dataset examples: dataset, its size, k."""
    ex = _one(site, "features_examples", model=model_id, layer=layer)
    if ex is None:
        return None
    rec: ExamplesRecord = ex.rec
    size = dataset_size(site, rec.dataset)
    return {"dataset": rec.dataset, "title": dataset_title(site, rec.dataset), "size": size, "k": rec.k,
            "few": few_images(size)}


def _classes(site: SiteContext, model_id: str, base: str) -> Optional[Dict[str, Any]]:
    art = _one(site, "features_classes", model=model_id)
    if art is None:
        return None
    rec: ClassesRecord = art.rec
    arrays = art.load_npz("images")
    items = []
    for j, (c, name) in enumerate(zip(rec.classes, rec.names)):
        pic = _pic(site, f"assets/gen/{art.key}/class-{int(c)}", arrays["images"][j],
                   ref=f"classvis/{model_id}/{int(c)}")
        items.append({"index": int(c), "name": name, "image": pic, "value": rec.values[j],
                      "description": rec.descriptions[j]})
    return {"items": items, "source": rec.source, "dataset": rec.dataset,
            "dataset_title": dataset_title(site, rec.dataset), "settings": rec.settings,
            "page": f"{base}/classes.md"}


def _plain_dream(layer: str) -> str:
    """DeepDream's objective on a layer read as it is (a CNN's map); the page shows only the
    objectives that say more (a token layer read over its patch tokens, a model that refused the
    size or octaves asked: :mod:`generator.pipeline.stages.features_compute` appends those notes)."""
    return f"layer({layer}): mean squared activation of {layer}"


def _deepdream(site: SiteContext, model_id: str, base: str) -> Optional[Dict[str, Any]]:
    """One row per photo: the photo, then the photo dreamed at each layer, shallow to deep."""
    art = _one(site, "features_deepdream", model=model_id)
    if art is None:
        return None
    rec: DeepDreamRecord = art.rec
    arrays = art.load_npz("dreams")
    layers = [{"layer": layer, "description": rec.descriptions[li],
               "note": None if rec.descriptions[li] == _plain_dream(layer) else rec.descriptions[li]}
              for li, layer in enumerate(rec.layers)]
    photos = []
    for i, (item, title) in enumerate(zip(rec.items, rec.titles)):
        original = _pic(site, f"assets/gen/{art.key}/{slug(item)}-original", arrays["originals"][i])
        dreams = [_pic(site, f"assets/gen/{art.key}/{slug(item)}-{_layer_slug(layer)}", arrays["dreams"][li, i],
                       ref=f"deepdream/{model_id}/{item}/{layer}")
                  for li, layer in enumerate(rec.layers)]
        photos.append({"item": item, "title": title, "original": original, "dreams": dreams})
    return {"photos": photos, "layers": layers, "dataset": rec.dataset,
            "dataset_title": dataset_title(site, rec.dataset), "size": rec.size, "steps": rec.steps,
            "octaves": rec.octaves, "page": f"{base}/deepdream.md",
            "notes": [layer for layer in layers if layer["note"] is not None]}


def _filters(site: SiteContext, model_id: str, base: str) -> Optional[Dict[str, Any]]:
    art = _one(site, "features_filters", model=model_id)
    if art is None:
        return None
    grid = art.load_npz("grid")["grid"]
    path = site.writer.image(f"assets/gen/{art.key}/filters.png", grid)
    return {"image": path, "record": art.rec, "page": f"{base}/filters.md"}


def grey_bar(site: SiteContext) -> str:
    """The grey ramp of the maps drawn grey at 0 (dark: negative, light: positive)."""
    ramp = np.linspace(0, 255, 320).round().astype(np.uint8)
    return site.writer.image(GREY_BAR, np.repeat(np.repeat(ramp[None, :, None], 14, axis=0), 3, axis=2))


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
        grey = grey_bar(site)
        layers = [_gallery(site, model_id, base, art) for art in galleries]
        for layer in layers:
            # Dissection labels (the concepts dimension), where a report computed them.
            labels = unit_labels(manifest, model_id, layer["layer"])
            for unit in layer["units"]:
                unit["label"] = labels.get(unit["channel"])
            sets = _unit_sets(site, model_id, layer["layer"])
            examples = _examples(site, model_id, layer["layer"])
            layer["examples"] = examples_summary(site, model_id, layer["layer"])
            units = layer["units"]
            for j, unit in enumerate(units):
                extra = {**dict.fromkeys(UNIT_PARTS), **sets.get(unit["channel"], {}),
                         **examples.get(unit["channel"], {})}
                extra["few"] = few_images(extra["dataset_size"])
                writer.page(unit["page"], "features_unit.md.j2", model=model, layer=layer, unit=unit,
                            extra=extra, methods=FEATURE_METHODS, grey=grey,
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
                        methods=FEATURE_METHODS, grey=grey)
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
