"""Reading the run's manifest and artifacts back (numpy, JSON and pydantic only: no torch).

The manifest is checked against the schema this modelcard reads before anything else: one
written by another version is refused with one line saying to run ``modelcard run`` again
(:class:`ManifestOutdated`). Each artifact found here carries its JSON record (``record``) and,
parsed on first use, its typed record (``rec``, see :mod:`generator.records`): page code reads
fields as attributes of ``rec``, so a renamed or missing field stops the render at that first
use with a line naming the artifact and the field, instead of inside a Jinja template.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Set

from generator.artifacts.store import RECORD_NAME, Artifact, CorruptArtifact, read_record
from generator.records import (
    ManifestEntry,
    ManifestOutdated,
    ManifestRecord,
    Record,
    RecordError,
    check_manifest,
    parse_record,
)

__all__ = ["CorruptArtifact", "Manifest", "ManifestMissing", "ManifestOutdated", "RecordError", "TypedArtifact"]

RERUN = "Run `modelcard run` again to recompute it with this version of modelcard."


class ManifestMissing(FileNotFoundError):
    pass


@dataclass
class TypedArtifact(Artifact):
    """An artifact listed in the manifest: ``record`` is its JSON record (a fresh dict),
    ``rec`` its typed record, ``labels`` what the manifest lists it under."""

    labels: Dict[str, Any] = field(default_factory=dict)
    _parse: Optional[Callable[[], Record]] = field(default=None, repr=False, compare=False)

    @property
    def rec(self) -> Any:
        """The typed record (a :class:`generator.records.Record` subclass for this kind).

        Typed ``Any`` so page code reads the kind's own fields without a cast per page.
        """
        if self._parse is None:
            return parse_record(self.kind, self.record, where=f"artifact {self.kind}/{self.key} ({self.path})",
                                hint=RERUN)
        return self._parse()


def _label(entry: ManifestEntry, name: str) -> Any:
    return getattr(entry, name) if name in ("kind", "key", "path") else entry.labels.get(name)


@dataclass
class Manifest:
    root: Path  # artifacts folder
    data: Dict[str, Any]  # manifest.json as read
    record: ManifestRecord  # the same, typed and checked (see ``load``)
    # Artifact folders whose files were already hashed: pages look the same artifact up many
    # times, and each file only needs checking once per render.
    _verified: Set[Path] = field(default_factory=set, repr=False, compare=False)
    # Typed records by folder: parsed once, shared by every lookup (they are read-only).
    _typed: Dict[Path, Record] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def load(cls, work_dir: Path) -> "Manifest":
        path = work_dir / "manifest.json"
        if not path.exists():
            raise ManifestMissing(f"{path} does not exist: run `modelcard run` (or `modelcard build`) first")
        try:
            data = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ManifestOutdated(f"{path} cannot be read ({type(exc).__name__}: {exc}); run `modelcard run` again "
                                   "to write it anew") from None
        return cls(root=work_dir / "artifacts", data=data, record=check_manifest(data, where=str(path)))

    def find(self, kind: str, **labels: Any) -> List[TypedArtifact]:
        out = []
        for entry in self.record.artifacts:
            if entry.kind != kind or any(_label(entry, k) != v for k, v in labels.items()):
                continue
            folder = self.root / entry.path
            out.append(TypedArtifact(key=entry.key, path=folder, record=self._record(folder), labels=entry.labels,
                                     _parse=functools.partial(self._typed_record, folder, entry.kind, entry.key)))
        return out

    def _record(self, folder: Path) -> Dict[str, Any]:
        """The verified record of an artifact the manifest lists.

        A file that no longer matches its recorded size and sha256 stops the render here with
        the file named, instead of failing later inside numpy or zipfile with an error that
        names nothing (``EOFError: No data left in file`` for a truncated ``.npz``).
        """
        if folder in self._verified:
            # A fresh copy on every lookup, as before, so a page that edits a record edits only its own.
            return json.loads((folder / RECORD_NAME).read_text())
        record, problem = read_record(folder)
        if record is None:
            raise CorruptArtifact(f"artifact {folder} is damaged or incomplete: {problem}. "
                                  "Run `modelcard run` again to recompute it.")
        self._verified.add(folder)
        return record

    def _typed_record(self, folder: Path, kind: str, key: str) -> Record:
        """The typed record of a listed artifact, parsed on first use; a record that does not fit
        its kind's schema raises :class:`RecordError` naming the artifact and the field."""
        if folder not in self._typed:
            self._typed[folder] = parse_record(kind, self._record(folder), where=f"artifact {kind}/{key} ({folder})",
                                               hint=RERUN)
        return self._typed[folder]

    def one(self, kind: str, **labels: Any) -> Optional[TypedArtifact]:
        found = self.find(kind, **labels)
        return found[0] if found else None

    @property
    def models(self) -> List[str]:
        return list(self.record.models)

    @property
    def datasets(self) -> List[str]:
        return list(self.record.datasets)

    @property
    def pairs(self) -> List[List[str]]:
        return [list(p) for p in self.record.pairs]

    @property
    def failures(self) -> List[Dict[str, str]]:
        return [{"what": f.what, "why": f.why} for f in self.record.failures]
