"""Outcome pages: predictions, per-image grids of all methods, per-method galleries, the
interior-gradients alpha sweep and the CAM threshold segmentation.

Reads the typed ``predictions``, ``attribution`` and ``cam_segmentation`` records
(:mod:`generator.records`); a method's ``params`` and ``extras`` stay dicts (their keys are
the method's own).
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

import numpy as np

from generator import catalogue
from generator.records import AttributionRecord, CamSegmentationRecord, PredictionsRecord
from generator.render import images as img
from generator.render.methods_info import info as method_info
from generator.render.pages import PageBuilder, SiteContext, register_pages
from generator.render.text import slug

BOX_COLOUR = np.array([0, 255, 80], np.uint8)
MASK_COLOUR = np.array([255, 200, 0], np.float32)
#: The threshold Grad-CAM's weakly supervised localisation used (15 % of the CAM's maximum;
#: Selvaraju et al. 2017): the segmentation page marks it.
PAPER_THRESHOLD = 0.15


def colour_bars(site: SiteContext) -> Dict[bool, str]:
    """The two colour scales every heat-map page shows (unsigned, signed)."""
    return {s: site.writer.image(f"assets/gen/colourbar-{'signed' if s else 'unsigned'}.png", img.colour_bar(s))
            for s in (False, True)}


#: Longest side of the pictures a figure page shows; larger images open in full in the lightbox.
PAGE_SIDE = 320
#: Longest side of the thumbnails of the overview's image x method table.
MATRIX_SIDE = 160


def picture(site: SiteContext, stem: str, pixels: np.ndarray, source: np.ndarray,
            side: int = PAGE_SIDE) -> Dict[str, Any]:
    """Write an overlay (or any picture made from ``source``, the image before enlargement) and
    say how a page shows it: ``src`` the file shown (a thumbnail of at most ``side`` px when
    the picture is larger), ``full`` the full size the lightbox opens (None when ``src`` is the
    full size), ``small`` whether it is an enlarged small image (drawn pixelated, kept PNG).
    Photographic pictures are WebP (:func:`images.overlay_suffix`)."""
    suffix = img.overlay_suffix(source)
    full = site.writer.image(stem + suffix, pixels)
    small = suffix == ".png"
    if small or max(pixels.shape[:2]) <= side:
        return {"src": full, "full": None, "small": small}
    thumb = site.writer.image(f"{stem}-{side}px{suffix}", img.thumbnail(pixels, side))
    return {"src": thumb, "full": full, "small": False}


def shown_params(params: Dict[str, Any], extras: Dict[str, Any]) -> List[Dict[str, Any]]:
    """A method's parameters as its page lists them: a parameter left at None (the method's
    default, e.g. Grad-CAM's ``layer``) shows the value the method used when it reports one
    among its extras, else "default"."""
    out = []
    for key, value in params.items():
        if value is None:
            used = extras.get(key)
            value = "default" if used is None else used
            out.append({"key": key, "value": value, "default": True})
        else:
            out.append({"key": key, "value": value, "default": False})
    return out


def extras_table(extras: Dict[str, Any], n: int) -> List[Dict[str, Any]]:
    """Columns of per-image numbers (or notes) among a method's extras (lists of one value per image)."""
    return [{"key": k, "label": label, "help": help_, "cells": extras[k],
             "text": any(isinstance(v, str) for v in extras[k])}
            for k, (label, help_) in catalogue.extra_columns().items()
            if isinstance(extras.get(k), list) and len(extras[k]) == n]


def reliability_warnings(extras: Dict[str, Any], n: int) -> List[str]:
    """Per image, why its map is not a reliable explanation ("" when it is). A method that checks
    its own axiom (LRP conservation) reports ``reliable`` and ``reliability_note`` per image; the
    pages then mark the map instead of presenting it as an explanation."""
    flags, notes = extras.get("reliable"), extras.get("reliability_note")
    if not (isinstance(flags, list) and len(flags) == n):
        return [""] * n
    notes = notes if isinstance(notes, list) and len(notes) == n else [""] * n
    return ["" if ok else (note or "the method's own check failed") for ok, note in zip(flags, notes)]


def unpack_masks(arrays) -> np.ndarray:
    """(T,B,H,W) bool masks of a stored CAM segmentation (stored bit-packed along W)."""
    shape = tuple(int(v) for v in arrays["mask_shape"])
    return np.unpackbits(arrays["masks"], axis=-1, count=shape[-1]).astype(bool).reshape(shape)


