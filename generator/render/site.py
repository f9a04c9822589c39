"""Render the manifest's artifacts into Markdown pages and build the mkdocs site."""

from __future__ import annotations

import html
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import yaml
from jinja2 import Environment, FileSystemLoader, StrictUndefined

from generator.config import CardMetadata, ReportConfig
from generator.render import images as img
from generator.render.manifest import Manifest
from generator.render.methods_info import info as method_info
from generator.render.text import attr_escape, math, md_escape, slug

PROJECT_ROOT = Path(__file__).resolve().parents[2]
TEMPLATES = PROJECT_ROOT / "templates"
SITE_SRC = PROJECT_ROOT / "site_src"
BASE_MKDOCS = PROJECT_ROOT / "mkdocs.yml"

CARD_SECTIONS = [
    ("Model details", ["description", "owners", "version", "date", "licence", "citation", "contact", "references"]),
    ("Intended use", ["intended_use", "intended_users", "out_of_scope_uses"]),
    ("Factors", ["factors"]),
    ("Metrics", ["metrics"]),
    ("Evaluation data", ["evaluation_data"]),
    ("Training data", ["training_data"]),
    ("Ethical considerations", ["ethical_considerations"]),
    ("Caveats and recommendations", ["limitations", "caveats_and_recommendations"]),
]


class RenderError(RuntimeError):
    pass


def environment() -> Environment:
    env = Environment(loader=FileSystemLoader(str(TEMPLATES)), autoescape=True, undefined=StrictUndefined,
                      keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True)
    env.filters["md"] = md_escape
    env.filters["attr"] = attr_escape
    env.filters["math"] = math
    env.filters["pct"] = lambda v: "–" if v is None else f"{100 * float(v):.1f}%"
    env.filters["num"] = lambda v, d=3: "–" if v is None else f"{float(v):.{d}f}"
    return env


class SiteWriter:
    """Writes pages and images under ``docs/`` and remembers the navigation."""

    def __init__(self, docs: Path, env: Environment):
        self.docs = docs
        self.env = env
        self.pages: Dict[str, str] = {}
        self.assets: set = set()

    def page(self, rel: str, template: str, **context: Any) -> None:
        context.setdefault("root", os.path.relpath(".", os.path.dirname(rel) or "."))
        context.setdefault("rel", lambda target, here=rel: os.path.relpath(target, os.path.dirname(here) or "."))
        text = self.env.get_template(template).render(**context)
        self.pages[rel] = text

    def image(self, rel: str, pixels: np.ndarray) -> str:
        img.save_png(self.docs / rel, pixels)
        self.assets.add(rel)
        return rel

    def figure(self, rel: str, draw) -> str:
        path = self.docs / rel
        draw(path)
        self.assets.add(rel)
        return rel

    def flush(self) -> None:
        for rel, text in self.pages.items():
            path = self.docs / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            if not path.exists() or path.read_text() != text:
                path.write_text(text)


def merged_card(config: ReportConfig, model_card: Dict[str, Any]) -> Dict[str, Any]:
    """Model-level metadata over report-level metadata; empty stays empty (shown as missing)."""
    base = config.card.model_dump()
    out = {}
    for field in CardMetadata.model_fields:
        value = model_card.get(field)
        out[field] = value if value not in (None, [], "") else base.get(field)
    return out


def render_site(config: ReportConfig, *, build: bool = True, strict: bool = True) -> Path:
    """Artifacts -> pages -> ``mkdocs build``; returns the site folder."""
    work = config.work_dir
    manifest = Manifest.load(work)
    docs = work / "docs"
    # Pages are rewritten each time; generated images are kept and pruned, so unchanged ones stay.
    if docs.exists():
        for path in docs.rglob("*.md"):
            path.unlink()
    docs.mkdir(parents=True, exist_ok=True)
    writer = SiteWriter(docs, environment())
    nav: List[Any] = []

    models = _model_pages(config, manifest, writer)
    data_nav = _data_pages(config, manifest, writer)
    outcome_nav = _outcome_pages(config, manifest, writer, models)
    _front_page(config, manifest, writer, models)
    _run_page(config, manifest, writer)

    nav.append({"Model card": "index.md"})
    nav.append({"Models": [{m["title"]: m["page"]} for m in models.values()]})
    if data_nav:
        nav.append({"Data": data_nav})
    if outcome_nav:
        nav.append({"Outcome": outcome_nav})
    site_src_nav = _merge_site_src(config, docs, writer)
    if site_src_nav:
        nav.extend(site_src_nav)
    nav.append({"Run report": "run.md"})
    writer.flush()
    _prune(docs, writer)
    mkdocs_file = _write_mkdocs_config(config, docs, nav)
    site = config.site_dir
    if build:
        _mkdocs_build(mkdocs_file, site, strict)
    return site


