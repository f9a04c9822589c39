"""Frequent itemset mining over a boolean matrix, vectorised level by level (Apriori,
Agrawal & Srikant 1994).

Level ``k`` extends every frequent ``(k-1)``-itemset ``I`` by every frequent item ``c`` larger
than ``I``'s last item and counts ``|cover(I) & X[:, c]|`` for all pairs at once with one
matrix product ``cover(I)^T X`` (float32 counts are exact below 2^24 examples). Every frequent
``k``-itemset is reached this way, because its first ``k-1`` items form a frequent itemset
(downward closure), so no separate candidate-pruning pass is needed: the counts are exact.
"""

from __future__ import annotations

from typing import List, Optional, Tuple

import numpy as np
import torch

__all__ = ["frequent_itemsets", "itemset_cover"]


def _min_count(min_support: float, n: int) -> int:
    """``min_support`` < 1 is a fraction of ``n``; >= 1 an absolute count."""
    if min_support < 1:
        return max(1, int(np.ceil(min_support * n - 1e-9)))
    return int(min_support)


def itemset_cover(X: np.ndarray, itemsets: List[Tuple[int, ...]]) -> np.ndarray:
    """Boolean ``(len(itemsets), N)``: which rows contain every item of each itemset."""
    X = np.asarray(X, dtype=bool)
    out = np.ones((len(itemsets), X.shape[0]), dtype=bool)
    for i, its in enumerate(itemsets):
        for f in its:
            out[i] &= X[:, f]
    return out


def frequent_itemsets(
    X: np.ndarray,
    min_support: float = 0.05,
    max_len: int = 2,
    *,
    chunk: int = 512,
    max_itemsets: Optional[int] = None,
) -> Tuple[List[Tuple[int, ...]], np.ndarray]:
    """All itemsets (sorted tuples of column indices) of length 1..``max_len`` contained in at
    least ``min_support`` rows (a fraction, or a count if >= 1), with their counts.

    Ordered by length, then lexicographically. ``max_itemsets`` stops early (after a full
    level) if the number found exceeds it.
    """
    X = np.asarray(X, dtype=bool)
    n, F = X.shape
    mc = _min_count(min_support, n)
    Xf = torch.from_numpy(X.astype(np.float32))
    counts1 = Xf.sum(0)
    items = torch.nonzero(counts1 >= mc).flatten()  # frequent single items, increasing
    result: List[Tuple[int, ...]] = [(int(i),) for i in items]
    supports: List[int] = [int(counts1[i]) for i in items]
    if max_len < 2 or len(items) < 2:
        return result, np.asarray(supports, dtype=np.int64)

    Xi = Xf[:, items]  # (N, F1)
    level = [(int(i),) for i in items]  # itemsets of the current level, in original indices
    pos = {int(f): p for p, f in enumerate(items.tolist())}  # item -> column of Xi
    for _size in range(2, max_len + 1):
        if not level or (max_itemsets is not None and len(result) > max_itemsets):
            break
        new_level: List[Tuple[int, ...]] = []
        new_sup: List[int] = []
        for s in range(0, len(level), chunk):
            block = level[s : s + chunk]
            # cover of each (k-1)-itemset as a float column
            P = torch.ones((n, len(block)), dtype=torch.float32)
            for b, its in enumerate(block):
                for f in its:
                    P[:, b] *= Xi[:, pos[f]]
            C = P.T @ Xi  # (block, F1): |cover(I) & item|
            last = torch.tensor([pos[its[-1]] for its in block])
            valid = (torch.arange(len(items))[None, :] > last[:, None]) & (C >= mc)
            bi, ci = torch.nonzero(valid, as_tuple=True)
            for b, c, v in zip(bi.tolist(), ci.tolist(), C[bi, ci].tolist()):
                new_level.append(block[b] + (int(items[c]),))
                new_sup.append(int(round(v)))
        order = sorted(range(len(new_level)), key=lambda i: new_level[i])
        level = [new_level[i] for i in order]
        result += level
        supports += [new_sup[i] for i in order]
    return result, np.asarray(supports, dtype=np.int64)
