"""Outcome pages: predictions, per-image grids of all methods, per-method galleries."""

from __future__ import annotations

from typing import Any, Dict, List

from generator.render import images as img
from generator.render.methods_info import info as method_info
from generator.render.pages import PageBuilder, SiteContext, register_pages
from generator.render.text import slug


def colour_bars(site: SiteContext) -> Dict[bool, str]:
    """The two colour scales every heat-map page shows (unsigned, signed)."""
    return {s: site.writer.image(f"assets/gen/colourbar-{'signed' if s else 'unsigned'}.png", img.colour_bar(s))
            for s in (False, True)}


def outcome_pages(site: SiteContext) -> List[Any]:
    manifest, writer, models = site.manifest, site.writer, site.models
    nav: List[Any] = []
    for model_id, ds_id in manifest.pairs:
        pred = manifest.one("predictions", model=model_id, dataset=ds_id)
        if pred is None or model_id not in models:
            continue
        base = f"outcome/{slug(model_id)}/{slug(ds_id)}"
        summary = pred.load_json("summary")
        pixels = pred.load_npz("inputs")["pixels"]
        rows = summary["shown"]
        originals = [writer.image(f"assets/gen/{pred.key}/{slug(r['id'])}.png", img.upscale(pixels[i]))
                     for i, r in enumerate(rows)]
        site.shared.setdefault("originals", {})[(model_id, ds_id)] = originals
        methods = []
        for art in manifest.find("attribution", model=model_id, dataset=ds_id):
            rec = art.record
            maps = art.load_npz("maps")["maps"]
            overlays = [writer.image(f"assets/gen/{art.key}/{slug(item_id)}.png",
                                     img.overlay(img.upscale(pixels[i]), maps[i], rec["signed"]))
                        for i, item_id in enumerate(rec["images"])]
            info = method_info(rec["method"])
            methods.append({"name": rec["method"], "title": info["title"], "formula": info["formula"],
                            "read": info["read"], "doc": rec.get("doc", ""), "signed": rec["signed"],
                            "params": rec["params"], "extras": rec.get("extras", {}), "overlays": overlays,
                            "targets": rec["target_names"], "probabilities": rec["target_probabilities"],
                            "page": f"{base}/method-{slug(rec['method'])}.md"})
        images = [{"id": r["id"], "title": r["title"] or r["id"], "row": r, "original": originals[i],
                   "page": f"{base}/image-{slug(r['id'])}.md"} for i, r in enumerate(rows)]
        common = dict(model=models[model_id], dataset=ds_id, images=images, methods=methods,
                      bars=colour_bars(site), summary=summary)
        writer.page(f"{base}/predictions.md", "predictions.md.j2", **common)
        writer.page(f"{base}/index.md", "outcome_overview.md.j2", **common)
        for i, image in enumerate(images):
            writer.page(image["page"], "outcome_image.md.j2", image=image, index=i, **common)
        for method in methods:
            writer.page(method["page"], "outcome_method.md.j2", method=method, **common)
        entries: List[Any] = [{"Overview": f"{base}/index.md"}, {"Predictions": f"{base}/predictions.md"}]
        if methods:
            entries.append({"Methods": [{m["title"]: m["page"]} for m in methods]})
        entries.append({"Images": [{im["title"]: im["page"]} for im in images]})
        nav.append({f"{models[model_id]['title']} on {ds_id}": entries})
    return nav


register_pages(PageBuilder(name="outcome", order=30, section="Outcome", build=outcome_pages))