def _prune(docs: Path, writer: SiteWriter) -> None:
    """Remove generated images no page uses any more."""
    gen = docs / "assets" / "gen"
    if not gen.exists():
        return
    for path in gen.rglob("*.png"):
        if str(path.relative_to(docs)) not in writer.assets:
            path.unlink()


# ------------------------------------------------------------------------------------ pages

def _model_pages(config: ReportConfig, manifest: Manifest, writer: SiteWriter) -> Dict[str, Dict[str, Any]]:
    models: Dict[str, Dict[str, Any]] = {}
    for model_id in manifest.models:
        art = manifest.one("model", model=model_id)
        if art is None:
            continue
        info = art.record
        training = None
        t_art = manifest.one("training", model=model_id)
        if t_art is not None:
            history = t_art.record["history"]
            curve = writer.figure(f"assets/gen/{t_art.key}/curve.png", lambda p: img.line_plot(
                p, [h["epoch"] for h in history],
                {"train loss": [h["train_loss"] for h in history], "test accuracy": [h["test_accuracy"] for h in history]},
                "epoch", "value", "Training curve"))
            training = {"record": t_art.record, "curve": curve}
        evaluations = []
        for pred in manifest.find("predictions", model=model_id):
            s = pred.load_json("summary")
            entry = {"dataset": s["dataset"], "count": s["count"], "accuracy": s.get("accuracy"),
                     "top_k_accuracy": s.get("top_k_accuracy"), "top_k": s["top_k"],
                     "page": f"outcome/{slug(model_id)}/{slug(s['dataset'])}/predictions.md", "confusion": None}
            if s.get("confusion"):
                entry["confusion"] = writer.figure(
                    f"assets/gen/{pred.key}/confusion.png",
                    lambda p, s=s: img.confusion_plot(p, np.array(s["confusion"]), info["class_names"]))
                entry["per_class"] = list(zip(info["class_names"], s["per_class_accuracy"]))
            evaluations.append(entry)
        mc = next((m for m in config.models if m.id == model_id), None)
        card = merged_card(config, info.get("card", {}))
        page = f"models/{slug(model_id)}.md"
        models[model_id] = {"id": model_id, "title": info.get("title") or model_id, "page": page, "info": info,
                            "card": card, "training": training, "evaluations": evaluations,
                            "source": mc.source if mc else info["spec"]["source"]}
        writer.page(page, "model.md.j2", model=models[model_id], sections=CARD_SECTIONS)
    return models


def _front_page(config: ReportConfig, manifest: Manifest, writer: SiteWriter, models: Dict[str, Dict]) -> None:
    writer.page("index.md", "index.md.j2", config=config, models=list(models.values()), sections=CARD_SECTIONS,
                failures=manifest.failures, device=manifest.data.get("device"),
                datasets=[d for d in (manifest.one("dataset", dataset=i) for i in manifest.datasets) if d])


def _data_pages(config: ReportConfig, manifest: Manifest, writer: SiteWriter) -> List[Any]:
    entries = []
    for ds_id in manifest.datasets:
        art = manifest.one("dataset", dataset=ds_id)
        if art is None:
            continue
        summary = art.load_json("summary")
        thumbs = art.load_npz("thumbs")
        shown = []
        for i, item_id in enumerate(thumbs["ids"].tolist()):
            rel = writer.image(f"assets/gen/{art.key}/{slug(item_id)}.png", img.upscale(thumbs[f"img_{i}"], 84))
            meta = summary["items"][i] if i < len(summary["items"]) else {}
            shown.append({"id": item_id, "image": rel, **meta})
        dc = next((d for d in config.datasets if d.id == ds_id), None)
        entries.append({"id": ds_id, "title": (dc.title if dc and dc.title else ds_id), "summary": summary,
                        "thumbs": shown})
    if not entries:
        return []
    writer.page("data/index.md", "data.md.j2", datasets=entries)
    return [{"Datasets": "data/index.md"}]


