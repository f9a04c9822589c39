"""The "Review" page: what changed against a base report (written by ``modelcard diff``).

``modelcard diff`` writes ``diff.json`` and the page's images into HEAD's report folder
(``<work_dir>/diff/``); this builder copies those images into the site and fills the page. A
``diff.json`` of another layout (an older modelcard) gives a page saying to run the diff again.
"""

from __future__ import annotations

from typing import Any, List

import numpy as np

from generator.diff import DIFF_SCHEMA, REVIEW_IMAGES, load_diff, review_image
from generator.render.pages import PageBuilder, SiteContext, register_pages


def _ship_images(site: SiteContext, value: Any) -> Any:
    """``value`` with every ``review-images/...`` path replaced by the site asset it was copied
    to (None when the file is missing or the name is not one the diff writes)."""
    if isinstance(value, dict):
        return {k: _ship_images(site, v) for k, v in value.items()}
    if isinstance(value, list):
        return [_ship_images(site, v) for v in value]
    if isinstance(value, str) and value.startswith(f"{REVIEW_IMAGES}/"):
        path = review_image(site.config.work_dir, value)
        if path is None:
            return None
        from PIL import Image

        with Image.open(path) as img:
            pixels = np.asarray(img.convert("RGB"))
        return site.writer.image(f"assets/review/{path.name}", pixels)
    return value


def review_page(site: SiteContext) -> List[Any]:
    diff = load_diff(site.config.work_dir)
    if diff is None:
        return []
    current = diff.get("schema") == DIFF_SCHEMA
    site.writer.page("review.md", "review.md.j2", diff=_ship_images(site, diff) if current else diff,
                     current=current)
    return ["review.md"]


register_pages(PageBuilder(name="review", order=900, section="Review", build=review_page))