def draw_segmentation(pixels: np.ndarray, mask: np.ndarray, box, factor: int = 1) -> np.ndarray:
    """The image with the mask tinted and the box outlined (numpy only). ``box``: x0, y0, x1, y1
    inclusive pixels of the mask's resolution, or -1s when empty; ``factor`` upscales."""
    rgb = img.as_rgb(pixels).astype(np.float32)
    if factor > 1:
        rgb = np.repeat(np.repeat(rgb, factor, 0), factor, 1)
        mask = np.repeat(np.repeat(mask, factor, 0), factor, 1)
    gray = rgb.mean(2, keepdims=True) * 0.55 + 20  # outside the mask: darkened gray
    out = np.where(mask[:, :, None], rgb * 0.65 + MASK_COLOUR * 0.35, gray)
    out = out.clip(0, 255).astype(np.uint8)
    x0, y0, x1, y1 = (int(v) for v in box)
    if x0 >= 0:
        x0, y0, x1, y1 = x0 * factor, y0 * factor, (x1 + 1) * factor - 1, (y1 + 1) * factor - 1
        t = max(1, out.shape[0] // 112)
        out[y0:y0 + t, x0:x1 + 1] = BOX_COLOUR
        out[max(y1 - t + 1, 0):y1 + 1, x0:x1 + 1] = BOX_COLOUR
        out[y0:y1 + 1, x0:x0 + t] = BOX_COLOUR
        out[y0:y1 + 1, max(x1 - t + 1, 0):x1 + 1] = BOX_COLOUR
    return out


def _interior_sweep(site: SiteContext, art, pixels: np.ndarray, base: str, images) -> Optional[Dict[str, Any]]:
    arrays = art.load_npz("maps")
    if "extra_sweep" not in arrays:
        return None
    sweep = arrays["extra_sweep"].astype(np.float32)  # (A,B,H,W)
    rec: AttributionRecord = art.rec
    alphas = rec.extras.get("alphas") or list(range(sweep.shape[0]))
    rows = []
    for i, item_id in enumerate(rec.images):
        cells = [{"alpha": alphas[a] if a < len(alphas) else a, "range": img.map_range(sweep[a, i], True),
                  "picture": picture(site, f"assets/gen/{art.key}/sweep-{slug(item_id)}-{a}",
                                     img.overlay(img.upscale(pixels[i]), sweep[a, i], True), pixels[i])}
                 for a in range(sweep.shape[0])]
        rows.append({"image": images[i], "cells": cells})
    totals = sweep.reshape(sweep.shape[0], sweep.shape[1], -1).sum(-1)  # (A,B)
    plot = site.writer.figure(f"assets/gen/{art.key}/sweep-totals.png", lambda p: img.series_plot(
        p, list(alphas), {images[i]["title"][:24]: totals[:, i].tolist() for i in range(totals.shape[1])},
        "alpha", "Σ (x − x') · ∇f(x' + α(x − x'))", "Interior gradients: total attribution per alpha"))
    return {"alphas": alphas, "rows": rows, "plot": plot, "page": f"{base}/interior-sweep.md"}


def _segmentation(site: SiteContext, model_id: str, ds_id: str, pixels: np.ndarray, base: str, images):
    art = site.manifest.one("cam_segmentation", model=model_id, dataset=ds_id)
    if art is None:
        return None
    rec: CamSegmentationRecord = art.rec
    arrays = art.load_npz("segmentation")
    masks = unpack_masks(arrays)
    boxes = arrays["boxes"]
    T, B, H, W = masks.shape
    factor = max(1, int(np.ceil(112 / min(H, W))))
    rows = []
    for i in range(B):
        cells = [{"threshold": rec.thresholds[t], "area": rec.area[t][i],
                  "box": [int(v) for v in boxes[t, i]], "paper": abs(rec.thresholds[t] - PAPER_THRESHOLD) < 1e-6,
                  "picture": picture(site, f"assets/gen/{art.key}/seg-{slug(rec.images[i])}-{t}",
                                     draw_segmentation(pixels[i], masks[t, i], boxes[t, i], factor), pixels[i])}
                 for t in range(T)]
        cams = arrays["cams"][i]
        cam = picture(site, f"assets/gen/{art.key}/cam-{slug(rec.images[i])}",
                      img.overlay(img.upscale(pixels[i]), cams, False), pixels[i])
        rows.append({"image": images[i], "target": rec.targets[i], "cam": cam, "cells": cells,
                     "range": img.map_range(cams, False)})
    area = np.asarray(rec.area)  # (T,B)
    plot = site.writer.figure(f"assets/gen/{art.key}/area.png", lambda p: img.series_plot(
        p, [100 * t for t in rec.thresholds],
        {images[i]["title"][:24]: (100 * area[:, i]).tolist() for i in range(B)},
        "threshold (% of the CAM's maximum)", "mask area (% of the image)", "CAM segmentation: mask area",
        ylim=(0, 100)))
    return {"rows": rows, "plot": plot, "thresholds": rec.thresholds, "layer": rec.layer,
            "paper_shown": any(abs(t - PAPER_THRESHOLD) < 1e-6 for t in rec.thresholds),
            "largest_component": rec.largest_component, "page": f"{base}/cam-segmentation.md"}


def outcome_pages(site: SiteContext) -> List[Any]:
    manifest, writer, models = site.manifest, site.writer, site.models
    nav: List[Any] = []
    for model_id, ds_id in manifest.pairs:
        pred = manifest.one("predictions", model=model_id, dataset=ds_id)
        if pred is None or model_id not in models:
            continue
        base = f"outcome/{slug(model_id)}/{slug(ds_id)}"
        summary: PredictionsRecord = pred.rec  # the same object as the artifact's summary.json
        pixels = pred.load_npz("inputs")["pixels"]
        rows = summary.shown
        pics = [picture(site, f"assets/gen/{pred.key}/{slug(r.id)}", img.upscale(pixels[i]), pixels[i])
                for i, r in enumerate(rows)]
        originals = [p["full"] or p["src"] for p in pics]
        site.shared.setdefault("originals", {})[(model_id, ds_id)] = originals
        for r, path in zip(rows, originals):  # any suffix: site_src pages may show it
            writer.ref(f"input/{model_id}/{ds_id}/{r.id}", path)
        images = [{"id": r.id, "title": r.title or r.id, "row": r, "original": originals[i], "picture": pics[i],
                   "thumb": picture(site, f"assets/gen/{pred.key}/{slug(r.id)}", img.upscale(pixels[i]), pixels[i],
                                    MATRIX_SIDE),
                   "page": f"{base}/image-{slug(r.id)}.md"} for i, r in enumerate(rows)]
        methods = []
        sweep = None
        for art in manifest.find("attribution", model=model_id, dataset=ds_id):
            rec: AttributionRecord = art.rec
            maps = art.load_npz("maps")["maps"]
            pictures, thumbs = [], []
            for i, item_id in enumerate(rec.images):
                drawn = img.overlay(img.upscale(pixels[i]), maps[i], rec.signed)
                stem = f"assets/gen/{art.key}/{slug(item_id)}"
                pictures.append(picture(site, stem, drawn, pixels[i]))
                thumbs.append(picture(site, stem, drawn, pixels[i], MATRIX_SIDE))
                writer.ref(f"outcome/{model_id}/{ds_id}/{rec.method}/{item_id}",
                           pictures[-1]["full"] or pictures[-1]["src"])
            info = method_info(rec.method)
            extras = rec.extras
            methods.append({"name": rec.method, "title": info["title"], "formula": info["formula"],
                            "read": info["read"], "doc": rec.doc, "signed": rec.signed,
                            "params": rec.params, "shown_params": shown_params(rec.params, extras),
                            "layer": extras.get("layer") if isinstance(extras.get("layer"), str) else None,
                            "extras": extras, "pictures": pictures, "thumbs": thumbs,
                            "ranges": [img.map_range(maps[i], rec.signed) for i in range(len(rec.images))],
                            "table": extras_table(extras, len(rec.images)),
                            "warnings": reliability_warnings(extras, len(rec.images)),
                            "targets": rec.target_names, "probabilities": rec.target_probabilities,
                            "page": f"{base}/method-{slug(rec.method)}.md", "sweep_page": None})
            if rec.method == "interior_gradients":
                sweep = _interior_sweep(site, art, pixels, base, images)
                if sweep:
                    methods[-1]["sweep_page"] = sweep["page"]
        by_name = {m["name"]: m for m in methods}
        small = img.overlay_suffix(pixels[0]) == ".png" if len(pixels) else False
        # what argues for the class next to what argues against it
        contrast = [by_name[n] for n in ("gradcam", "counterfactual_gradcam") if n in by_name]
        segmentation = _segmentation(site, model_id, ds_id, pixels, base, images)
        common = dict(model=models[model_id], dataset=ds_id, images=images, methods=methods, small=small,
                      bars=colour_bars(site), summary=summary, contrast=contrast, segmentation=segmentation,
                      sweep=sweep)
        writer.page(f"{base}/predictions.md", "predictions.md.j2", **common)
        writer.page(f"{base}/index.md", "outcome_overview.md.j2", **common)
        for i, image in enumerate(images):
            writer.page(image["page"], "outcome_image.md.j2", image=image, index=i, **common)
        for method in methods:
            writer.page(method["page"], "outcome_method.md.j2", method=method, **common)
        entries: List[Any] = [{"Overview": f"{base}/index.md"}, {"Predictions": f"{base}/predictions.md"}]
        if methods:
            entries.append({"Methods": [{m["title"]: m["page"]} for m in methods]})
        if sweep:
            writer.page(sweep["page"], "outcome_interior_sweep.md.j2", **common)
            entries.append({"Interior gradients: alpha sweep": sweep["page"]})
        if segmentation:
            writer.page(segmentation["page"], "segmentation_cam.md.j2", **common)
            entries.append({"CAM threshold segmentation": segmentation["page"]})
        entries.append({"Images": [{im["title"]: im["page"]} for im in images]})
        nav.append({f"{models[model_id]['title']} on {ds_id}": entries})
    return nav


register_pages(PageBuilder(name="outcome", order=30, section="Outcome", build=outcome_pages))