def _outcome_pages(config: ReportConfig, manifest: Manifest, writer: SiteWriter, models: Dict[str, Dict]
                   ) -> List[Any]:
    nav: List[Any] = []
    for model_id, ds_id in manifest.pairs:
        pred = manifest.one("predictions", model=model_id, dataset=ds_id)
        if pred is None or model_id not in models:
            continue
        base = f"outcome/{slug(model_id)}/{slug(ds_id)}"
        summary = pred.load_json("summary")
        inputs = pred.load_npz("inputs")
        pixels = inputs["pixels"]
        rows = summary["shown"]
        originals = [writer.image(f"assets/gen/{pred.key}/{slug(r['id'])}.png", img.upscale(pixels[i]))
                     for i, r in enumerate(rows)]
        methods = []
        for art in manifest.find("attribution", model=model_id, dataset=ds_id):
            rec = art.record
            maps = art.load_npz("maps")["maps"]
            overlays = []
            for i, item_id in enumerate(rec["images"]):
                big = img.upscale(pixels[i])
                rel = writer.image(f"assets/gen/{art.key}/{slug(item_id)}.png",
                                   img.overlay(big, maps[i], rec["signed"]))
                overlays.append(rel)
            info = method_info(rec["method"])
            methods.append({"name": rec["method"], "title": info["title"], "formula": info["formula"],
                            "read": info["read"], "doc": rec.get("doc", ""), "signed": rec["signed"],
                            "params": rec["params"], "extras": rec.get("extras", {}), "overlays": overlays,
                            "targets": rec["target_names"], "probabilities": rec["target_probabilities"],
                            "page": f"{base}/method-{slug(rec['method'])}.md"})
        bars = {s: writer.image(f"assets/gen/colourbar-{'signed' if s else 'unsigned'}.png", img.colour_bar(s))
                for s in (False, True)}
        images = [{"id": r["id"], "title": r["title"] or r["id"], "row": r, "original": originals[i],
                   "page": f"{base}/image-{slug(r['id'])}.md"} for i, r in enumerate(rows)]
        common = dict(model=models[model_id], dataset=ds_id, images=images, methods=methods, bars=bars,
                      summary=summary)
        writer.page(f"{base}/predictions.md", "predictions.md.j2", **common)
        writer.page(f"{base}/index.md", "outcome_overview.md.j2", **common)
        for i, image in enumerate(images):
            writer.page(image["page"], "outcome_image.md.j2", image=image, index=i, **common)
        for method in methods:
            writer.page(method["page"], "outcome_method.md.j2", method=method, **common)
        title = f"{models[model_id]['title']} on {ds_id}"
        nav.append({title: [{"Overview": f"{base}/index.md"}, {"Predictions": f"{base}/predictions.md"},
                            {"Methods": [{m["title"]: m["page"]} for m in methods]},
                            {"Images": [{im["title"]: im["page"]} for im in images]}]})
    return nav


def _run_page(config: ReportConfig, manifest: Manifest, writer: SiteWriter) -> None:
    writer.page("run.md", "run.md.j2", manifest=manifest.data, failures=manifest.failures)


def _merge_site_src(config: ReportConfig, docs: Path, writer: SiteWriter) -> List[Any]:
    """Copy the hand-written pages into the site; their own ``nav.yml`` orders them."""
    src = SITE_SRC
    if not src.is_dir():
        return []
    nav: List[Any] = []
    for path in sorted(src.rglob("*")):
        rel = path.relative_to(src)
        if path.is_dir() or rel.name == "nav.yml":
            continue
        target = docs / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix == ".md":
            writer.pages[str(rel)] = path.read_text()
        else:
            shutil.copyfile(path, target)
            writer.assets.add(str(rel))
    nav_file = src / "nav.yml"
    if nav_file.exists():
        nav = yaml.safe_load(nav_file.read_text()) or []
    return nav


def _escape_nav(nav: Any) -> Any:
    """mkdocs themes print nav titles and the site name as raw HTML: escape user strings there."""
    if isinstance(nav, list):
        return [_escape_nav(item) for item in nav]
    if isinstance(nav, dict):
        return {html.escape(str(k), quote=False): _escape_nav(v) for k, v in nav.items()}
    return nav


def _write_mkdocs_config(config: ReportConfig, docs: Path, nav: List[Any]) -> Path:
    base = yaml.safe_load(BASE_MKDOCS.read_text()) if BASE_MKDOCS.exists() else {}
    base.update({"site_name": html.escape(config.title, quote=False), "docs_dir": str(docs.resolve()),
                 "nav": _escape_nav(nav),
                 "site_dir": str(config.site_dir.resolve())})
    if config.description:
        base["site_description"] = html.escape(config.description)
    path = config.work_dir / "mkdocs.yml"
    path.write_text(yaml.safe_dump(base, sort_keys=False, allow_unicode=True))
    return path


def _mkdocs_build(mkdocs_file: Path, site: Path, strict: bool) -> None:
    cmd = [sys.executable, "-m", "mkdocs", "build", "-q", "-f", str(mkdocs_file), "-d", str(site.resolve())]
    if strict:
        cmd.append("--strict")
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RenderError(f"mkdocs build failed ({mkdocs_file}):\n{proc.stdout}\n{proc.stderr}")
