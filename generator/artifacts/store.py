"""A content-addressed store of artifacts, safe against crashes.

An artifact is the result of one unit of work (one method on one model for one batch of
inputs): a JSON record plus files. Its key hashes everything that determines it (weights
digest, input digest, method name and version, parameters, seed), so work whose key exists is
reused: an interrupted run resumes, and changing one setting recomputes only what it affects.

Files are written into a temporary folder that is renamed into place at the end, so a crash
never leaves half an artifact behind. This module imports no torch: the renderer reads it.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple, Union

import numpy as np

FileContent = Union[bytes, str, Callable[[Path], None]]


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


class ArtifactStore:
    """Artifacts under ``root/<kind>/<key>/`` with ``record.json`` and the files it names."""

    def __init__(self, root: Union[str, Path]):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.stats = StoreStats()

    def _dir(self, kind: str, key: str) -> Path:
        return self.root / kind.replace("/", "__") / key

    def get(self, kind: str, key: str) -> Optional[Artifact]:
        folder = self._dir(kind, key)
        record_path = folder / "record.json"
        if not record_path.exists():
            return None
        try:
            record = json.loads(record_path.read_text())
        except (OSError, json.JSONDecodeError):
            return None  # unreadable: recompute rather than fail
        if not all((folder / name).exists() for name in record.get("files", {}).values()):
            return None
        return Artifact(key=key, path=folder, record=record)

    def put(self, kind: str, key: str, record: Dict[str, Any], files: Mapping[str, Tuple[str, FileContent]]
            ) -> Artifact:
        """Write ``record`` and ``files`` (role -> (file name, bytes | text | writer)) atomically."""
        folder = self._dir(kind, key)
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=folder.parent))
        try:
            names = {}
            for role, (name, content) in files.items():
                target = tmp / name
                if callable(content):
                    content(target)
                elif isinstance(content, str):
                    target.write_text(content)
                else:
                    target.write_bytes(content)
                names[role] = name
            # No timestamps in records: the same inputs give byte-identical artifacts.
            full = {**_canonical(record), "kind": kind, "key": key, "files": names}
            (tmp / "record.json").write_text(json.dumps(full, indent=1, sort_keys=True))
            if folder.exists():
                shutil.rmtree(folder)  # a stale, incomplete earlier attempt
            os.replace(tmp, folder)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return Artifact(key=key, path=folder, record=self.get(kind, key).record)

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
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "wb") as fh:
        fh.write(json_bytes(value))
    os.replace(tmp, path)
