"""Model pages (specification, training, evaluation, card) and the model-card front page.

Reads the typed ``model``, ``training``, ``predictions`` and ``dataset`` records
(:mod:`generator.records`); the card metadata and the training settings stay dicts (free-form
fields of the config).
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

import numpy as np

from generator.models.cards import embedded_card
from generator.records import (
    AttributionRecord,
    DatasetRecord,
    ExamplesRecord,
    GalleryRecord,
    ModelRecord,
    PredictionsRecord,
    TrainingRecord,
)
from generator.render import images as img
from generator.render.pages import PageBuilder, SiteContext, register_pages
from generator.render.pages.capability import capability_page
from generator.render.pages.outcome import colour_bars
from generator.render.site import CARD_SECTIONS, card_summary, merged_card
from generator.render.text import slug

#: px: the short side of each picture of the front page's figure
FRONT_SIDE = 224


def _size(pair: Any, unit: str = "") -> str:
    a, b = (int(v) for v in pair)
    return f"{a}{unit}" if a == b else f"{a} × {b}{unit}"


def token_grid_text(tokens: Optional[Dict[str, Any]]) -> Optional[str]:
    """The inferred token layout of a spec (``TokenLayout.to_json()``) in words, or None for a
    model without one, e.g. "Token grid: 14 × 14 patches of 16 px; special tokens: class,
    4 register; layout (B, N, C); inferred from one traced 224 px input"."""
    if not tokens:
        return None
    grid = [int(v) for v in tokens.get("grid", (0, 0))]
    names = [str(n) for n in tokens.get("prefix_names", ())] or ["special"] * int(tokens.get("prefix", 0))
    groups: List[List[Any]] = []  # consecutive runs: "class, 4 register"
    for name in names:
        if groups and groups[-1][0] == name:
            groups[-1][1] += 1
        else:
            groups.append([name, 1])
    special = ", ".join(name if count == 1 else f"{count} {name}" for name, count in groups) or "none"
    layout = {"tokens": "(B, N, C)", "channels_last": "(B, H, W, C), channels last"}.get(
        str(tokens.get("kind")), str(tokens.get("kind")))
    traced = tokens.get("traced_hw")
    text = (f"{grid[0]} × {grid[1]} patches of {_size(tokens.get('patch', (0, 0)), ' px')}; "
            f"special tokens: {special}; layout {layout}")
    if traced and all(int(v) for v in traced):
        text += f"; inferred from one traced {_size(traced, ' px')} input"
    return text


def model_pages(site: SiteContext) -> List[Any]:
    config, manifest, writer = site.config, site.manifest, site.writer
    for model_id in manifest.models:
        art = manifest.one("model", model=model_id)
        if art is None:
            continue
        info: ModelRecord = art.rec
        training = None
        t_art = manifest.one("training", model=model_id)
        if t_art is not None:
            trained: TrainingRecord = t_art.rec
            history = trained.history
            curve = writer.figure(f"assets/gen/{t_art.key}/curve.png", lambda p: img.line_plot(
                p, [h.epoch for h in history],
                {"train loss": [h.train_loss for h in history],
                 "test accuracy": [h.test_accuracy for h in history]},
                "epoch", "value", "Training curve"))
            training = {"record": trained, "curve": curve}
        evaluations = []
        for pred in manifest.find("predictions", model=model_id):
            s: PredictionsRecord = pred.rec  # the same object as the artifact's summary.json
            entry: Dict[str, Any] = {
                "dataset": s.dataset, "count": s.count, "accuracy": s.accuracy,
                "top_k_accuracy": s.top_k_accuracy, "top_k": s.top_k, "confusion": None,
                "page": f"outcome/{slug(model_id)}/{slug(s.dataset)}/predictions.md"}
            if s.confusion:
                entry["confusion"] = writer.figure(
                    f"assets/gen/{pred.key}/confusion.png",
                    lambda p, s=s: img.confusion_plot(p, np.array(s.confusion), info.class_names))
                entry["per_class"] = list(zip(info.class_names, s.per_class_accuracy or []))
            evaluations.append(entry)
        mc = next((m for m in config.models if m.id == model_id), None)
        page = f"models/{slug(model_id)}.md"
        card = merged_card(config, info.card, embedded_card(info.spec.source))
        shown, missing = card_summary(card)
        site.models[model_id] = {
            "id": model_id, "title": info.title or model_id, "page": page, "info": info,
            "card": card, "card_shown": dict(shown), "card_missing": missing,
            "training": training, "evaluations": evaluations,
            "source": mc.source if mc else info.spec.source,
            "token_grid": token_grid_text(info.spec.tokens), "capabilities": capability_page(model_id)}
        writer.page(page, "model.md.j2", model=site.models[model_id], sections=CARD_SECTIONS)
    return [{m["title"]: m["page"]} for m in site.models.values()]


