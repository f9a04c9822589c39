"""A content-addressed store of artifacts, safe against crashes.

An artifact is the result of one unit of work (one method on one model for one batch of
inputs): a JSON record plus files. Its key hashes everything that determines it (weights
digest, input digest, method name and version, parameters, seed), so work whose key exists is
reused: an interrupted run resumes, and changing one setting recomputes only what it affects.

Files are written into a temporary folder that is renamed into place at the end, so a crash
never leaves half an artifact behind. The record keeps each file's size and sha256, and an
artifact is only reused when its files still match them: a file truncated by a power cut or a
full disk is recomputed, not trusted. This module imports no torch: the renderer reads it.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
import shutil
import socket
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple, Union

import numpy as np

log = logging.getLogger(__name__)

FileContent = Union[bytes, str, Callable[[Path], None]]

RECORD_NAME = "record.json"
#: Record key beside ``files``: role -> {"size": bytes, "sha256": hex digest}. A sibling map, so
#: every reader of ``record["files"][role]`` keeps working unchanged.
INTEGRITY_KEY = "integrity"

#: Temporary names left by a process on another machine (or by a version of this module that
#: did not record its process) are removed once they are this old: by then no write can still
#: be going on, since ``put`` only writes already computed results.
STALE_AFTER_SECONDS = 3600.0

_CHUNK = 1 << 20


class CorruptArtifact(RuntimeError):
    """A stored artifact whose files no longer match its record (missing, truncated, altered)."""


def _canonical(value: Any) -> Any:
    """JSON-stable form of parameters (tuples as lists, numpy scalars as Python numbers)."""
    if isinstance(value, Mapping):
        return {str(k): _canonical(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    return value


def artifact_key(kind: str, version: str, **parts: Any) -> str:
    """sha256 of the kind, its version and every part that determines the result."""
    payload = json.dumps({"kind": kind, "version": version, "parts": _canonical(parts)}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


@dataclass
class Artifact:
    key: str
    path: Path
    record: Dict[str, Any]

    @property
    def kind(self) -> str:
        return self.record["kind"]

    def file(self, role: str) -> Path:
        try:
            return self.path / self.record["files"][role]
        except KeyError:
            raise KeyError(f"artifact {self.kind}/{self.key} has no file {role!r} "
                           f"(it has {sorted(self.record.get('files', {}))})") from None

    def load_npz(self, role: str) -> Dict[str, np.ndarray]:
        with np.load(self.file(role), allow_pickle=False) as data:
            return {k: data[k] for k in data.files}

    def load_json(self, role: str) -> Any:
        return json.loads(self.file(role).read_text())


@dataclass
class StoreStats:
    computed: List[str] = field(default_factory=list)
    reused: List[str] = field(default_factory=list)
    failed: List[Tuple[str, str]] = field(default_factory=list)


def npz_bytes(**arrays: np.ndarray) -> bytes:
    """A compressed ``.npz`` whose bytes depend only on the arrays.

    ``np.savez_compressed`` stamps every member with the current time, so two identical runs
    would write different files; members here carry a fixed date instead.
    """
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, value in arrays.items():
            member = io.BytesIO()
            np.lib.format.write_array(member, np.asanyarray(value), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, member.getvalue())
    return buf.getvalue()


def json_bytes(value: Any) -> bytes:
    return json.dumps(_canonical(value), indent=1, sort_keys=True).encode()


# --- integrity -------------------------------------------------------------------------------

def _sha256_of(path: Path) -> str:
    """sha256 of a file, read in 1 MiB chunks so large files never sit whole in memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def check_artifact(folder: Path, record: Mapping[str, Any]) -> Optional[str]:
    """None when every file of the record matches its size and sha256; else one line naming
    the file and what is wrong with it.

    Sizes are compared first (one ``stat``), so a truncated file is caught without reading it;
    the digest then catches altered bytes of the right length.
    """
    files = record.get("files", {})
    checks = record.get(INTEGRITY_KEY)
    if not isinstance(files, Mapping) or not isinstance(checks, Mapping) or set(checks) != set(files):
        # Written before sizes and digests were recorded: nothing to prove the files whole.
        return f"{folder / RECORD_NAME} records no size and sha256 for its files (written by an older version)"
    for role, name in sorted(files.items()):
        path = folder / name
        try:
            size, digest = int(checks[role]["size"]), str(checks[role]["sha256"])
        except (KeyError, TypeError, ValueError):
            return f"{folder / RECORD_NAME}: malformed size/sha256 entry for {role!r}"
        try:
            actual = path.stat().st_size
            if actual != size:
                return f"{path} is {actual} bytes, its record says {size} (truncated or overwritten)"
            if _sha256_of(path) != digest:
                return f"{path} has the recorded size but not the recorded sha256 (its bytes changed)"
        except FileNotFoundError:
            return f"{path} is missing"
        except OSError as exc:
            return f"{path} cannot be read ({exc})"
    return None


