"""Network dissection: which human concept each unit of a layer detects.

**With per-pixel concept masks** (Bau et al. 2017, "Network Dissection: Quantifying
Interpretability of Deep Visual Representations", CVPR). For unit u of a layer:

1. its threshold ``T_u`` is the top-quantile of its activations over the whole dataset
   (``quantile`` 0.995: the top 0.5 % of values), found by :class:`ThresholdSampler`;
2. on every image its activation map is upsampled (bilinear) to the mask resolution and
   binarised at ``T_u``;
3. ``IoU(u, c) = sum |M_u ∩ L_c| / sum |M_u ∪ L_c|``, both sums over the whole dataset
   (:class:`IoUAccumulator`), for every concept c with masks ``L_c``;
4. the unit is labelled with its best concept when that IoU passes ``iou_threshold`` (0.04 in
   the paper), and counted a detector of the concept's category (colour, texture, material,
   part, object, scene) in the layer's summary (:func:`label_units`, :func:`summarise`).

Concepts are accumulated over every image, including images where the concept is absent (its
mask empty there), so a unit firing on images without the concept is penalised as in the
paper's dataset-wide IoU.

**Quantiles, streaming.** Thresholds are exact quantiles of a *sample* of each unit's values:
each batch contributes a uniform random sample of its (image, position) cells, in proportion to
its size, up to ``max_samples`` values per unit in all; when the dataset has no more cells than
that, every value is kept and the threshold is exact. The threshold is the k-th largest sampled
value with ``k = ceil((1 - quantile) * samples)``.

**Without masks** (label-based, as INVERT: Bykov et al. 2023, "Labeling Neural
Representations with Inverse Recognition", NeurIPS): each unit's spatially pooled activation
is scored against image-level labels by the area under the ROC curve (:func:`rank_auc`,
ranks with ties averaged: equal to ``sklearn.metrics.roc_auc_score``), tested by the
Mann-Whitney normal approximation with a tie correction, and qualified by the lower bound of a
95 % confidence interval of the AUC (Hanley and McNeil 1982), the *label quality*: a high AUC
from three positive images is a weak label and its lower bound says so.

**Colour concepts** are labelled per pixel from hue, saturation and value
(:func:`colour_masks`), in the spirit of Broden's colour concepts, so every dataset gives
pixel-level colour dissection for free. **Fashion-MNIST parts** are derived geometrically from
each garment's silhouette (:func:`fashion_part_masks`). **Broden-format folders** are read by
:func:`load_broden`.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from generator.methods.concepts.stats import normal_two_sided_p

CATEGORIES = ("colour", "texture", "material", "part", "object", "scene")


# --- thresholds ----------------------------------------------------------------------------------

class ThresholdSampler:
    """Top-quantile thresholds of every unit over a dataset, streamed batch by batch."""

    def __init__(self, total_cells: int, quantile: float = 0.995, max_samples: int = 200_000, seed: int = 0):
        if not 0 < quantile < 1:
            raise ValueError(f"quantile must be between 0 and 1, got {quantile}")
        self.total = int(total_cells)  # images x positions over the whole dataset
        self.quantile = quantile
        self.max_samples = int(max_samples)
        self.gen = torch.Generator().manual_seed(int(seed))
        self.parts: List[torch.Tensor] = []
        self.exact = self.total <= self.max_samples

    def add(self, acts: torch.Tensor) -> None:
        """``acts``: ``B x U x h x w`` (or ``B x U``)."""
        values = acts.float().reshape(acts.shape[0], acts.shape[1], -1).transpose(0, 1).reshape(acts.shape[1], -1)
        if not self.exact:
            share = max(1, int(math.ceil(self.max_samples * values.shape[1] / self.total)))
            pick = torch.randperm(values.shape[1], generator=self.gen)[:share].to(values.device)
            values = values[:, pick]
        self.parts.append(values)

    def thresholds(self) -> torch.Tensor:
        values = torch.cat(self.parts, dim=1)
        k = max(1, int(math.ceil((1 - self.quantile) * values.shape[1] - 1e-9)))
        return torch.topk(values, k, dim=1).values[:, -1]


# --- IoU -------------------------------------------------------------------------------------------

class IoUAccumulator:
    """Dataset-wide intersection and union of every unit's binarised map with every concept mask."""

    def __init__(self, units: int, concepts: int, device: torch.device | str = "cpu", chunk_cells: int = 2 ** 24):
        self.inter = torch.zeros(units, concepts, dtype=torch.float64, device=device)
        self.unit_area = torch.zeros(units, dtype=torch.float64, device=device)
        self.concept_area = torch.zeros(concepts, dtype=torch.float64, device=device)
        self.chunk_cells = chunk_cells

    def add(self, acts: torch.Tensor, thresholds: torch.Tensor, masks: torch.Tensor) -> None:
        """``acts``: ``B x U x h x w``; ``thresholds``: ``U``; ``masks``: ``B x K x H x W`` bool."""
        b, u = acts.shape[:2]
        size = masks.shape[-2:]
        # a sub-batch of images at a time: B x H x W x U binary maps can be gigabytes
        step = max(1, self.chunk_cells // max(1, u * size[0] * size[1]))
        masks = masks.to(acts.device)
        thresholds = thresholds.to(acts.device).float()
        for i in range(0, b, step):
            a = acts[i:i + step].float()
            if tuple(a.shape[-2:]) != tuple(size):
                a = F.interpolate(a, size=size, mode="bilinear", align_corners=False)
            on = (a > thresholds[None, :, None, None]).float()  # b' x U x H x W
            m = masks[i:i + step].float()  # b' x K x H x W
            # per-chunk counts stay below 2^24, where float32 counts are exact; totals in float64
            self.inter += torch.einsum("buhw,bkhw->uk", on, m).double()
            self.unit_area += on.sum((0, 2, 3)).double()
            self.concept_area += m.sum((0, 2, 3)).double()

    def iou(self) -> torch.Tensor:
        union = self.unit_area[:, None] + self.concept_area[None, :] - self.inter
        return torch.where(union > 0, self.inter / union.clamp_min(1), torch.zeros_like(union))


def slow_iou(acts: np.ndarray, thresholds: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Reference for tests: ``U x K`` IoU, one unit, concept and image at a time (numpy loops,
    upsampling by torch's bilinear per single map)."""
    n, units = acts.shape[:2]
    k = masks.shape[1]
    inter = np.zeros((units, k))
    union = np.zeros((units, k))
    for u in range(units):
        for i in range(n):
            a = torch.from_numpy(acts[i, u][None, None].astype(np.float32))
            up = F.interpolate(a, size=masks.shape[-2:], mode="bilinear", align_corners=False)[0, 0].numpy()
            on = up > thresholds[u]
            for c in range(k):
                inter[u, c] += np.logical_and(on, masks[i, c]).sum()
                union[u, c] += np.logical_or(on, masks[i, c]).sum()
    return np.where(union > 0, inter / np.maximum(union, 1), 0.0)


@dataclass
class UnitLabel:
    unit: int
    concept: Optional[str]  # None: no concept passes the threshold
    category: Optional[str]
    score: float  # IoU (mask dissection) or AUC (label dissection) of the best concept
    best: str  # the best concept, even when below the threshold
    extra: Dict[str, float]


def label_units(iou: torch.Tensor, names: Sequence[str], categories: Sequence[str],
                threshold: float = 0.04) -> List[UnitLabel]:
    """Each unit's best concept by IoU; labelled when the IoU passes ``threshold``."""
    out = []
    best = iou.argmax(1)
    for u in range(iou.shape[0]):
        c = int(best[u])
        score = float(iou[u, c])
        passed = score >= threshold and score > 0
        out.append(UnitLabel(unit=u, concept=names[c] if passed else None,
                             category=categories[c] if passed else None, score=score, best=names[c], extra={}))
    return out


def summarise(labels: Sequence[UnitLabel]) -> Dict[str, Dict[str, int]]:
    """NetDissect's summary: per category, how many units detect each concept (and in all)."""
    out: Dict[str, Dict[str, int]] = {}
    for lab in labels:
        if lab.concept is None or lab.category is None:
            continue
        out.setdefault(lab.category, {})
        out[lab.category][lab.concept] = out[lab.category].get(lab.concept, 0) + 1
    return {cat: dict(sorted(v.items(), key=lambda kv: (-kv[1], kv[0]))) for cat, v in sorted(out.items())}


# --- label-based (AUC) -------------------------------------------------------------------------------

def average_ranks(values: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Ranks 1..N along the last dimension (batched over the others), ties sharing their
    average rank; and each element's tie-group size."""
    n = values.shape[-1]
    ordered, order = torch.sort(values, dim=-1, stable=True)
    idx = torch.arange(n, device=values.device).expand_as(ordered)
    new = torch.ones_like(ordered, dtype=torch.bool)
    new[..., 1:] = ordered[..., 1:] != ordered[..., :-1]
    last = torch.ones_like(ordered, dtype=torch.bool)
    last[..., :-1] = ordered[..., 1:] != ordered[..., :-1]
    start = torch.cummax(torch.where(new, idx, torch.zeros_like(idx)), dim=-1).values
    end = torch.flip(torch.cummin(torch.flip(torch.where(last, idx, torch.full_like(idx, n - 1)), [-1]), dim=-1)
                     .values, [-1])
    avg = (start + end).double() / 2 + 1
    size = (end - start + 1).double()
    ranks = torch.empty_like(avg).scatter_(-1, order, avg)
    sizes = torch.empty_like(size).scatter_(-1, order, size)
    return ranks, sizes


@dataclass
class AUCResult:
    auc: torch.Tensor  # U x K
    p: torch.Tensor  # U x K two-sided Mann-Whitney p-values (normal approximation, tie-corrected)
    low: torch.Tensor  # U x K lower bound of the AUC's 95 % confidence interval (Hanley & McNeil)
    positives: torch.Tensor  # K images with the label
    negatives: torch.Tensor  # K


def rank_auc(scores: torch.Tensor, labels: torch.Tensor) -> AUCResult:
    """AUC of every unit (``scores``: ``N x U``) for every binary label (``labels``: ``N x K``):
    ``(sum of positives' ranks - n1 (n1 + 1) / 2) / (n1 n0)``; NaN for a label that every image
    or no image has."""
    s = scores.double().T  # U x N
    y = labels.to(s.device).double()  # N x K
    n = s.shape[1]
    ranks, sizes = average_ranks(s)
    n1 = y.sum(0)  # K
    n0 = n - n1
    u_stat = ranks @ y - (n1 * (n1 + 1) / 2)[None]  # U x K: Mann-Whitney U of the positives
    denom = (n1 * n0)[None]
    auc = torch.where(denom > 0, u_stat / denom.clamp_min(1), torch.full_like(u_stat, float("nan")))
    # tie correction: sum over tie groups of t^3 - t equals sum over elements of t^2 - 1
    ties = (sizes.pow(2) - 1).sum(1, keepdim=True)  # U x 1
    var = denom / 12 * ((n + 1) - ties / max(1, n * (n - 1)))
    z = torch.where(var > 0, (u_stat - denom / 2) / var.clamp_min(1e-300).sqrt(), torch.zeros_like(u_stat))
    p = torch.tensor([[normal_two_sided_p(float(v)) for v in row] for row in z.cpu()], dtype=torch.float64)
    p = torch.where(var.cpu() > 0, p, torch.ones_like(p))
    a = auc.clamp(1e-12, 1 - 1e-12)
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    se = ((a * (1 - a) + (n1[None] - 1) * (q1 - a * a) + (n0[None] - 1) * (q2 - a * a))
          / denom.clamp_min(1)).clamp_min(0).sqrt()
    low = auc - 1.959964 * se
    return AUCResult(auc=auc.float(), p=p.float(), low=low.float(), positives=n1, negatives=n0)


def pooled(acts: torch.Tensor, how: str = "mean") -> torch.Tensor:
    """``B x U`` per-image unit scores from ``B x U x ...`` activations (spatial mean or max)."""
    flat = acts.float().reshape(acts.shape[0], acts.shape[1], -1)
    return flat.amax(2) if how == "max" else flat.mean(2)


# --- colour concepts ---------------------------------------------------------------------------------

#: Broden's eleven colour names; hue ranges in degrees for the chromatic ones.
COLOUR_NAMES = ("black", "white", "grey", "red", "orange", "brown", "yellow", "green", "blue", "purple", "pink")


def hsv(images: np.ndarray | torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Hue in degrees [0, 360), saturation and value in [0, 1] of uint8 ``B x H x W x 3`` images."""
    x = torch.as_tensor(np.asarray(images)).float() / 255.0
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    mx, mn = x.max(-1).values, x.min(-1).values
    delta = mx - mn
    safe = delta.clamp_min(1e-12)
    h = torch.where(mx == r, ((g - b) / safe) % 6, torch.where(mx == g, (b - r) / safe + 2, (r - g) / safe + 4))
    h = torch.where(delta > 0, h * 60.0, torch.zeros_like(h)) % 360.0
    s = torch.where(mx > 0, delta / mx.clamp_min(1e-12), torch.zeros_like(mx))
    return h, s, mx


def colour_masks(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """``B x 11 x H x W`` bool: each pixel named with one of :data:`COLOUR_NAMES` (or none).

    Rules (value v, saturation s, hue h in degrees): black v < 0.2; white s < 0.15 and v > 0.8;
    grey s < 0.15 and 0.2 <= v <= 0.8; otherwise chromatic (s >= 0.15, v >= 0.2): red h < 15 or
    h >= 345, orange 15-40 (brown when v < 0.6), yellow 40-70, green 70-170, blue 170-260,
    purple 260-300, pink 300-345. Gray images have only black, white and grey pixels.
    """
    arr = np.asarray(images)
    if arr.shape[-1] == 1:
        arr = np.repeat(arr, 3, axis=-1)
    h, s, v = hsv(arr)
    dark = v < 0.2
    neutral = (s < 0.15) & ~dark
    chroma = ~dark & ~neutral

    def hue(lo: float, hi: float) -> torch.Tensor:
        return chroma & (h >= lo) & (h < hi)

    orange_like = hue(15, 40)
    masks = {
        "black": dark, "white": neutral & (v > 0.8), "grey": neutral & (v <= 0.8),
        "red": chroma & ((h < 15) | (h >= 345)), "orange": orange_like & (v >= 0.6),
        "brown": orange_like & (v < 0.6), "yellow": hue(40, 70), "green": hue(70, 170), "blue": hue(170, 260),
        "purple": hue(260, 300), "pink": hue(300, 345),
    }
    return torch.stack([masks[name] for name in COLOUR_NAMES], dim=1)


# --- Fashion-MNIST parts -----------------------------------------------------------------------------

FASHION_TOPS = (0, 2, 3, 4, 6)  # T-shirt/top, Pullover, Dress, Coat, Shirt: an upper band
FASHION_SLEEVED = (0, 2, 4, 6)  # T-shirt/top, Pullover, Coat, Shirt: sleeves
FASHION_SHOES = (5, 7, 9)  # Sandal, Sneaker, Ankle boot: a sole
PART_NAMES = ("upper band", "sleeves", "sole")
#: How each part is made, as the dissection page shows it.
PART_DERIVATION = {
    "silhouette": "pixels brighter than 10 % of the image's maximum (Fashion-MNIST backgrounds are 0)",
    "upper band": "silhouette pixels in the top 20 % of the silhouette's rows; tops, dresses and coats only "
                  "(classes T-shirt/top, Pullover, Dress, Coat, Shirt)",
    "sleeves": "silhouette pixels below the upper band that lie further from the garment's centre column than "
               "the torso's half-width (+1 px), the torso's half-width being the median half-width of the "
               "silhouette run through the centre column over the bottom 30 % of rows; T-shirt/top, Pullover, "
               "Coat and Shirt only",
    "sole": "silhouette pixels in the bottom 25 % of the silhouette's rows; Sandal, Sneaker and Ankle boot only",
}


def silhouette(image: np.ndarray) -> np.ndarray:
    """Boolean garment mask of a gray ``H x W`` (or ``H x W x 1``) image."""
    g = np.asarray(image)[..., 0] if np.asarray(image).ndim == 3 else np.asarray(image)
    top = int(g.max())
    return g > max(1, top // 10) if top > 0 else np.zeros(g.shape, dtype=bool)


def _centre_run(row: np.ndarray, centre: int) -> Tuple[int, int]:
    """(first, last) column of the run of True in ``row`` that contains ``centre`` (or nearest)."""
    cols = np.flatnonzero(row)
    if cols.size == 0:
        return centre, centre - 1
    c = centre if row[centre] else int(cols[np.argmin(np.abs(cols - centre))])
    lo = c
    while lo > 0 and row[lo - 1]:
        lo -= 1
    hi = c
    while hi + 1 < row.size and row[hi + 1]:
        hi += 1
    return lo, hi


def fashion_part_masks(image: np.ndarray, label: int) -> Dict[str, np.ndarray]:
    """The parts of one Fashion-MNIST image (``H x W`` or ``H x W x 1`` uint8) of class ``label``
    (0-9), as in :data:`PART_DERIVATION`: ``part name -> H x W`` bool (all False where the part
    does not apply to the class)."""
    sil = silhouette(image)
    out = {name: np.zeros(sil.shape, dtype=bool) for name in PART_NAMES}
    rows = np.flatnonzero(sil.any(1))
    if rows.size == 0:
        return out
    top, bottom = int(rows[0]), int(rows[-1])
    height = bottom - top + 1
    band_end = top + max(1, int(round(0.2 * height)))
    if label in FASHION_TOPS:
        out["upper band"][top:band_end] = sil[top:band_end]
    if label in FASHION_SLEEVED:
        cols = np.flatnonzero(sil.any(0))
        centre = int(round(float(np.mean(np.nonzero(sil)[1])))) if cols.size else sil.shape[1] // 2
        low_rows = range(bottom - max(1, int(round(0.3 * height))) + 1, bottom + 1)
        halves = []
        for r in low_rows:
            lo, hi = _centre_run(sil[r], centre)
            if hi >= lo:
                halves.append(max(centre - lo, hi - centre))
        half = float(np.median(halves)) if halves else 0.0
        far = np.abs(np.arange(sil.shape[1]) - centre) > half + 1
        sleeves = sil & far[None, :]
        sleeves[:band_end] = False
        out["sleeves"] = sleeves
    if label in FASHION_SHOES:
        start = bottom - max(1, int(round(0.25 * height))) + 1
        out["sole"][start:bottom + 1] = sil[start:bottom + 1]
    return out


def fashion_masks(images: np.ndarray, labels: Sequence[int], class_names: Sequence[str]
                  ) -> Tuple[torch.Tensor, List[str], List[str]]:
    """``B x K x H x W`` masks for Fashion-MNIST images: the three parts, then each class's
    silhouette (the object, on images of that class only); with the concept names and categories."""
    names = list(PART_NAMES) + [f"{n} (silhouette)" for n in class_names]
    cats = ["part"] * len(PART_NAMES) + ["object"] * len(class_names)
    b = len(images)
    h, w = images.shape[1:3]
    masks = np.zeros((b, len(names), h, w), dtype=bool)
    for i in range(b):
        parts = fashion_part_masks(images[i], int(labels[i]))
        for j, name in enumerate(PART_NAMES):
            masks[i, j] = parts[name]
        masks[i, len(PART_NAMES) + int(labels[i])] = silhouette(images[i])
    return torch.from_numpy(masks), names, cats


# --- Broden-format folders ---------------------------------------------------------------------------

@dataclass
class BrodenData:
    images: List[np.ndarray]  # uint8 H x W x 3, as stored
    masks: torch.Tensor  # N x K x sh x sw bool (pixel concepts; image-level concepts fill the image)
    names: List[str]  # K concept names
    categories: List[str]  # K categories


def load_broden(folder: str | Path, limit: Optional[int] = None) -> BrodenData:
    """Read a Broden-compatible concept folder.

    Layout (a subset of Broden's, so a Broden download reads as is)::

        folder/
          index.csv    image,split,ih,iw,sh,sw,color,object,part,material,scene,texture
          label.csv    number,name,category,...     (category "color(123);object(45)" or a plain name)
          images/...   the image files index.csv names (relative to folder/images/)

    ``image`` is the image path; ``sh, sw`` the size of its masks. The pixel categories
    (``color``, ``object``, ``part``, ``material``) hold ``;``-separated PNG paths (relative to
    ``images/``), each a label map where label number = ``R + 256 * G``; the image-level
    categories (``scene``, ``texture``) hold ``;``-separated label numbers and count as a
    mask over the whole image. Empty cells mean none. Category ``color`` is named ``colour``
    on the pages.
    """
    from PIL import Image

    root = Path(folder)
    labels: Dict[int, Tuple[str, str]] = {}
    with open(root / "label.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            number = int(row["number"])
            if number == 0:
                continue  # Broden's "-" background label
            category = row.get("category", "").split(";")[0].split("(")[0].strip() or "object"
            labels[number] = (row["name"], "colour" if category == "color" else category)
    numbers = sorted(labels)
    column = {n: i for i, n in enumerate(numbers)}
    with open(root / "index.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))[: limit or None]
    images, masks = [], []
    pixel_cats = ("color", "object", "part", "material")
    for row in rows:
        images.append(np.asarray(Image.open(root / "images" / row["image"]).convert("RGB")))
        sh, sw = int(row["sh"]), int(row["sw"])
        m = np.zeros((len(numbers), sh, sw), dtype=bool)
        for cat in pixel_cats:
            for path in filter(None, (row.get(cat) or "").split(";")):
                arr = np.asarray(Image.open(root / "images" / path).convert("RGB")).astype(np.int64)
                code = arr[..., 0] + 256 * arr[..., 1]
                for number in np.unique(code):
                    if int(number) in column:
                        m[column[int(number)]] |= code == number
        for cat in ("scene", "texture"):
            for number in filter(None, (row.get(cat) or "").split(";")):
                if int(number) in column:
                    m[column[int(number)]] = True
        masks.append(m)
    return BrodenData(images=images, masks=torch.from_numpy(np.stack(masks)) if masks else torch.zeros(0),
                      names=[labels[n][0] for n in numbers], categories=[labels[n][1] for n in numbers])
