"""Stable references from hand-written pages to generated figures and pages.

A page in ``site_src/`` embeds a generated figure with a Markdown image whose address uses
the ``modelcard:`` scheme, and links to a generated page the same way::

    ![Grad-CAM of the coffee photo](modelcard:outcome/efficientnet-lite0/photos/gradcam/coffee)
    ![The input](modelcard:input/efficientnet-lite0/photos/coffee)
    [all Grad-CAM maps](modelcard:page/outcome/efficientnet-lite0/photos/method-gradcam)

References name models, datasets, methods and images, never file names, so they survive
re-runs. One that does not resolve fails the build with its file and line.
"""

from __future__ import annotations

import difflib
import os
import re
from pathlib import Path
from typing import Dict, List, Optional

from generator.render.text import slug

REFERENCE = re.compile(r"\(modelcard:([^)\s]+)\)")


class ReferenceError_(ValueError):
    """A ``modelcard:`` reference that does not resolve; lists every such place."""


def known_references(manifest, writer) -> Dict[str, str]:
    """Every reference the generated site offers -> its path under ``docs/``."""
    refs: Dict[str, str] = dict(getattr(writer, "refs", {}))
    for page in writer.pages:
        if page.endswith(".md"):
            refs[f"page/{page[:-3]}"] = page
    for art in manifest.find("attribution"):
        rec = art.record
        for item in rec.get("images", []):
            path = _shipped(writer, f"assets/gen/{art.key}/{slug(item)}")
            if path is not None:
                refs.setdefault(f"outcome/{rec['model']}/{rec['dataset']}/{rec['method']}/{item}", path)
    for art in manifest.find("predictions"):
        rec = art.record
        for row in rec.get("shown", []):
            path = _shipped(writer, f"assets/gen/{art.key}/{slug(row['id'])}")
            if path is not None:
                refs.setdefault(f"input/{rec['model']}/{rec['dataset']}/{row['id']}", path)
    return refs


#: Formats the renderer writes images in (photographic overlays are WebP, small images PNG).
IMAGE_SUFFIXES = (".webp", ".png", ".jpg")


def _shipped(writer, stem: str) -> Optional[str]:
    """The image the site ships under ``stem`` in whichever format it was written, if any."""
    return next((stem + s for s in IMAGE_SUFFIXES if stem + s in writer.assets), None)


def resolve_references(text: str, page: str, source: Path, refs: Dict[str, str]) -> str:
    """Replace ``modelcard:`` addresses in ``text`` (the page at ``page`` under docs/)."""
    problems: List[str] = []

    def replace(match: "re.Match[str]", line_no: int) -> str:
        name = match.group(1)
        target: Optional[str] = refs.get(name)
        if target is None:
            close = difflib.get_close_matches(name, list(refs), n=3, cutoff=0.6)
            hint = f"; close matches: {', '.join(close)}" if close else ""
            problems.append(f"{source}:{line_no}: unknown reference 'modelcard:{name}'{hint}")
            return match.group(0)
        return "(" + os.path.relpath(target, os.path.dirname(page) or ".") + ")"

    out, in_fence = [], False
    for i, line in enumerate(text.split("\n")):
        if line.lstrip().startswith("```"):
            in_fence = not in_fence
        if in_fence or line.lstrip().startswith("```"):
            out.append(line)  # examples in code blocks are shown, not resolved
            continue
        parts = re.split(r"(`[^`]*`)", line)
        out.append("".join(p if p.startswith("`") else REFERENCE.sub(lambda m, n=i + 1: replace(m, n), p)
                           for p in parts))
    if problems:
        raise ReferenceError_("\n".join(problems))
    return "\n".join(out)
