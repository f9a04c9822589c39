"""Find ``--8<--`` snippet includes in hand-written pages and check them before mkdocs runs.

pymdownx.snippets (configured in ``site._write_mkdocs_config``) replaces an include with the
named file's text. A path it cannot use stops ``mkdocs build`` with a page of log output and a
traceback that hide which page and line were at fault; checking here first turns that into one
line per include. The syntax recognised is the part of the extension's documented syntax that
reads local files:

* inline: a line that is only ``--8<-- "path"`` (or ``'path'``), possibly indented;
* block: a line ``--8<--`` opens a block, one path per line follows, another ``--8<--`` closes it;
* a leading ``;`` escapes a marker or comments out a block line, so it includes nothing;
* ``path:1:5`` (line ranges) and ``path:name`` (a section) select part of a file.

The extension applies this to every line, inside code fences too, so this scan does as well.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import List, Optional, Set, Tuple

# The marker is any run of dashes, ``8<``, any run of dashes; nothing may follow the closing quote.
_INLINE = re.compile(r"""^[ \t]*(?P<escape>;*)-+8<-+[ \t]+(?P<quoted>"(?:\\"|[^"])+?"|'(?:\\'|[^'])+?')\r?$""")
_BLOCK = re.compile(r"^[ \t]*(?P<escape>;*)-+8<-+\r?$")
# A trailing ``:1:5``, ``:3``, ``:1:2,7:9`` or ``:section-name`` selects lines, not a file.
_SELECTION = re.compile(r"(?i)^(?P<path>.*?)(?P<selection>:[-0-9:,]*|:[a-z][-_0-9a-z]*)?$")


def includes(text: str) -> List[Tuple[int, str]]:
    """Every ``(line number, path as written)`` that pymdownx.snippets would try to include."""
    found: List[Tuple[int, str]] = []
    in_block = False
    for number, line in enumerate(text.splitlines(), start=1):
        inline = _INLINE.match(line)
        block = _BLOCK.match(line)
        if inline or block:
            if (inline or block).group("escape"):
                continue  # ``;--8<--`` is shown literally, not followed
            if block:
                in_block = not in_block
            elif not in_block:  # the extension ignores inline markers directly inside a block
                found.append((number, inline.group("quoted")[1:-1].strip()))
            continue
        if in_block:
            path = line.strip()
            if path and not path.startswith(";"):
                found.append((number, path))
    return found


def _file_part(written: str) -> Tuple[str, bool]:
    """The file named by an include, and whether only part of it (lines or a section) is taken."""
    match = _SELECTION.match(written)
    return match.group("path"), bool(match.group("selection"))


def problems(page: Path, base: Path, _seen: Optional[Set[Path]] = None) -> List[str]:
    """One ``file:line: ...`` line for each include in ``page`` that the build would fail on.

    ``base`` is the snippets base path: includes are relative to it and may not leave it. An
    included file is scanned in turn when it is taken whole, since its own includes are
    followed the same way.
    """
    seen = set() if _seen is None else _seen
    seen.add(page.resolve())
    root = Path(os.path.abspath(base))
    real_root = root.resolve()
    out: List[str] = []
    for number, written in includes(page.read_text(errors="replace")):
        where = f"{page}:{number}: snippet include '{written}'"
        name, partial = _file_part(written)
        if not name:
            out.append(f"{where} names no file")
            continue
        if Path(name).is_absolute():
            out.append(f"{where} is an absolute path; includes are read relative to {root} "
                       f"and may not leave it: name a file under {root} relative to it")
            continue
        # Judged on the path as written, as the extension does, and again after symlinks, so a
        # link inside the project cannot carry an include outside it.
        lexical = Path(os.path.normpath(root / name))
        if lexical != root and root not in lexical.parents:
            out.append(f"{where} leads outside {root} (via '..'); only files under {root} can be included")
            continue
        if not lexical.is_file():
            out.append(f"{where} does not exist: there is no file {lexical}")
            continue
        real = lexical.resolve()
        if real_root not in real.parents:
            out.append(f"{where} leads outside {root} through a symbolic link (to {real}); "
                       f"only files under {root} can be included")
            continue
        if not partial and real not in seen:
            out.extend(problems(real, base, seen))
    return out
