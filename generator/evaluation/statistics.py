"""How much the evaluation's findings can be trusted: degenerate maps, spreads and bootstrap
intervals, whether a ranking is resolved, methods whose maps are the same, and the ROAR
mask-leak check.

Numpy only (no torch): the run records these figures and the renderer recomputes them for
records written before they existed, so ``modelcard render`` stays torch-free.

Every finding the evaluation pages state comes with its quality figure from here: a ranking
with the number of images, each method's per-image range and a bootstrap interval, and a plain
verdict when the images are too few or the intervals overlap.
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np

#: Below this many images the evaluation pages show an order but never call it a ranking.
MIN_IMAGES = 5
#: Bootstrap resamples and their fixed seed: the same numbers give the same interval on every
#: machine, so a page does not change between two renders of one run.
BOOTSTRAP = 2000
BOOTSTRAP_SEED = 0
CONFIDENCE = 0.95
#: A map whose range is at most this fraction of its largest magnitude is constant.
CONSTANT_TOLERANCE = 1e-5
#: Two methods whose maps correlate at least this much on every image are the same explanation.
IDENTICAL_CORRELATION = 0.995
#: ROAR: an accuracy this far above a reference (absolute, 0..1) counts as above it.
LEAK_MARGIN = 0.02


# --- degenerate maps ---------------------------------------------------------------------------

def map_problem(m: np.ndarray, tolerance: float = CONSTANT_TOLERANCE) -> str:
    """Why the deletion order of map ``m`` is arbitrary ('' when it is not): ``non-finite
    values``, ``all zero`` or ``constant`` (range at most ``tolerance`` times the largest
    magnitude). Sorting such a map orders its pixels by position (ties are broken by index), so
    its deletion and insertion curves describe the raster order, not the method."""
    v = np.asarray(m, dtype=np.float64).ravel()
    if v.size == 0:
        return "empty"
    if not np.isfinite(v).all():
        return "non-finite values"
    scale = float(np.abs(v).max())
    if scale == 0.0:
        return "all zero"
    if float(v.max() - v.min()) <= tolerance * scale:
        return "constant"
    return ""


def map_problems(maps: np.ndarray, tolerance: float = CONSTANT_TOLERANCE) -> List[str]:
    """:func:`map_problem` of every map of ``maps`` (N, H, W)."""
    return [map_problem(m, tolerance) for m in np.asarray(maps)]


def excluded_method(degenerate: int, n: int) -> bool:
    """A method is left out of the ranking when most of its maps (more than half) are degenerate:
    what would remain describes a few images chosen by the method's failures."""
    return n > 0 and 2 * degenerate > n


# --- spread and intervals ------------------------------------------------------------------------

def _finite(values: Sequence[Optional[float]]) -> np.ndarray:
    a = np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64)
    return a[np.isfinite(a)]


def bootstrap_interval(values: Sequence[float], *, resamples: int = BOOTSTRAP, confidence: float = CONFIDENCE,
                       seed: int = BOOTSTRAP_SEED) -> Optional[List[float]]:
    """Percentile bootstrap interval of the mean of ``values`` (None for fewer than 2 values).

    Deterministic: a fixed seed, so one set of numbers always gives one interval. With few
    values the interval is coarse (n = 2 gives the range); the pages say so through the verdict."""
    a = _finite(values)
    if a.size < 2 or resamples < 1:
        return None
    rng = np.random.default_rng(seed)
    means = a[rng.integers(0, a.size, size=(int(resamples), a.size))].mean(axis=1)
    tail = (1.0 - confidence) / 2
    return [float(np.quantile(means, tail)), float(np.quantile(means, 1.0 - tail))]


