"""Reading the run's manifest and artifacts back (numpy and JSON only)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Set

from generator.artifacts.store import RECORD_NAME, Artifact, CorruptArtifact, read_record

__all__ = ["CorruptArtifact", "Manifest", "ManifestMissing"]


class ManifestMissing(FileNotFoundError):
    pass


@dataclass
class Manifest:
    root: Path  # artifacts folder
    data: Dict[str, Any]
    # Artifact folders whose files were already hashed: pages look the same artifact up many
    # times, and each file only needs checking once per render.
    _verified: Set[Path] = field(default_factory=set, repr=False, compare=False)

    @classmethod
    def load(cls, work_dir: Path) -> "Manifest":
        path = work_dir / "manifest.json"
        if not path.exists():
            raise ManifestMissing(f"{path} does not exist: run `modelcard run` (or `modelcard build`) first")
        return cls(root=work_dir / "artifacts", data=json.loads(path.read_text()))

    def find(self, kind: str, **labels: Any) -> List[Artifact]:
        out = []
        for entry in self.data.get("artifacts", []):
            if entry["kind"] != kind or any(entry.get(k) != v for k, v in labels.items()):
                continue
            folder = self.root / entry["path"]
            out.append(Artifact(key=entry["key"], path=folder, record=self._record(folder)))
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

    def one(self, kind: str, **labels: Any) -> Optional[Artifact]:
        found = self.find(kind, **labels)
        return found[0] if found else None

    @property
    def models(self) -> List[str]:
        return list(self.data.get("models", []))

    @property
    def datasets(self) -> List[str]:
        return list(self.data.get("datasets", []))

    @property
    def pairs(self) -> List[List[str]]:
        return list(self.data.get("pairs", []))

    @property
    def failures(self) -> List[Dict[str, str]]:
        return list(self.data.get("failures", []))
