"""One writer at a time per report folder.

Two ``modelcard`` processes on one work folder clash: both rewrite ``docs/`` and the mkdocs
build of one deletes the files the other is writing. A run or render therefore holds an
exclusive lock on ``<work_dir>/.lock`` for as long as it writes. The lock is an OS file lock
(``fcntl.flock``), so the kernel releases it when the holder exits or is killed: a crash never
leaves a stale lock behind. The file itself records who holds it, for the error message.

This module imports no torch: the renderer takes the same lock.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Dict, Iterator, Tuple

try:  # POSIX; on other systems runs are not serialised (documented in the guarantees page)
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

LOCK_NAME = ".lock"

# Locks this process holds: path -> (open file, depth). ``build`` runs then renders under one
# lock, and flock locks belong to an open file, so a second open() here would lock us out.
_held: Dict[str, Tuple[object, int]] = {}


class LockedError(RuntimeError):
    """Another process is writing the same report folder."""


def _holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return "another process"
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info.get("started", 0)))
    return (f"pid {info.get('pid', '?')} on {info.get('host', '?')} "
            f"(`{info.get('command', '?')}`, started {started})")


def _program() -> str:
    """How the holder was started, as a user would type it (``python -m generator`` runs
    ``generator/__main__.py``, which is what torchrun starts)."""
    path = Path(sys.argv[0])
    return "python -m generator" if path.name == "__main__.py" and path.parent.name == "generator" else path.name


@contextmanager
def report_lock(work_dir: Path, action: str = "modelcard") -> Iterator[None]:
    """Hold the exclusive lock of ``work_dir`` for the ``with`` block; fail at once if another
    process holds it, naming that process."""
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    path = (work_dir / LOCK_NAME).resolve()
    key = str(path)
    if key in _held:
        fh, depth = _held[key]
        _held[key] = (fh, depth + 1)
        try:
            yield
        finally:
            fh, depth = _held[key]
            _held[key] = (fh, depth - 1)
        return
    fh = open(path, "a+", encoding="utf-8")
    try:
        if fcntl is not None:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise LockedError(f"{work_dir} is in use by {_holder(path)}; wait for it to finish or stop it, "
                                  f"then run {action} again") from None
        fh.seek(0)
        fh.truncate()
        fh.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(),
                             "command": " ".join([_program(), *sys.argv[1:]]) or action}))
        fh.flush()
        _held[key] = (fh, 1)
        try:
            yield
        finally:
            del _held[key]
    finally:
        fh.close()  # closing the file releases the flock