def _strongest_unit(site: SiteContext, model_id: str, dataset: str, item: str) -> Optional[Dict[str, Any]]:
    """The unit of the deepest visualised layer that ``item`` excites most, among the units whose
    dataset examples were recorded (``features_examples``): its channel, layer, activation (the
    example's value) and gallery visualisation. None when the report has no such unit."""
    manifest = site.manifest
    layers = list(site.models[model_id]["info"].spec.layers)
    found = []
    for ex in manifest.find("features_examples", model=model_id, dataset=dataset):
        rec: ExamplesRecord = ex.rec
        gallery = manifest.one("features_gallery", model=model_id, layer=rec.layer)
        if gallery is None:
            continue
        grec: GalleryRecord = gallery.rec
        for j, channel in enumerate(rec.channels):
            if item in rec.items[j] and int(channel) in grec.channels:
                value = float(rec.values[j][rec.items[j].index(item)])
                depth = layers.index(rec.layer) if rec.layer in layers else -1
                found.append((depth, value, rec.layer, int(channel), gallery, rec))
    if not found:
        return None
    depth, value, layer, channel, gallery, rec = max(found, key=lambda f: (f[0], f[1]))
    grec = gallery.rec
    pixels = gallery.load_npz("images")["images"][grec.channels.index(channel)]
    path = site.writer.image(f"assets/gen/{gallery.key}/front-c{channel}{img.picture_suffix(pixels)}",
                             img.upscale(pixels, FRONT_SIDE))
    base = f"features/{slug(model_id)}"
    return {"layer": layer, "channel": channel, "value": value, "reduce": rec.reduce, "image": path,
            "page": f"{base}/{slug(layer)}/unit-{channel}.md", "layer_page": f"{base}/{slug(layer)}/index.md"}


def front_figure(site: SiteContext) -> Optional[Dict[str, Any]]:
    """One photo, its Grad-CAM and its strongest unit, for the top of the front page.

    The photo is the one the first model with predictions is most confident about (among the
    images its Grad-CAM covers, when there is one). Each panel is left out when the report
    lacks it (no Grad-CAM, no feature visualisations); None when there is no shown image at all.
    """
    manifest, writer = site.manifest, site.writer
    for model_id, ds_id in manifest.pairs:
        pred = manifest.one("predictions", model=model_id, dataset=ds_id)
        if pred is None or model_id not in site.models:
            continue
        summary: PredictionsRecord = pred.rec
        rows = list(summary.shown)
        if not rows:
            continue
        cam_art = manifest.one("attribution", model=model_id, dataset=ds_id, method="gradcam")
        cam: Optional[AttributionRecord] = cam_art.rec if cam_art is not None else None
        candidates = [r for r in rows if cam is None or r.id in cam.images] or rows
        row = max(candidates, key=lambda r: float(r.top[0].probability) if r.top else 0.0)
        pixels = pred.load_npz("inputs")["pixels"][rows.index(row)]
        photo = img.upscale(pixels, FRONT_SIDE)
        base = f"outcome/{slug(model_id)}/{slug(ds_id)}"
        figure: Dict[str, Any] = {
            "model": site.models[model_id], "dataset": ds_id, "title": row.title or row.id,
            "licence": row.licence, "top": row.top[0] if row.top else None,
            "photo": writer.image(f"assets/gen/{pred.key}/front-{slug(row.id)}{img.picture_suffix(photo)}", photo),
            "photo_page": f"{base}/image-{slug(row.id)}.md", "cam": None, "unit": None,
            "bars": colour_bars(site)}
        if cam is not None and row.id in cam.images:
            k = cam.images.index(row.id)
            heat = cam_art.load_npz("maps")["maps"][k]
            figure["cam"] = {
                "image": writer.image(f"assets/gen/{cam_art.key}/front-{slug(row.id)}{img.overlay_suffix(pixels)}",
                                      img.overlay(photo, heat, cam.signed)),
                "target": cam.target_names[k], "vmax": img.scale_end(heat, cam.signed), "signed": cam.signed,
                "page": f"{base}/method-gradcam.md"}
        figure["unit"] = _strongest_unit(site, model_id, ds_id, row.id)
        return figure
    return None


def _existing(site: SiteContext, page: Optional[str]) -> Optional[str]:
    """``page`` when some builder wrote it (the front page is built last), else None: a link to a
    page another part of the report did not make would break the strict build."""
    return page if page and page in site.writer.pages else None


def front_page(site: SiteContext) -> List[Any]:
    manifest = site.manifest
    found = (manifest.one("dataset", dataset=i) for i in manifest.datasets)
    datasets: List[DatasetRecord] = [a.rec for a in found if a is not None]
    figure = front_figure(site)
    if figure is not None:
        figure["photo_page"] = _existing(site, figure["photo_page"])
        for part in ("cam", "unit"):
            if figure[part] is not None:
                figure[part]["page"] = _existing(site, figure[part]["page"])
        if figure["unit"] is not None:
            figure["unit"]["layer_page"] = _existing(site, figure["unit"]["layer_page"])
    site.writer.page("index.md", "index.md.j2", config=site.config, models=list(site.models.values()),
                     sections=CARD_SECTIONS, failures=manifest.record.failures, device=manifest.record.device,
                     datasets=datasets, figure=figure)
    return ["index.md"]


def run_page(site: SiteContext) -> List[Any]:
    site.writer.page("run.md", "run.md.j2", manifest=site.manifest.record, failures=site.manifest.record.failures)
    return ["run.md"]


register_pages(PageBuilder(name="models", order=10, section="Models", build=model_pages))
# Built after every other part (the section still comes first in the navigation), so the front
# page links only to pages that exist.
register_pages(PageBuilder(name="front", order=990, section="Model card", build=front_page))
register_pages(PageBuilder(name="run", order=1000, section="Run report", build=run_page))
