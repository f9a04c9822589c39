"""Model pages (specification, training, evaluation, card) and the model-card front page.

Reads the typed ``model``, ``training``, ``predictions`` and ``dataset`` records
(:mod:`generator.records`); the card metadata and the training settings stay dicts (free-form
fields of the config).
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

import numpy as np

from generator.records import DatasetRecord, ModelRecord, PredictionsRecord, TrainingRecord
from generator.render import images as img
from generator.render.pages import PageBuilder, SiteContext, register_pages
from generator.render.pages.capability import capability_page
from generator.render.site import CARD_SECTIONS, merged_card
from generator.render.text import slug


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
        site.models[model_id] = {
            "id": model_id, "title": info.title or model_id, "page": page, "info": info,
            "card": merged_card(config, info.card), "training": training, "evaluations": evaluations,
            "source": mc.source if mc else info.spec.source,
            "token_grid": token_grid_text(info.spec.tokens), "capabilities": capability_page(model_id)}
        writer.page(page, "model.md.j2", model=site.models[model_id], sections=CARD_SECTIONS)
    return [{m["title"]: m["page"]} for m in site.models.values()]


def front_page(site: SiteContext) -> List[Any]:
    manifest = site.manifest
    found = (manifest.one("dataset", dataset=i) for i in manifest.datasets)
    datasets: List[DatasetRecord] = [a.rec for a in found if a is not None]
    site.writer.page("index.md", "index.md.j2", config=site.config, models=list(site.models.values()),
                     sections=CARD_SECTIONS, failures=manifest.record.failures, device=manifest.record.device,
                     datasets=datasets)
    return ["index.md"]


def run_page(site: SiteContext) -> List[Any]:
    site.writer.page("run.md", "run.md.j2", manifest=site.manifest.record, failures=site.manifest.record.failures)
    return ["run.md"]


register_pages(PageBuilder(name="models", order=10, section="Models", build=model_pages))
register_pages(PageBuilder(name="front", order=11, section="Model card", build=front_page))
register_pages(PageBuilder(name="run", order=1000, section="Run report", build=run_page))
