"""What a reader of the built site must never meet, as small checks the browser test runs on
every page and ``tests/test_browser_checks.py`` proves able to fail on tiny bad pages.

Each browser check takes a Playwright page that has loaded a page of the site and returns a
list of problems (empty when the page is fine); with Playwright's async API the same functions
return an awaitable. :func:`page_problems` runs them all in one round trip, as the site test
does on every page. The file checks (page weight, links, search index) need no browser.
"""

from __future__ import annotations

import json
import os
import re
from html import unescape
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple
from urllib.parse import unquote, urlsplit

from benchmarks.site_weight import PAGE_LIMIT, References, page_weight

__all__ = ["PAGE_LIMIT", "ConsoleWatch", "broken_images", "broken_links", "colour_bar_problems", "entity_problems",
           "missing_images", "numeric_index_entries", "overflow_problems", "page_kind", "page_problems",
           "page_weight_problem", "search_hits"]

# --- in the browser ------------------------------------------------------------------------------

_COLOUR_BARS = """() => {
  const out = [];
  const label = (scale, part) => {
    const el = scale.querySelector(".mc-scale__" + part);
    return el ? el.textContent.trim() : "";
  };
  const bars = new Set([...document.querySelectorAll("img.mc-scale__bar, img[src*='colourbar']")]);
  for (const img of bars) {
    const name = (img.getAttribute("src") || "").split("/").pop();
    const scale = img.closest(".mc-scale");
    if (!scale) { out.push(`colour bar ${name} outside a .mc-scale (no labels)`); continue; }
    for (const part of ["min", "max"]) {
      if (!label(scale, part)) out.push(`colour bar ${name} without a ${part} label`);
    }
  }
  for (const scale of document.querySelectorAll(".mc-scale")) {
    const link = scale.closest("a");
    if (link) out.push(`colour scale inside a link to ${link.getAttribute("href")}`);
    if (!scale.querySelector(".mc-scale__bar, img")) out.push("colour scale without a bar");
  }
  return out;
}"""


def colour_bar_problems(page: Any) -> Any:
    """Every colour bar image (``img.mc-scale__bar`` or a ``colourbar`` file) sits in a
    ``.mc-scale`` with non-empty min and max labels; no colour scale is inside a link."""
    return page.evaluate(_COLOUR_BARS)


# Named entities that escaping produces, and numeric ones: shown literally, they mean a string
# was escaped twice (e.g. ``|e`` inside a Markdown code span, which escapes again).
_ENTITIES = """() => {
  const pattern = /&(?:amp|lt|gt|quot|apos|nbsp|#[0-9]+|#x[0-9a-fA-F]+);/g;
  const text = document.body ? document.body.innerText : "";
  const out = [];
  for (const m of text.matchAll(pattern)) {
    const start = Math.max(0, m.index - 30);
    const context = text.slice(start, m.index + m[0].length + 30).replace(/\\s+/g, " ");
    out.push(`literal ${m[0]} in visible text: "${context}"`);
    if (out.length >= 5) break;
  }
  return out;
}"""


def entity_problems(page: Any) -> Any:
    """Literal HTML entities (``&amp;``, ``&#39;`` ...) in the page's visible text."""
    return page.evaluate(_ENTITIES)


# An element of the page's content reaching past the right edge of the viewport, unless an
# ancestor scrolls sideways (material wraps tables in .md-typeset__scrollwrap, which does).
# Only the outermost offender of each subtree is named. The theme's off-canvas drawer moves left,
# never right, and lies outside .md-content, so it is not counted.
_OVERFLOW = """() => {
  const width = document.documentElement.clientWidth;
  const root = document.querySelector(".md-content") || document.body;
  const scrolls = el => {
    for (let a = el.parentElement; a; a = a.parentElement) {
      const x = getComputedStyle(a).overflowX;
      if (x === "auto" || x === "scroll") return true;
      if (a === root) break;
    }
    return false;
  };
  const describe = el => {
    let name = el.tagName.toLowerCase();
    if (el.id) name += "#" + el.id;
    const classes = typeof el.className === "string" ? el.className.trim() : "";
    if (classes) name += "." + classes.split(/\\s+/).join(".");
    const src = el.getAttribute("src");
    return src ? `${name} (${src.split("/").pop()})` : name;
  };
  const flagged = [];
  for (const el of root.querySelectorAll("*")) {
    if (flagged.some(f => f.contains(el))) continue;
    const r = el.getBoundingClientRect();
    if (r.width === 0 || r.height === 0 || r.right <= width + 1) continue;
    if (scrolls(el)) continue;
    flagged.push(el);
    if (flagged.length >= 5) break;
  }
  const out = flagged.map(el => `${describe(el)} reaches ${Math.round(el.getBoundingClientRect().right)} px ` +
                                `in a ${width} px viewport, outside a scroll container`);
  if (!out.length && document.documentElement.scrollWidth > width + 1) {
    out.push(`the page scrolls sideways: ${document.documentElement.scrollWidth} px in a ${width} px viewport`);
  }
  return out;
}"""


