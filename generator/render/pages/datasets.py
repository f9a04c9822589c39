"""The data page: every dataset with its images, labels, sources and licences (typed
``dataset`` records, :class:`generator.records.DatasetRecord`)."""

from __future__ import annotations

from typing import Any, List

from generator.records import DatasetRecord
from generator.render import images as img
from generator.render.pages import PageBuilder, SiteContext, register_pages
from generator.render.text import slug


def data_pages(site: SiteContext) -> List[Any]:
    config, manifest, writer = site.config, site.manifest, site.writer
    entries = []
    for ds_id in manifest.datasets:
        art = manifest.one("dataset", dataset=ds_id)
        if art is None:
            continue
        summary: DatasetRecord = art.rec  # the same object as the artifact's summary.json
        thumbs = art.load_npz("thumbs")
        shown = []
        for i, item_id in enumerate(thumbs["ids"].tolist()):
            pixels = img.upscale(thumbs[f"img_{i}"], 84)
            # photographs as JPEG (a tenth of the PNG), small upscaled images as lossless PNG
            rel = writer.image(f"assets/gen/{art.key}/{slug(item_id)}{img.picture_suffix(pixels)}", pixels)
            meta = dict(summary.items[i]) if i < len(summary.items) else {}
            shown.append({"id": item_id, "image": rel, **meta})
        dc = next((d for d in config.datasets if d.id == ds_id), None)
        labelled = bool(summary.class_names) and any(t.get("label") is not None for t in shown)
        entries.append({"id": ds_id, "title": (dc.title if dc and dc.title else ds_id), "summary": summary,
                        "thumbs": shown, "labelled": labelled})
    if not entries:
        return []
    writer.page("data/index.md", "data.md.j2", datasets=entries)
    return [{"Datasets": "data/index.md"}]


register_pages(PageBuilder(name="datasets", order=20, section="Data", build=data_pages))