def spread(values: Sequence[Optional[float]], *, resamples: int = BOOTSTRAP, confidence: float = CONFIDENCE,
           seed: int = BOOTSTRAP_SEED) -> Dict[str, Any]:
    """n, mean, per-value min and max, and the bootstrap interval of the mean of the finite
    ``values`` (None entries are left out). Empty: n = 0 and None elsewhere."""
    a = _finite(values)
    ci = bootstrap_interval(a, resamples=resamples, confidence=confidence, seed=seed)
    return {"n": int(a.size), "mean": float(a.mean()) if a.size else None,
            "low": float(a.min()) if a.size else None, "high": float(a.max()) if a.size else None,
            "ci_low": ci[0] if ci else None, "ci_high": ci[1] if ci else None}


def _paired_lower(a: np.ndarray, b: np.ndarray, *, resamples: int, confidence: float, seed: int) -> Optional[float]:
    """Lower bound of the bootstrap interval of mean(a - b) over the entries both have."""
    keep = np.isfinite(a) & np.isfinite(b)
    ci = bootstrap_interval((a - b)[keep], resamples=resamples, confidence=confidence, seed=seed)
    return None if ci is None else ci[0]


def _round(v: Optional[float], digits: int = 6) -> Optional[float]:
    return None if v is None or not math.isfinite(v) else round(float(v), digits)


# --- selectivity ---------------------------------------------------------------------------------

def selectivity_statistics(auc: Mapping[str, Mapping[str, Sequence[float]]], methods: Sequence[str],
                           degenerate: Optional[Mapping[str, Sequence[int]]] = None, *,
                           min_images: int = MIN_IMAGES, resamples: int = BOOTSTRAP,
                           confidence: float = CONFIDENCE, seed: int = BOOTSTRAP_SEED) -> Dict[str, Any]:
    """Per-method figures and the ranking verdict of deletion / insertion.

    ``auc``: mode ('deletion', 'insertion') -> method -> per-image AUC; ``degenerate``: method
    -> indices of the images whose map is degenerate (left out of that method's figures). The
    score of an image is insertion AUC minus deletion AUC (higher is better for both).

    Returns ``{"summary": {method: {n, mean, low, high, ci_low, ci_high, mean_deletion,
    mean_insertion}}, "excluded": [methods], "ranking": [methods, best first],
    "verdict": {...}}``. The verdict is *resolved* only when every method has at least
    ``min_images`` images and each method's score is above the next one's with
    ``confidence`` (paired percentile bootstrap over the shared images). ``top_group`` lists the
    methods not separated from the best that way: the honest "winners" when the order is not
    resolved. ``reason``: ``resolved``, ``too_few_images``, ``overlap`` or ``nothing``.
    """
    degenerate = degenerate or {}
    n_images = max((len(v) for v in auc.get("deletion", {}).values()), default=0)
    scores: Dict[str, np.ndarray] = {}
    summary: Dict[str, Dict[str, Any]] = {}
    excluded: List[str] = []
    for m in methods:
        d = np.asarray(auc["deletion"][m], dtype=np.float64)
        i = np.asarray(auc["insertion"][m], dtype=np.float64)
        s = i - d
        bad = sorted({int(k) for k in degenerate.get(m, ()) if 0 <= int(k) < s.size})
        s_kept, d_kept, i_kept = s.copy(), d.copy(), i.copy()
        s_kept[bad] = np.nan
        d_kept[bad] = np.nan
        i_kept[bad] = np.nan
        scores[m] = s_kept
        fig = spread(s_kept, resamples=resamples, confidence=confidence, seed=seed)
        dd, ii = _finite(d_kept), _finite(i_kept)
        fig["mean_deletion"] = float(dd.mean()) if dd.size else None
        fig["mean_insertion"] = float(ii.mean()) if ii.size else None
        summary[m] = {k: (_round(v) if isinstance(v, float) else v) for k, v in fig.items()}
        if excluded_method(len(bad), s.size) or fig["n"] == 0:
            excluded.append(m)
    ranked = sorted((m for m in methods if m not in excluded), key=lambda m: -summary[m]["mean"])
    verdict: Dict[str, Any] = {"images": int(n_images), "min_images": int(min_images),
                               "confidence": confidence, "bootstrap": int(resamples),
                               "top_group": [], "separated": []}
    if not ranked:
        verdict.update(resolved=False, reason="nothing")
    else:
        top = scores[ranked[0]]
        verdict["top_group"] = [ranked[0]] + [
            m for m in ranked[1:]
            if not ((lo := _paired_lower(top, scores[m], resamples=resamples, confidence=confidence, seed=seed))
                    is not None and lo > 0)]
        verdict["separated"] = [
            bool((lo := _paired_lower(scores[a], scores[b], resamples=resamples, confidence=confidence, seed=seed))
                 is not None and lo > 0)
            for a, b in zip(ranked, ranked[1:])]
        fewest = min(summary[m]["n"] for m in ranked)
        if fewest < min_images:
            verdict.update(resolved=False, reason="too_few_images")
        elif not all(verdict["separated"]):
            verdict.update(resolved=False, reason="overlap")
        else:
            verdict.update(resolved=True, reason="resolved")
        verdict["fewest_images"] = int(fewest)
    return {"summary": summary, "excluded": excluded, "ranking": ranked, "verdict": verdict}


