"""The dataset every method reads from: a list of images, held as arrays or listed as files.

Sources whose images are arrays already (Fashion-MNIST, the bundled photos) hold their pixels.
A folder of files is *listed*, not loaded: each item keeps its path and decodes only when its
``pixels`` are asked for, so a folder of 50,000 photos costs a list of paths, not 50,000
decoded images. Whole-dataset scans read such a dataset in batches
(:func:`generator.pipeline.inputs.display_batches`).
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

from generator.data.imageio import ImageReadError, decoder_version, read_image

# Decoded pixels kept for files asked for again (the first shown images are read by several
# stages). Bounded in images and in bytes, so memory stays flat however large the folder is;
# whole-dataset scans bypass it (``ImageItem.decode(cache=False)``) so they cannot flush it.
DECODE_CACHE_IMAGES = 32
DECODE_CACHE_BYTES = 32 * 2**20
_CHUNK = 2**20  # file bytes hashed per read: digests never hold a whole file


class _DecodeCache:
    """A least-recently-used map ``(path, size, mtime) -> pixels`` bounded in count and bytes."""

    def __init__(self, images: int, limit: int) -> None:
        self.images, self.limit = images, limit
        self._arrays: "OrderedDict[Tuple[str, int, int], np.ndarray]" = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()  # DataLoader workers are processes, but a caller may use threads

    def get(self, key: Tuple[str, int, int]) -> Optional[np.ndarray]:
        with self._lock:
            arr = self._arrays.get(key)
            if arr is not None:
                self._arrays.move_to_end(key)
            return arr

    def put(self, key: Tuple[str, int, int], arr: np.ndarray) -> None:
        if arr.nbytes > self.limit:
            return
        with self._lock:
            if key in self._arrays:
                return
            self._arrays[key] = arr
            self._bytes += arr.nbytes
            while self._bytes > self.limit or len(self._arrays) > self.images:
                _, old = self._arrays.popitem(last=False)
                self._bytes -= old.nbytes

    def clear(self) -> None:
        with self._lock:
            self._arrays.clear()
            self._bytes = 0


_DECODED = _DecodeCache(DECODE_CACHE_IMAGES, DECODE_CACHE_BYTES)


def clear_decode_cache() -> None:
    """Forget every decoded file (tests; a long-lived process that edits its folders)."""
    _DECODED.clear()


class ImageItem:
    """One image as uint8 ``H x W x C`` (C = 1 or 3) with where it came from.

    Built either with ``pixels`` (an array, held) or with ``path`` (a file, decoded on each
    access through a small shared cache; ``shape`` then comes from the file's header and
    ``rel_path`` names the file inside its dataset's folder, for the digest).
    """

    __slots__ = ("id", "label", "title", "source", "licence", "path", "rel_path", "_pixels", "_shape")

    def __init__(self, id: str, pixels: Optional[np.ndarray] = None, label: Optional[int] = None,
                 title: str = "", source: str = "", licence: str = "", *, path: Optional[Path] = None,
                 rel_path: Optional[str] = None, shape: Optional[Tuple[int, int, int]] = None) -> None:
        if (pixels is None) == (path is None):
            raise ValueError(f"image {id!r}: give either pixels or a file path, not {'both' if path else 'neither'}")
        self.id, self.label, self.title, self.source, self.licence = id, label, title, source, licence
        self.path = None if path is None else Path(path)
        self.rel_path = rel_path if rel_path is not None else (None if path is None else Path(path).name)
        self._pixels = pixels
        self._shape = None if shape is None else tuple(int(v) for v in shape)

    @property
    def lazy(self) -> bool:
        """True when the pixels live in a file and are decoded on demand."""
        return self._pixels is None

    @property
    def pixels(self) -> np.ndarray:
        """uint8 ``H x W x C``; a file is decoded now (or taken from the bounded cache, read-only)."""
        return self.decode(cache=True)

    def decode(self, cache: bool = True) -> np.ndarray:
        """The pixels; for a file, ``cache=False`` still uses a cached copy but adds none
        (what a scan over every image wants). Raises ImageReadError naming the file."""
        if self._pixels is not None:
            return self._pixels
        assert self.path is not None
        try:
            st = self.path.stat()
        except OSError as exc:
            raise ImageReadError(f"{self.path}: listed with the dataset but no longer readable "
                                 f"({type(exc).__name__}: {exc})") from None
        key = (str(self.path), st.st_size, st.st_mtime_ns)
        arr = _DECODED.get(key)
        if arr is None:
            arr = read_image(self.path)
            # Read-only: a cached array is shared by every later caller.
            arr.flags.writeable = False
            if cache:
                _DECODED.put(key, arr)
        return arr

    @property
    def shape(self) -> Tuple[int, ...]:
        """``(H, W, C)`` without decoding a file (its header was read when it was listed)."""
        if self._pixels is not None:
            return tuple(self._pixels.shape)
        if self._shape is None:
            self._shape = tuple(self.pixels.shape)
        return self._shape

    def update_digest(self, h: "hashlib._Hash") -> None:
        """Feed what determines this image's pixels and label into ``h``.

        An array: its id, shape, bytes and label (the digest arrays always had). A file: its id,
        path inside the folder, its bytes streamed in chunks (never decoded, never held whole)
        and its label; the decoder's version is hashed once per dataset by :meth:`Dataset.digest`.
        """
        if self._pixels is not None:
            h.update(self.id.encode())
            h.update(str(self._pixels.shape).encode())
            h.update(np.ascontiguousarray(self._pixels).tobytes())
            h.update(str(self.label).encode())
            return
        assert self.path is not None
        h.update(b"file\0")
        h.update(self.id.encode() + b"\0")
        h.update(str(self.rel_path).encode() + b"\0")
        size = 0
        with open(self.path, "rb") as f:
            for chunk in iter(lambda: f.read(_CHUNK), b""):
                h.update(chunk)
                size += len(chunk)
        # The length closes the byte run, so no two files can be split differently into one stream.
        h.update(f"\0{size}\0{self.label}".encode())

    def __repr__(self) -> str:
        where = f"path={str(self.path)!r}" if self.lazy else f"pixels=<{self.shape}>"
        return f"ImageItem(id={self.id!r}, {where}, label={self.label!r}, title={self.title!r})"

    def __getstate__(self) -> Dict[str, object]:
        # __slots__ classes pickle through this (DataLoader workers under spawn/forkserver).
        return {k: getattr(self, k) for k in self.__slots__}

    def __setstate__(self, state: Dict[str, object]) -> None:
        for k, v in state.items():
            setattr(self, k, v)


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

    @property
    def lazy(self) -> bool:
        """True when some images are files decoded on demand: scans should read in batches."""
        return any(it.lazy for it in self.items)

    def labels(self) -> np.ndarray:
        return np.array([-1 if it.label is None else it.label for it in self.items], dtype=np.int64)

    def digest(self) -> str:
        """sha256 over what determines every image and label: part of every artifact key.

        Arrays are hashed as pixels; files as their bytes, path and the decoder's version, so a
        folder is keyed without decoding it and with one chunk of one file in memory at a time.
        """
        if self._digest is None:
            h = hashlib.sha256()
            if self.lazy:
                # Only for datasets with files, so array datasets keep the digests they had.
                h.update(f"decoder: {decoder_version()}\0".encode())
            for it in self.items:
                it.update_digest(h)
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
                       "label": it.label, "shape": list(it.shape)} for it in self.items[:50]],
        }
