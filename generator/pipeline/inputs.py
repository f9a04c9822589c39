"""Model inputs for a (model, dataset) pair, computed once per run and shared by stages.

Two ways in: :func:`displayed` stacks the first few images (what the pages show, cached), and
:func:`display_batches` / :class:`DisplayRows` read any number of rows in batches, decoding
files in DataLoader worker processes, so a scan over a folder of 50,000 photos holds one batch
at a time instead of the whole folder.
"""

from __future__ import annotations

import os
from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from generator.data.dataset import Dataset
from generator.engine.preprocess import batches, display_images, match_channels, normalise, resize_and_crop
from generator.models.spec import ModelSpec

_CACHE: Dict[Tuple[str, str, str], np.ndarray] = {}

# Batches a scan decodes ahead of the model, per worker (DataLoader's prefetch_factor): enough
# to keep the model fed, few enough that memory stays a handful of batches.
_PREFETCH = 2


def displayed(spec: ModelSpec, dataset: Dataset, limit: int) -> np.ndarray:
    """uint8 ``N x H x W x C`` of the first ``limit`` images as the model sees them (cached).

    For the few images pages show; a pass over a whole dataset uses :func:`display_batches`.
    """
    key = (spec.weights_digest + repr((spec.input_size, spec.resize, spec.interpolation)), dataset.digest(), str(limit))
    if key not in _CACHE:
        _CACHE[key] = display_images([it.pixels for it in dataset.items[:limit]], spec)
    return _CACHE[key]


def clear_input_cache() -> None:
    _CACHE.clear()


def model_input(spec: ModelSpec, display: np.ndarray, device: torch.device) -> torch.Tensor:
    return normalise(display, spec, device)


def item_ids(dataset: Dataset, limit: int) -> List[str]:
    return [it.id for it in dataset.items[:limit]]


def scan_workers(dataset: Dataset, rows: int, batch_size: int) -> int:
    """Decoding processes for a scan of ``rows`` rows: none for arrays already in memory or a
    single batch (starting a worker costs more than it saves), else one per core up to four
    (decoding, not the model, is what a scan of files waits on; ``MODELCARD_DATA_WORKERS``
    overrides)."""
    if not dataset.lazy or rows <= batch_size:
        return 0
    env = os.environ.get("MODELCARD_DATA_WORKERS")
    if env is not None:
        # An escape hatch for machines where forking is unwelcome (notebooks, some clusters).
        if not env.strip().isdigit():
            raise ValueError(f"MODELCARD_DATA_WORKERS must be a whole number >= 0, got {env!r}")
        return int(env)
    return min(4, os.cpu_count() or 1)


class _DisplayRowsData(torch.utils.data.Dataset):
    """Row ``j`` -> the displayed pixels of dataset item ``rows[j]`` (decoded in a worker)."""

    def __init__(self, spec: ModelSpec, dataset: Dataset, rows: np.ndarray) -> None:
        self.spec, self.items, self.rows = spec, dataset.items, rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, j: int) -> np.ndarray:
        # cache=False: a scan touches every file once; keeping them would only evict the few
        # images pages ask for again.
        pixels = self.items[int(self.rows[j])].decode(cache=False)
        return resize_and_crop(match_channels(pixels, self.spec.channels), self.spec)


def _stack(batch: Sequence[np.ndarray]) -> np.ndarray:
    return np.stack(batch)


def display_batches(spec: ModelSpec, dataset: Dataset, rows: Optional[Sequence[int]] = None,
                    batch_size: int = 256, workers: Optional[int] = None
                    ) -> Iterator[Tuple[slice, np.ndarray]]:
    """``(slice into rows, uint8 B x H x W x C)`` for ``rows`` (default: every item), in order.

    Exactly the pixels :func:`displayed` gives for the same items. Files are decoded in
    ``workers`` DataLoader processes (default :func:`scan_workers`) while the caller runs the
    model on the previous batch; memory is a few batches whatever the number of rows.
    """
    index = np.arange(len(dataset)) if rows is None else np.asarray(rows, dtype=np.int64).reshape(-1)
    n = len(index)
    if n == 0:
        return
    workers = scan_workers(dataset, n, batch_size) if workers is None else workers
    if workers <= 0:
        for sl in batches(n, batch_size):
            yield sl, display_images([dataset.items[int(i)].decode(cache=False) for i in index[sl]], spec)
        return
    loader = torch.utils.data.DataLoader(
        _DisplayRowsData(spec, dataset, index), batch_size=batch_size, shuffle=False, num_workers=workers,
        collate_fn=_stack, prefetch_factor=_PREFETCH, persistent_workers=False)
    start = 0
    for display in loader:
        yield slice(start, start + len(display)), display
        start += len(display)


class DisplayRows:
    """Chosen rows of a dataset as the model sees them, without holding them.

    Behaves like the uint8 ``N x H x W x C`` array it stands for where the data stages need it:
    ``len``, indexing by a row list, array or slice (which decodes just those rows), and
    :meth:`batches` for a pass over all of them. An array already in memory (the Fashion-MNIST
    training split) can stand in through ``array``.
    """

    def __init__(self, spec: ModelSpec, dataset: Optional[Dataset] = None, rows: Optional[Sequence[int]] = None,
                 *, array: Optional[np.ndarray] = None) -> None:
        if (array is None) == (dataset is None):
            raise ValueError("DisplayRows needs either a dataset (and rows) or an array")
        self.spec, self.dataset, self.array = spec, dataset, array
        if array is None:
            assert dataset is not None
            self.rows = np.arange(len(dataset)) if rows is None else np.asarray(rows, dtype=np.int64).reshape(-1)
        else:
            self.rows = np.arange(len(array))

    def __len__(self) -> int:
        return len(self.rows)

    def _pick(self, key: Union[int, slice, Sequence[int], np.ndarray]) -> np.ndarray:
        picked = self.rows[key]
        return np.atleast_1d(picked)

    def __getitem__(self, key: Union[int, slice, Sequence[int], np.ndarray]) -> np.ndarray:
        if self.array is not None:
            return self.array[key]
        picked = self._pick(key)
        _, h, w = self.spec.input_size
        if len(picked) == 0:
            return np.zeros((0, h, w, self.spec.channels), np.uint8)
        assert self.dataset is not None
        out = display_images([self.dataset.items[int(i)].decode(cache=False) for i in picked], self.spec)
        return out[0] if np.ndim(key) == 0 and not isinstance(key, slice) else out

    def subset(self, key: Union[slice, Sequence[int], np.ndarray]) -> "DisplayRows":
        """The chosen rows of these rows, still unread."""
        if self.array is not None:
            return DisplayRows(self.spec, array=self.array[key])
        return DisplayRows(self.spec, self.dataset, self._pick(key))

    def batches(self, batch_size: int = 256) -> Iterator[Tuple[slice, np.ndarray]]:
        """``(slice, uint8 batch)`` over every row, in order (see :func:`display_batches`)."""
        if self.array is not None:
            for sl in batches(len(self.array), batch_size):
                yield sl, self.array[sl]
            return
        assert self.dataset is not None
        yield from display_batches(self.spec, self.dataset, self.rows, batch_size)

