"""Reading the run's manifest and artifacts back (numpy and JSON only)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

from generator.artifacts.store import Artifact


class ManifestMissing(FileNotFoundError):
    pass


@dataclass
class Manifest:
    root: Path  # artifacts folder
    data: Dict[str, Any]

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
            record = json.loads((folder / "record.json").read_text())
            out.append(Artifact(key=entry["key"], path=folder, record=record))
        return out

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
