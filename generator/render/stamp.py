"""Skip a render whose result is already on disk.

A rebuild with nothing changed must take seconds, not the minute and a half that re-drawing
every overlay and running mkdocs over a few hundred pages takes. The site is a function of the
manifest (whose artifact keys are content hashes), the effective configuration, the hand-written
pages, the diff a Review page shows, this package's code and templates, and the versions of the
libraries that draw and build the pages. :func:`render_stamp` hashes all of them; the renderer
writes the stamp into the site folder after a successful build (``.modelcard-render.json``, with
every file's size) and skips the next render only when the stamp matches and the folder holds
exactly the files it lists, each with its size.
"""

from __future__ import annotations

import hashlib
import json
import os
from importlib import metadata
from pathlib import Path
from typing import Any, Dict, Iterable, Optional

STAMP_NAME = ".modelcard-render.json"
#: Libraries whose version changes the pages or the images.
LIBRARIES = ("mkdocs", "mkdocs-material", "mkdocs-glightbox", "jinja2", "markdown", "pymdown-extensions",
             "matplotlib", "numpy", "pillow")
_PACKAGE = Path(__file__).resolve().parents[1]


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "absent"


def _tree_digest(digest: "hashlib._Hash", root: Path, suffixes: Optional[Iterable[str]] = None) -> None:
    """Names and bytes of every file under ``root`` (sorted; caches and bytecode skipped)."""
    if root.is_file():
        files = [root]
    elif root.is_dir():
        files = sorted(p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    else:
        digest.update(f"missing {root.name}\0".encode())
        return
    wanted = tuple(suffixes) if suffixes else None
    for path in files:
        if wanted and path.suffix not in wanted:
            continue
        digest.update(path.relative_to(root if root.is_dir() else root.parent).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")


def render_stamp(manifest_file: Path, config_json: Dict[str, Any], site_src: Iterable[Path],
                 templates: Path, base_mkdocs: Path) -> str:
    """sha256 of everything that determines the rendered site (see the module docstring)."""
    digest = hashlib.sha256()
    digest.update(manifest_file.read_bytes() + b"\0")
    digest.update(json.dumps(config_json, sort_keys=True, default=str).encode() + b"\0")
    for folder in site_src:
        _tree_digest(digest, Path(folder))
    _tree_digest(digest, templates)
    _tree_digest(digest, base_mkdocs)
    _tree_digest(digest, _PACKAGE, suffixes=(".py", ".yaml", ".json", ".j2", ".css", ".js"))
    for name in LIBRARIES:
        digest.update(f"{name}=={_version(name)}\0".encode())
    return digest.hexdigest()


def _listing(site: Path) -> Dict[str, int]:
    return {p.relative_to(site).as_posix(): p.stat().st_size
            for p in sorted(site.rglob("*")) if p.is_file() and p.name != STAMP_NAME}


def write_stamp(site: Path, stamp: str) -> None:
    """Record ``stamp`` and the finished site's files; written last, atomically."""
    payload = json.dumps({"stamp": stamp, "files": _listing(site)}, sort_keys=True).encode()
    tmp = site / (STAMP_NAME + ".tmp")
    tmp.write_bytes(payload)
    os.replace(tmp, site / STAMP_NAME)


def site_is_current(site: Path, stamp: str) -> bool:
    """True when ``site`` was built from exactly ``stamp`` and holds exactly the files it built."""
    try:
        recorded = json.loads((site / STAMP_NAME).read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(recorded, dict) or recorded.get("stamp") != stamp:
        return False
    files = recorded.get("files")
    if not isinstance(files, dict) or not files:
        return False
    # Exactly the files it built, each with its size: a file gone, changed or added (a stale page
    # someone copied in) means the folder is not what the build left, and it is rebuilt.
    return _listing(site) == files


def clear_stamp(site: Path) -> None:
    """Forget the stamp (before a build starts: a half-built site must never look current)."""
    try:
        (site / STAMP_NAME).unlink()
    except FileNotFoundError:
        pass