def overflow_problems(page: Any) -> Any:
    """Content wider than the viewport outside a sideways-scrolling container (run at 390 px)."""
    return page.evaluate(_OVERFLOW)


# Images the browser has finished loading but could not decode or find. Lazy images below the
# fold are not fetched (forcing every one would decode a page's whole gallery on every visit);
# :func:`missing_images` checks from the HTML that each image's file exists.
_BROKEN_IMAGES = """() => [...document.images].filter(i => i.complete && i.currentSrc && i.naturalWidth === 0)
    .slice(0, 5).map(i => `broken image ${i.getAttribute("src")}`)"""

_LOAD_ALL_IMAGES = """() => Promise.all([...document.images].map(img => {
  img.loading = "eager";
  return img.complete ? null : new Promise(done => { img.onload = img.onerror = done; });
}))"""


def broken_images(page: Any, load_all: bool = False) -> Any:
    """Images that did not load; with ``load_all`` (sync API only) lazy ones are fetched first."""
    if load_all:
        page.evaluate(_LOAD_ALL_IMAGES)
    return page.evaluate(_BROKEN_IMAGES)


# All checks of a page at desktop width in one evaluation: one round trip per page.
_PAGE = f"""() => [...({_BROKEN_IMAGES})(), ...({_COLOUR_BARS})(), ...({_ENTITIES})()]"""


def page_problems(page: Any) -> Any:
    """:func:`broken_images`, :func:`colour_bar_problems` and :func:`entity_problems` at once."""
    return page.evaluate(_PAGE)


class ConsoleWatch:
    """Console errors, uncaught exceptions and failed or refused requests of one page; ``take()``
    returns and clears them (call it after each visit)."""

    def __init__(self, page: Any):
        self.errors: List[str] = []
        page.on("console", lambda msg: self.errors.append(f"console: {msg.text}") if msg.type == "error" else None)
        page.on("pageerror", lambda exc: self.errors.append(f"uncaught: {exc}"))
        page.on("requestfailed", self._failed)
        page.on("response", lambda r: self.errors.append(f"HTTP {r.status} {r.url}") if r.status >= 400 else None)

    def _failed(self, request: Any) -> None:
        # ERR_ABORTED: a load the next navigation cancelled (the search worker's script, say), not
        # a missing file; a missing one fails with ERR_FILE_NOT_FOUND (file://) or an HTTP 404.
        if "ERR_ABORTED" not in str(request.failure):
            self.errors.append(f"request failed: {request.url} ({request.failure})")

    def take(self) -> List[str]:
        found, self.errors = self.errors, []
        return found


# Material shows "No matching documents" when a query finds nothing and lists results as
# .md-search-result__item; "Initializing search" and "Type to start searching" mean not yet.
_SEARCH_DONE = """() => {
  const items = document.querySelectorAll(".md-search-result__item").length;
  const meta = document.querySelector(".md-search-result__meta");
  const text = meta ? meta.textContent.trim() : "";
  return items > 0 || /no matching/i.test(text);
}"""


_SEARCH_READY = """() => {
  const meta = document.querySelector(".md-search-result__meta");
  return !!meta && !/initiali[sz]ing/i.test(meta.textContent);
}"""


