"""mkdocs hooks of every generated site (listed under ``hooks:`` in the mkdocs config the
renderer writes; mkdocs runs hooks after the plugins).

Search results list page titles. The navigation's labels are short on purpose ("Grad-CAM",
"Overview" under a model's section), so a search for "Grad-CAM" would list five pages called
"Grad-CAM" that a reader cannot tell apart. Every generated page's first heading names its model
and dataset: for the search index only, that heading becomes the page title (around the search
plugin's indexing of that page), so the navigation, drawn afterwards, keeps its short labels.
"""

from __future__ import annotations

import html
import re
from typing import Any, Optional

from mkdocs.plugins import CombinedEvent, event_priority

_H1 = re.compile(r"^# (.+?)\s*(?:\{[^}]*\})?\s*$", re.MULTILINE)
_TAG = re.compile(r"<[^>]+>")
_LINK = re.compile(r"\[([^\]]*)\]\([^)]*\)")
_ESCAPED = re.compile(r"\\([\\`*_{}\[\]()#+\-.!|<>~])")


def heading_title(markdown: str) -> Optional[str]:
    """The text of the page's first level-1 heading (Markdown and tags removed, HTML-escaped), if any."""
    found = _H1.search(markdown)
    if found is None:
        return None
    text = _LINK.sub(r"\1", found.group(1))
    text = _TAG.sub("", text).replace("`", "")
    text = _ESCAPED.sub(r"\1", text)
    # Page titles are printed as raw HTML by the theme (the nav is escaped the same way in
    # site.py): user text stays escaped, tags from the heading are gone.
    text = html.escape(html.unescape(re.sub(r"\s+", " ", text)).strip(), quote=False)
    return text or None


def on_page_markdown(markdown: str, page: Any, **_: Any) -> str:
    title = heading_title(markdown)
    if title:
        page.meta["_modelcard_search_title"] = title
    return markdown


# mkdocs reads every page's Markdown before it draws any page, so the title may only change
# around the search plugin's own on_page_context (priority 0) for that page: set just before,
# put back just after. Every page's navigation is drawn with the short labels.
@event_priority(100)
def _full_title(context: Any, page: Any, **_: Any) -> Any:
    full = page.meta.get("_modelcard_search_title")
    if full and full != page.title:
        page.meta["_modelcard_nav_title"] = page.title
        page.title = full
    return context


@event_priority(-100)
def _short_title(context: Any, page: Any, **_: Any) -> Any:
    short = page.meta.pop("_modelcard_nav_title", None)
    if short is not None:
        page.title = short
    return context


on_page_context = CombinedEvent(_full_title, _short_title)