def identical_pairs(maps: Mapping[str, np.ndarray], usable: Optional[Mapping[str, Sequence[bool]]] = None, *,
                    threshold: float = IDENTICAL_CORRELATION) -> List[Dict[str, Any]]:
    """Pairs of methods whose maps are the same explanation: Pearson correlation of the two
    maps at least ``threshold`` on *every* image where both maps are usable (not degenerate),
    so one map is the other up to a positive scale and offset and deletion orders them alike.

    Found by comparing the numbers, never by the methods' names. Each pair:
    ``{"methods": [a, b], "images": n, "min_correlation", "max_relative_difference"}`` (the
    largest ``|a - b| / max(|a|, |b|)`` in the L2 norm over the images)."""
    names = list(maps)
    if len(names) < 2:
        return []
    arrays = [np.asarray(maps[m]) for m in names]
    n_images = min(len(a) for a in arrays)
    M = len(names)
    corr = np.full((n_images, M, M), np.nan)
    rel = np.full((n_images, M, M), np.nan)
    for i in range(n_images):
        # one image at a time, as Gram matrices: memory M x pixels, however many images
        raw = np.stack([a[i].astype(np.float64).ravel() for a in arrays])
        ok = np.isfinite(raw).all(axis=1)
        if usable is not None:
            ok &= np.array([bool(usable[m][i]) if m in usable and i < len(usable[m]) else True for m in names])
        raw = np.where(ok[:, None], raw, 0.0)
        centred = raw - raw.mean(axis=1, keepdims=True)
        norms = np.linalg.norm(centred, axis=1)
        ok &= norms > 0
        unit = centred / np.where(norms > 0, norms, 1.0)[:, None]
        gram = raw @ raw.T
        sq = np.diag(gram)
        both = ok[:, None] & ok[None, :]
        corr[i] = np.where(both, unit @ unit.T, np.nan)
        dist = np.sqrt(np.maximum(sq[:, None] + sq[None, :] - 2 * gram, 0.0))
        rel[i] = np.where(both, dist / np.maximum(np.sqrt(np.maximum(sq[:, None], sq[None, :])), 1e-300), np.nan)
    pairs: List[Dict[str, Any]] = []
    for a in range(M):
        for b in range(a + 1, M):
            c = corr[:, a, b]
            seen = np.isfinite(c)
            if not seen.any() or c[seen].min() < threshold:
                continue
            pairs.append({"methods": [names[a], names[b]], "images": int(seen.sum()),
                          "min_correlation": round(float(c[seen].min()), 6),
                          "max_relative_difference": round(float(np.nanmax(rel[:, a, b][seen])), 6)})
    return pairs


# --- a flag computed from per-image values (class sensitivity, sanity check) ---------------------