def read_record(folder: Path) -> Tuple[Optional[Dict[str, Any]], Optional[str]]:
    """(record, None) when ``folder`` holds a readable record whose files verify, else
    (None, why) with a line naming the file at fault."""
    path = folder / RECORD_NAME
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        return None, f"{path} is missing"
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return None, f"{path} cannot be read ({type(exc).__name__}: {exc})"
    if not isinstance(record, dict):
        return None, f"{path} does not hold a JSON object"
    problem = check_artifact(folder, record)
    return (None, problem) if problem else (record, None)


# --- durable writes --------------------------------------------------------------------------

def _write_synced(path: Path, data: bytes) -> None:
    """Write ``data`` and push it to the disk before returning, so the rename that publishes it
    can never reach the disk ahead of its contents (the cause of 0-byte files after a power cut)."""
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def _sync_and_measure(path: Path) -> Dict[str, Any]:
    """Size and sha256 of a file a caller's writer produced, and fsync it (one pass over it).

    Opened for update because Windows only flushes handles opened for writing.
    """
    digest, size = hashlib.sha256(), 0
    with open(path, "r+b") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(chunk)
            size += len(chunk)
        os.fsync(fh.fileno())
    return {"sha256": digest.hexdigest(), "size": size}


def _fsync_dir(path: Path) -> None:
    """Make a folder's entries (a rename, a new file) durable. Best effort: Windows cannot open a
    folder this way and some file systems refuse to fsync one; the data itself is synced anyway."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# --- temporary names and their cleanup -------------------------------------------------------
#
# A kill -9 during ``put`` or ``write_json_atomic`` leaves its temporary folder or file behind.
# Each temporary name carries the creating host (hashed) and process id. A leftover whose
# process is gone is removed at once; a time limit alone would either delete a slow live
# writer's folder (two processes may share one store) or keep debris around for its whole
# length. A process id only means something on the machine that issued it, so names from
# another host (a store on a network drive, a container with its own hostname and process
# ids) fall back to the age rule, as do names from before this scheme.

_HOST = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]
_MARK = re.compile(r"\.tmp-(?P<host>[0-9a-f]{8})-(?P<pid>\d+)-")
# ``tempfile.mkdtemp(prefix=f".{key}.")`` as written by earlier versions: no host, no pid.
_LEGACY = re.compile(r"^\.[0-9a-f]{32}\.[a-z0-9_]{8}$")


def _temp_prefix(stem: str) -> str:
    return f".{stem}.tmp-{_HOST}-{os.getpid()}-"


def _process_alive(pid: int) -> Optional[bool]:
    """Whether process ``pid`` of this host runs; None when that cannot be told safely."""
    if pid == os.getpid():
        return True
    if os.name == "nt" or pid <= 0:
        # On Windows os.kill terminates the process instead of probing it; pid 0 would
        # signal our own process group.
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: it exists but belongs to another user
        return True
    return True


def _is_stale(entry: os.DirEntry, now: float) -> bool:
    """Whether a temporary name in a store or output folder was left by a writer that is gone."""
    mark = _MARK.search(entry.name)
    if mark is not None and mark["host"] == _HOST:
        alive = _process_alive(int(mark["pid"]))
        if alive is not None:
            return not alive
    elif mark is None and not _LEGACY.match(entry.name):
        return False  # not one of our temporary names (e.g. a user's dotfile): never touch
    try:
        return now - entry.stat(follow_symlinks=False).st_mtime > STALE_AFTER_SECONDS
    except OSError:
        return False


def _remove_stale(folder: Path, prefix: str = ".") -> List[Path]:
    """Remove leftover temporary folders and files directly inside ``folder``."""
    removed: List[Path] = []
    now = time.time()
    try:
        entries = [e for e in os.scandir(folder) if e.name.startswith(prefix)]
    except OSError:
        return removed
    for entry in entries:
        if not _is_stale(entry, now):
            continue
        path = Path(entry.path)
        try:
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(path)
            else:
                path.unlink()
        except OSError as exc:  # another process cleaning at the same time, or permissions
            log.debug("could not remove leftover %s: %s", path, exc)
            continue
        removed.append(path)
    return removed


class ArtifactStore:
    """Artifacts under ``root/<kind>/<key>/`` with ``record.json`` and the files it names."""

    def __init__(self, root: Union[str, Path]):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.stats = StoreStats()
        self.remove_leftovers()

    def remove_leftovers(self) -> List[Path]:
        """Remove temporary folders that killed writers left in the kind folders; returns them.

        One directory listing per kind: cheap enough to run every time the store opens.
        """
        removed: List[Path] = []
        for kind_dir in sorted(p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")):
            removed.extend(_remove_stale(kind_dir))
        for path in removed:
            log.info("removed %s, left by an interrupted write", path)
        return removed

    def _dir(self, kind: str, key: str) -> Path:
        return self.root / kind.replace("/", "__") / key

    def get(self, kind: str, key: str) -> Optional[Artifact]:
        """The stored artifact when its record reads and every file matches its size and sha256.

        Anything else returns None so that ``get_or_compute`` recomputes and overwrites it; a
        damaged artifact is logged with the file at fault, an absent one is not.
        """
        folder = self._dir(kind, key)
        if not (folder / RECORD_NAME).exists():
            return None
        record, problem = read_record(folder)
        if record is None:
            log.warning("artifact %s does not verify and will be recomputed: %s", folder, problem)
            return None
        return Artifact(key=key, path=folder, record=record)

    def put(self, kind: str, key: str, record: Dict[str, Any], files: Mapping[str, Tuple[str, FileContent]]
            ) -> Artifact:
        """Write ``record`` and ``files`` (role -> (file name, bytes | text | writer)) atomically
        and durably, recording each file's size and sha256."""
        folder = self._dir(kind, key)
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=_temp_prefix(key), dir=folder.parent))
        try:
            names: Dict[str, str] = {}
            checks: Dict[str, Dict[str, Any]] = {}
            for role, (name, content) in files.items():
                target = tmp / name
                if callable(content):
                    content(target)
                    checks[role] = _sync_and_measure(target)
                else:
                    # UTF-8 always, not the locale's encoding: the bytes must not depend on the machine.
                    data = content.encode("utf-8") if isinstance(content, str) else bytes(content)
                    _write_synced(target, data)
                    checks[role] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
                names[role] = name
            # No timestamps in records: the same inputs give byte-identical artifacts.
            full = {**_canonical(record), "kind": kind, "key": key, "files": names, INTEGRITY_KEY: checks}
            record_bytes = json.dumps(full, indent=1, sort_keys=True).encode()
            _write_synced(tmp / RECORD_NAME, record_bytes)
            _fsync_dir(tmp)  # the file names inside it, before it is published
            old = None
            if folder.exists():
                # A damaged or incomplete earlier attempt: moved aside rather than deleted first, so
                # a kill between the two renames leaves a temporary name that is cleaned later.
                old = tmp.with_name(tmp.name + "-old")
                os.replace(folder, old)
            os.replace(tmp, folder)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        _fsync_dir(folder.parent)  # the rename itself
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        # The record as a reader will see it (JSON types), without reading it back from disk.
        return Artifact(key=key, path=folder, record=json.loads(record_bytes))

    def get_or_compute(self, kind: str, key: str,
                       compute: Callable[[], Tuple[Dict[str, Any], Mapping[str, Tuple[str, FileContent]]]]
                       ) -> Tuple[Artifact, bool]:
        """The stored artifact, or compute, store and return it; the flag says whether it was computed."""
        found = self.get(kind, key)
        if found is not None:
            self.stats.reused.append(f"{kind}/{key}")
            return found, False
        record, files = compute()
        artifact = self.put(kind, key, record, files)
        self.stats.computed.append(f"{kind}/{key}")
        return artifact, True


def write_json_atomic(path: Path, value: Any) -> None:
    """Replace ``path`` with ``value`` as JSON, all or nothing, surviving a power cut."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Serialise first: a value that cannot be written then leaves nothing behind.
    data = json_bytes(value)
    _remove_stale(path.parent, prefix=f".{path.name}.")
    fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path.name), dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(path.parent)