def search_hits(page: Any, term: str, timeout_ms: int = 15000) -> Tuple[int, str]:
    """Type ``term`` into the theme's search box of the loaded page; (number of results, what the
    result line says). 0 results when the search never answers within ``timeout_ms``."""
    box = page.locator("input.md-search__input")
    if box.count() == 0:
        return 0, "the page has no search box"
    if not box.is_visible():  # narrow screens hide the box behind the search icon
        page.locator("label.md-header__button[for='__search']").first.click()
    # The theme loads its index only when the box gets focus, and a query typed while it is
    # still "Initializing search" can be lost: focus, wait until it is ready, then type.
    box.focus()
    try:
        page.wait_for_function(_SEARCH_READY, timeout=timeout_ms)
        if box.input_value():  # results of an earlier query would pass for this one's
            box.fill("")
            box.press("End")
            page.wait_for_function("() => !document.querySelector('.md-search-result__item')", timeout=timeout_ms)
        box.fill(term)
        box.press("End")  # the theme reads the query on key events, which fill() does not send
        page.wait_for_function(_SEARCH_DONE, timeout=timeout_ms)
    except Exception:  # noqa: BLE001 - Playwright's TimeoutError; the message below says what happened
        pass
    count = page.locator(".md-search-result__item").count()
    meta = page.locator(".md-search-result__meta")
    return count, (meta.first.text_content() or "").strip() if meta.count() else "no result line"


# --- on disk -------------------------------------------------------------------------------------

def page_weight_problem(site: Path, page: Path, limit: int = PAGE_LIMIT) -> Optional[str]:
    """The page with every image, script and stylesheet it loads, over ``limit`` bytes
    (``benchmarks/site_weight.py`` measures the same way)."""
    weight = page_weight(site, page)
    if weight["total"] <= limit:
        return None
    return (f"{page.relative_to(site).as_posix()} weighs {weight['total'] / 1e6:.1f} MB with its "
            f"{weight['files']} files (limit {limit / 1e6:.0f} MB)")


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.hrefs: List[str] = []

    def handle_starttag(self, tag: str, attrs: List) -> None:
        href = dict(attrs).get("href")
        if tag == "a" and href:
            self.hrefs.append(href)


def missing_images(site: Path, page: Path) -> List[str]:
    """Images, scripts and stylesheets ``page`` loads whose files do not exist (lazy images too)."""
    parser = References()
    parser.feed(page.read_text(encoding="utf-8", errors="replace"))
    problems = []
    for url in parser.urls:
        parts = urlsplit(url)
        if parts.scheme or parts.netloc or not parts.path:
            continue
        if not Path(os.path.normpath(page.parent / unquote(parts.path))).is_file():
            problems.append(f"missing file {url}")
    return problems


def broken_links(site: Path, page: Path) -> List[str]:
    """Links of ``page`` to files of the site that do not exist (from the HTML, no browser)."""
    parser = _Links()
    parser.feed(page.read_text(encoding="utf-8", errors="replace"))
    problems = []
    for href in parser.hrefs:
        parts = urlsplit(href)
        if parts.scheme or parts.netloc or not parts.path:
            continue  # another site, mailto:, or an anchor on this page
        target = Path(os.path.normpath(page.parent / unquote(parts.path)))
        if target.is_dir():
            target = target / "index.html"
        if not target.exists():
            problems.append(f"broken link {href}")
    return problems


_TAG = re.compile(r"<[^>]+>")
_NUMBER = re.compile(r"[-+−±]?\(?[0-9][0-9.,:/×x%]*\)?%?|[-–—]")


def numeric_index_entries(index: Dict[str, Any], min_numbers: int = 40, share: float = 0.5) -> List[str]:
    """Search-index entries (mkdocs ``search_index.json``) that are mostly numbers: a table of
    figures that belongs out of the index (``data-search-exclude``). An entry counts when it holds
    at least ``min_numbers`` numbers that make up at least ``share`` of its words."""
    found = []
    for doc in index.get("docs", []):
        words = unescape(_TAG.sub(" ", str(doc.get("text", "")))).split()
        numbers = sum(1 for w in words if _NUMBER.fullmatch(w))
        if numbers >= min_numbers and numbers >= share * len(words):
            found.append(f"{doc.get('location')}: {numbers} of {len(words)} words are numbers")
    return found


def read_search_index(site: Path) -> Dict[str, Any]:
    return json.loads((site / "search" / "search_index.json").read_text(encoding="utf-8"))


def page_kind(rel: str) -> Tuple[str, ...]:
    """Which template a page of the generated site comes from, guessed from its path: the top
    folder, the depth and the file name up to its first ``-`` (``outcome/<m>/<d>/image-<x>.html``
    -> ``("outcome", "4", "image")``). Pages of one kind share a layout."""
    parts = rel.split("/")
    return (parts[0] if len(parts) > 1 else "", str(len(parts)), parts[-1].split("-")[0].split(".")[0])