def flag_quality(values: Sequence[Optional[float]], threshold: float, *, min_images: int = MIN_IMAGES,
                 resamples: int = BOOTSTRAP, confidence: float = CONFIDENCE,
                 seed: int = BOOTSTRAP_SEED) -> Dict[str, Any]:
    """The spread of per-image values behind a "mean above threshold" flag and how firm the flag
    is: ``firm`` when there are at least ``min_images`` values and the bootstrap interval of the
    mean lies entirely on one side of ``threshold``; else ``verdict`` says why it is weak
    (``too_few_images`` or ``near_threshold``)."""
    fig = spread(values, resamples=resamples, confidence=confidence, seed=seed)
    if fig["n"] < min_images:
        fig.update(firm=False, verdict="too_few_images")
    elif fig["ci_low"] is not None and (fig["ci_low"] > threshold or fig["ci_high"] <= threshold):
        fig.update(firm=True, verdict="firm")
    else:
        fig.update(firm=False, verdict="near_threshold")
    return fig


# --- ROAR: does the removal mask leak the class? -------------------------------------------------

def binomial_se(accuracy: float, n: int) -> float:
    """Standard error of an accuracy measured on ``n`` test images (one training seed adds its
    own, larger, variation on top)."""
    if n <= 0 or not math.isfinite(accuracy):
        return float("nan")
    p = min(max(float(accuracy), 0.0), 1.0)
    return math.sqrt(p * (1.0 - p) / n)


def roar_leak(fractions: Sequence[float], reference: float, original: Optional[float],
              roar: Mapping[str, Sequence[float]], kar: Mapping[str, Sequence[float]], *,
              test_images: int, margin: float = LEAK_MARGIN, random: str = "random") -> Dict[str, Any]:
    """Signs that the pattern of removed pixels, not the pixels left, carries the class (a known
    ROAR artefact: Rong et al. 2022; the mask's shape, filled with one colour, draws the object).

    (a) ``above_reference``: a method's accuracy after removing (ROAR) or keeping only (KAR) a
    fraction of the pixels exceeds, by more than the margin, every retraining without a method's
    mask: the same retraining on unmodified images and every retraining with random masks
    (``bar``: the highest of them; the random masks carry no class, so they also show how far
    one retraining varies). Removing information cannot make a task easier, so the mask itself
    must inform the retrained model. ``above_original``: those also above the model the maps
    came from.
    (b) ``all_above_random``: at the largest removal fraction of at least 0.5, every method's
    ROAR accuracy is above the random ranking's by more than the margin: removing each
    method's *most* important pixels hurts less than removing random ones, the opposite of what
    ROAR assumes.

    The margin is ``max(margin, 2 x binomial standard error)`` of the reference accuracy on
    ``test_images``. ``leak`` is (a) or (b)."""
    se = binomial_se(reference, test_images)
    eff = max(float(margin), 2 * se if math.isfinite(se) else 0.0)
    randoms = [float(a) for table in (roar, kar) for a in table.get(random, [])]
    bar = max([float(reference)] + randoms)
    above: List[Dict[str, Any]] = []
    for mode, table in (("roar", roar), ("kar", kar)):
        for method, accs in table.items():
            if method == random:
                continue
            for f, acc in zip(fractions, accs):
                if acc > bar + eff:
                    above.append({"mode": mode, "method": method, "fraction": float(f), "accuracy": float(acc),
                                  "above_original": bool(original is not None and acc > original)})
    above.sort(key=lambda r: -r["accuracy"])
    high = [k for k, f in enumerate(fractions) if f >= 0.5]
    all_above: Optional[Dict[str, Any]] = None
    methods = [m for m in roar if m != random]
    if high and random in roar and methods:
        k = high[-1]
        rnd = float(roar[random][k])
        accs = {m: float(roar[m][k]) for m in methods}
        all_above = {"fraction": float(fractions[k]), "random": rnd, "lowest": min(accs.values()),
                     "highest": max(accs.values()),
                     "holds": all(a > rnd + eff for a in accs.values())}
    leak = bool(above) or bool(all_above and all_above["holds"])
    return {"leak": leak, "margin": round(eff, 6), "standard_error": _round(se), "bar": round(bar, 6),
            "random_best": round(max(randoms), 6) if randoms else None, "above_reference": above,
            "all_above_random": all_above}
