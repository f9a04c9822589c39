"""The "Review" page: what changed against a base report (written by ``modelcard diff``)."""

from __future__ import annotations

from typing import Any, List

from generator.diff import load_diff
from generator.render.pages import PageBuilder, SiteContext, register_pages


def review_page(site: SiteContext) -> List[Any]:
    diff = load_diff(site.config.work_dir)
    if diff is None:
        return []
    site.writer.page("review.md", "review.md.j2", diff=diff)
    return ["review.md"]


register_pages(PageBuilder(name="review", order=900, section="Review", build=review_page))
