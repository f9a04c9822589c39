"""Weigh a built site from its files; prints JSON.

    python benchmarks/site_weight.py [SITE]        (default: .modelcard-e2e/site)

A page's weight is what a reader downloads to see it: its HTML plus every image, script and
stylesheet it references (each file counted once per page, measured on disk). Images a page
only links to (the lightbox's full-size view, opened on click) are not counted. The browser
test (``tests/test_site_browser.py``) fails on a page over :data:`PAGE_LIMIT` with the same
measurement. Standard library only, so it runs anywhere.
"""

from __future__ import annotations

import json
import os
import sys
from html.parser import HTMLParser
from pathlib import Path
from typing import Dict, List, Optional, Set
from urllib.parse import unquote, urlsplit

PAGE_LIMIT = 5_000_000  # bytes (5 MB, decimal): the most one page may weigh with its images


class References(HTMLParser):
    """Collects the URLs of what a browser fetches to show the page (not what it links to)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.urls: List[str] = []

    def handle_starttag(self, tag: str, attrs: List) -> None:
        a = {k: v for k, v in attrs if v is not None}
        if tag in ("img", "script", "source", "input", "video", "audio", "iframe", "embed") and a.get("src"):
            self.urls.append(a["src"])
        if tag == "video" and a.get("poster"):
            self.urls.append(a["poster"])
        if tag == "object" and a.get("data"):
            self.urls.append(a["data"])
        if a.get("srcset"):  # every candidate: which one a browser picks depends on the screen
            self.urls.extend(part.split()[0] for part in a["srcset"].split(",") if part.strip())
        if tag == "link" and a.get("href") and ({"stylesheet", "icon", "preload", "modulepreload"}
                                                & set(a.get("rel", "").lower().split())):
            self.urls.append(a["href"])


def referenced_files(site: Path, page: Path) -> Set[Path]:
    """The local files ``page`` (an HTML file under ``site``) loads; remote and data URLs are left out."""
    parser = References()
    parser.feed(page.read_text(encoding="utf-8", errors="replace"))
    parser.close()
    root = site.resolve()
    found: Set[Path] = set()
    for url in parser.urls:
        parts = urlsplit(url)
        if parts.scheme or parts.netloc or not parts.path:
            continue  # http(s):, data:, //host/...: not a file of this site
        target = (root / unquote(parts.path).lstrip("/")) if parts.path.startswith("/") \
            else (page.parent / unquote(parts.path))
        target = Path(os.path.normpath(target))
        if target.is_file() and (target == root or root in target.parents):
            found.add(target)
    return found


def page_weight(site: Path, page: Path) -> Dict[str, int]:
    """``{"html": bytes, "assets": bytes, "total": bytes, "files": count}`` of one page."""
    files = referenced_files(site, page)
    html = page.stat().st_size
    assets = sum(f.stat().st_size for f in files)
    return {"html": html, "assets": assets, "total": html + assets, "files": len(files)}


def folder_size(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file() and not f.is_symlink())


def weigh_site(site: Path, top: int = 10, limit: int = PAGE_LIMIT) -> Dict[str, object]:
    """Total size, size of the generated images (``assets/gen``), the ``top`` heaviest pages and
    the pages over ``limit`` bytes."""
    pages = sorted(p for p in site.rglob("*.html") if p.is_file())
    weights = {p.relative_to(site).as_posix(): page_weight(site, p) for p in pages}
    heaviest = sorted(weights.items(), key=lambda kv: -kv[1]["total"])
    mb = 1_000_000  # decimal megabytes, as the limit is stated
    return {
        "site": str(site),
        "total_bytes": folder_size(site),
        "total_mb": round(folder_size(site) / mb, 2),
        "assets_gen_mb": round(folder_size(site / "assets" / "gen") / mb, 2) if (site / "assets" / "gen").is_dir()
        else 0.0,
        "pages": len(pages),
        "page_limit_mb": round(limit / mb, 2),
        "pages_over_limit": sum(1 for w in weights.values() if w["total"] > limit),
        "heaviest": [{"page": rel, "mb": round(w["total"] / mb, 2), "html_kib": round(w["html"] / 1024, 1),
                      "files": w["files"]} for rel, w in heaviest[:top]],
    }


def main(argv: Optional[List[str]] = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    site = Path(args[0]) if args else Path(__file__).resolve().parents[1] / ".modelcard-e2e" / "site"
    if not (site / "index.html").is_file():
        raise SystemExit(f"{site} is not a built site (no index.html); build one with `modelcard build`")
    print(json.dumps(weigh_site(site), indent=2))


if __name__ == "__main__":
    main()
