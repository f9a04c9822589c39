"""Representation-similarity pages: for each dataset, how the layers of its models relate
(linear CKA, SVCCA, mutual k-NN) between every pair of models and within each model.

Reads the typed ``representation_similarity`` and ``representation_grams`` records
(:mod:`generator.records.similarity`); numpy and matplotlib only.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from generator.records.similarity import GramsRecord, SimilarityRecord
from generator.render import images as img
from generator.render.pages import PageBuilder, SiteContext, register_pages
from generator.render.pages.compare import model_title
from generator.render.text import slug

#: Below this many images a CKA value is noisy (its jackknife spread is typically 0.05-0.2):
#: the page says so in words.
FEW_IMAGES = 50
#: Up to this many layers a side, the heat-map cells carry their values.
ANNOTATE_MAX = 12
SCALE_LABEL = "similarity (0 = unrelated, 1 = identical)"


def _values(rows: Optional[Sequence[Sequence[Any]]]) -> np.ndarray:
    """A record matrix (null for undefined) as float64 with NaN."""
    if not rows:
        return np.zeros((0, 0))
    return np.array([[np.nan if v is None else float(v) for v in row] for row in rows], dtype=np.float64)


def _plain(text: str) -> str:
    # Layer names are data: a "$" must not switch matplotlib to mathtext.
    return str(text).replace("$", r"\$")


def heatmap(path: Path, values: np.ndarray, rows: Sequence[str], cols: Sequence[str], *, title: str,
            ylabel: str, xlabel: str) -> None:
    """A layer x layer heat map on a fixed 0-1 scale with a labelled colour bar; undefined
    cells are grey and hatched, values are written in the cells when there are few."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_rows, n_cols = values.shape
    fig, ax = plt.subplots(figsize=(min(2.8 + 0.42 * n_cols, 11), min(2.2 + 0.36 * n_rows, 10)))
    cmap = matplotlib.colormaps[img.UNSIGNED_CMAP].with_extremes(bad="#d9d9d9")
    masked = np.ma.masked_invalid(values)
    shown = ax.imshow(masked, cmap=cmap, vmin=0.0, vmax=1.0, aspect="auto", interpolation="nearest")
    for i, j in zip(*np.nonzero(~np.isfinite(values))):
        ax.add_patch(matplotlib.patches.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, hatch="//",
                                                  edgecolor="#999999", linewidth=0))
    ax.set_xticks(range(n_cols), [_plain(c) for c in cols], rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(n_rows), [_plain(r) for r in rows], fontsize=7)
    ax.set_xlabel(_plain(xlabel))
    ax.set_ylabel(_plain(ylabel))
    ax.set_title(_plain(title), fontsize=9)
    if max(n_rows, n_cols) <= ANNOTATE_MAX:
        for i in range(n_rows):
            for j in range(n_cols):
                v = values[i, j]
                if math.isfinite(v):
                    ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=6,
                            color="black" if v > 0.6 else "white")
    bar = fig.colorbar(shown, ax=ax, fraction=0.05, pad=0.03)
    bar.set_label(SCALE_LABEL, fontsize=8)
    bar.set_ticks([0, 0.25, 0.5, 0.75, 1.0])
    img.save_figure(path, fig)


def _finite(v: float) -> Optional[float]:
    return float(v) if math.isfinite(v) else None


def correspondence(cka: np.ndarray, spread: Optional[np.ndarray], layers_a: Sequence[str],
                   layers_b: Sequence[str]) -> List[Dict[str, Any]]:
    """For each layer of A, the layer of B with the highest CKA (None where its row is undefined)
    and the runner-up's margin, so a reader sees whether the best match stands out."""
    out: List[Dict[str, Any]] = []
    for i, name in enumerate(layers_a):
        row = cka[i]
        ok = np.isfinite(row)
        if not ok.any():
            out.append({"layer": name, "match": None, "cka": None, "spread": None, "margin": None})
            continue
        j = int(np.nanargmax(np.where(ok, row, -np.inf)))
        others = np.delete(row, j)
        others = others[np.isfinite(others)]
        out.append({"layer": name, "match": layers_b[j], "index": j, "cka": float(row[j]),
                    "spread": _finite(spread[i, j]) if spread is not None else None,
                    "margin": float(row[j] - others.max()) if others.size else None})
    return out


