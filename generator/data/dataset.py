"""The in-memory dataset every method reads from."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np


@dataclass
class ImageItem:
    """One image as uint8 ``H x W x C`` (C = 1 or 3) with where it came from."""

    id: str
    pixels: np.ndarray
    label: Optional[int] = None
    title: str = ""
    source: str = ""
    licence: str = ""


@dataclass
class Dataset:
    """A list of images, optional labels and class names, and what was skipped while loading.

    Images of one dataset may differ in size (photos); the model's preprocessing resizes them.
    """

    id: str
    source: str
    items: List[ImageItem]
    class_names: List[str] = field(default_factory=list)
    description: str = ""
    licence: str = ""
    skipped: List[Tuple[str, str]] = field(default_factory=list)  # (file, reason)
    _digest: Optional[str] = None

    def __len__(self) -> int:
        return len(self.items)

    @property
    def has_labels(self) -> bool:
        return all(item.label is not None for item in self.items) and len(self.items) > 0

    def labels(self) -> np.ndarray:
        return np.array([-1 if it.label is None else it.label for it in self.items], dtype=np.int64)

    def digest(self) -> str:
        """sha256 over every image's bytes, shape and label: part of every artifact key."""
        if self._digest is None:
            h = hashlib.sha256()
            for it in self.items:
                h.update(it.id.encode())
                h.update(str(it.pixels.shape).encode())
                h.update(np.ascontiguousarray(it.pixels).tobytes())
                h.update(str(it.label).encode())
            self._digest = h.hexdigest()
        return self._digest

    def subset(self, indices: List[int], suffix: str) -> "Dataset":
        """A dataset of the chosen items (same class names), with its own id."""
        return Dataset(
            id=f"{self.id}{suffix}", source=self.source, items=[self.items[i] for i in indices],
            class_names=self.class_names, description=self.description, licence=self.licence,
        )

    def summary(self) -> Dict[str, object]:
        return {
            "id": self.id, "source": self.source, "count": len(self), "class_names": self.class_names,
            "description": self.description, "licence": self.licence,
            "skipped": [{"file": f, "reason": r} for f, r in self.skipped],
            "items": [{"id": it.id, "title": it.title, "source": it.source, "licence": it.licence,
                       "label": it.label, "shape": list(it.pixels.shape)} for it in self.items[:50]],
        }
