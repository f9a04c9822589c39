"""mkdocs hooks of every generated site (listed under ``hooks:`` in the mkdocs config the
renderer writes; mkdocs runs hooks after the plugins).

Search results list page titles. The navigation's labels are short on purpose ("Grad-CAM",
"Overview" under a model's section), so a search for "Grad-CAM" would list five pages called
"Grad-CAM" that a reader cannot tell apart. Every generated page's first heading names its model
and dataset: for the search index only, that heading becomes the page title, and the short label
is put back before the page is drawn, so the navigation stays short.
"""

from __future__ import annotations

import html
import re
from typing import Any, Optional

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
    if title and title != page.title:
        page.meta["_modelcard_nav_title"] = page.title
        page.title = title
    return markdown


def on_page_context(context: Any, page: Any, **_: Any) -> Any:
    # The search plugin has indexed the page under its full title by now (hooks run after plugins).
    short = page.meta.pop("_modelcard_nav_title", None)
    if short is not None:
        page.title = short
    return context