def _monotone(matches: List[Dict[str, Any]]) -> Optional[bool]:
    """Whether the best matches keep the depth order (deeper layer of A -> same or deeper of B)."""
    idx = [m["index"] for m in matches if m["match"] is not None]
    if len(idx) < 2:
        return None
    return all(a <= b for a, b in zip(idx, idx[1:]))


def _pair_view(site: SiteContext, art: Any) -> Dict[str, Any]:
    rec: SimilarityRecord = art.rec
    title_a, title_b = model_title(site, rec.model_a), model_title(site, rec.model_b)
    cka, spread = _values(rec.cka), (_values(rec.cka_spread) if rec.cka_spread is not None else None)
    svcca, knn = _values(rec.svcca), _values(rec.knn)
    figures = {}
    for name, values, what in (("cka", cka, "linear CKA"), ("svcca", svcca, "SVCCA (mean canonical correlation)"),
                               ("knn", knn, f"mutual {rec.params.knn_k}-NN alignment")):
        figures[name] = site.writer.figure(
            f"assets/gen/{art.key}/{name}.png",
            lambda p, values=values, what=what: heatmap(p, values, rec.layers_a, rec.layers_b,
                                                        title=f"{what}, {len(rec.images)} images",
                                                        ylabel=f"layer of {title_a}", xlabel=f"layer of {title_b}"))
    matches = correspondence(cka, spread, rec.layers_a, rec.layers_b)
    n = len(rec.images)
    layers = [{"model": title_a, "layer": layer, "dims": d, "reduction": r, "svcca_dims": k}
              for layer, d, r, k in zip(rec.layers_a, rec.dims_a, rec.reduction_a, rec.svcca_dims_a)]
    layers += [{"model": title_b, "layer": layer, "dims": d, "reduction": r, "svcca_dims": k}
               for layer, d, r, k in zip(rec.layers_b, rec.dims_b, rec.reduction_b, rec.svcca_dims_b)]
    return {"record": rec, "title_a": title_a, "title_b": title_b, "figures": figures, "matches": matches,
            "monotone": _monotone(matches), "svcca_undefined": int(np.isnan(svcca).sum()),
            "svcca_cells": int(svcca.size), "knn_chance": rec.params.knn_k / max(n - 1, 1), "layers": layers,
            "spread_max": float(np.nanmax(spread)) if spread is not None and np.isfinite(spread).any() else None}


def _within_view(site: SiteContext, art: Any) -> Dict[str, Any]:
    rec: GramsRecord = art.rec
    title = model_title(site, rec.model)
    cka = _values(rec.cka)
    figure = site.writer.figure(
        f"assets/gen/{art.key}/cka.png",
        lambda p: heatmap(p, cka, rec.layers, rec.layers, title=f"linear CKA within {title}, {len(rec.images)} images",
                          ylabel=f"layer of {title}", xlabel=f"layer of {title}"))
    neighbours = [{"a": rec.layers[i], "b": rec.layers[i + 1], "cka": _finite(cka[i, i + 1])}
                  for i in range(len(rec.layers) - 1)]
    return {"record": rec, "title": title, "figure": figure, "neighbours": neighbours}


def similarity_pages(site: SiteContext) -> List[Any]:
    manifest, writer = site.manifest, site.writer
    nav: List[Any] = []
    for ds_id in manifest.datasets:
        pairs = manifest.find("representation_similarity", dataset=ds_id)
        within = manifest.find("representation_grams", dataset=ds_id)
        if not pairs and not within:
            continue
        pair_views = [_pair_view(site, art) for art in pairs]
        within_views = [_within_view(site, art) for art in within]
        counts = sorted({len(v["record"].images) for v in pair_views + within_views})
        dc = next((d for d in site.config.datasets if d.id == ds_id), None)
        title = (dc.title or dc.id) if dc is not None else ds_id
        page = f"compare/{slug(ds_id)}/similarity.md"
        writer.page(page, "compare_similarity.md.j2", dataset=title, pairs=pair_views, within=within_views,
                    counts=counts, few=min(counts) < FEW_IMAGES if counts else False, few_threshold=FEW_IMAGES)
        nav.append({f"Representation similarity: {title}": page})
    return nav


# Before the "compare" builder (order 800) of the same section, which links to these pages.
register_pages(PageBuilder(name="similarity", order=790, section="Compare", build=similarity_pages))
