"""Representation similarity between the layers of two models (or of one model with itself).

Three measures, each on the same images seen by both models, each layer's output reduced to
one vector per image (:func:`reduce_activation`):

* **Linear CKA** (Kornblith, Norouzi, Lee & Hinton 2019, "Similarity of Neural Network
  Representations Revisited"): ``||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F)`` on centred
  activations; invariant to orthogonal transforms and isotropic scaling, not to arbitrary
  invertible linear maps. :func:`linear_cka` is the full (biased) reference.
  :class:`MinibatchCKA` is the estimator of Nguyen, Raghu & Kornblith 2021 ("Do Wide and Deep
  Networks Learn the Same Things?"): the unbiased HSIC (Song et al. 2012) of each mini-batch,
  averaged over mini-batches, for every pair of K x L layers at once, so memory does not grow
  with the number of images. Accumulated in float64.
* **SVCCA** (Raghu, Gilmer, Yosinski & Sohl-Dickstein 2017, "SVCCA: Singular Vector Canonical
  Correlation Analysis for Deep Learning Dynamics and Interpretability"): keep the top singular
  directions of each layer (99% of the variance, or a fixed number), then CCA between the two
  subspaces; the score is the mean canonical correlation.
* **Mutual k-NN alignment** (Huh, Cheung, Wang & Isola 2024, "The Platonic Representation
  Hypothesis"): for each image, the overlap of its k nearest neighbours (cosine similarity)
  in the two representations, divided by k, averaged over images.

Reduction (:func:`reduce_activation`): a convolutional map (B, C, H, W) is averaged over its
positions to (B, C), which keeps what the channels encode and drops where: two layers that
encode the same features at different resolutions then compare as similar. Maps of at most
``flatten_max`` values per image are flattened instead (position kept). A vision transformer's
token layer is read on its patch grid (:class:`~generator.methods.featurevis.spatial.SpatialView`,
which uses :func:`generator.models.tokens.to_spatial`) and averaged over the patch tokens; the
class and other special tokens are left out.
"""

from __future__ import annotations

import contextlib
import itertools
import math
from dataclasses import dataclass, field
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import nn

from generator.engine.batching import eval_mode
from generator.engine.hooks import capture_activations, run_until_stopped
from generator.engine.layers import get_layer, model_device
from generator.methods.featurevis.spatial import SpatialView

__all__ = [
    "MinibatchCKA", "SimilarityResult", "collect_activations", "compare_streaming", "cka_matrix", "iter_reduced",
    "jackknife_cka", "knn_indices", "linear_cka", "mutual_knn", "mutual_knn_matrix", "reduce_activation",
    "similarity_from_features", "svcca", "svcca_matrix", "svd_directions", "u_centre", "unbiased_cka",
    "centred_gram", "describe_reduction",
]

Features = Dict[str, torch.Tensor]


# --- reducing layer outputs to one vector per image ------------------------------------------

def reduce_activation(t: torch.Tensor, view: Optional[SpatialView] = None, input_hw: Sequence[int] = (0, 0),
                      flatten_max: int = 0) -> torch.Tensor:
    """One layer output ``t`` (batch first) as (B, D) float32.

    Token outputs are first put on the patch grid by ``view`` (special tokens dropped); (B,C,h,w)
    maps are averaged over positions unless one image's map has at most ``flatten_max`` values;
    (B, D) passes; a (B, N, C) sequence the view does not recognise is averaged over its N tokens;
    anything else is flattened."""
    if view is not None:
        t = view(t, input_hw)
    if t.dim() == 4:
        out = t.flatten(1) if flatten_max and t[0].numel() <= flatten_max else t.mean(dim=(2, 3))
    elif t.dim() == 3:
        out = t.mean(dim=1)
    elif t.dim() == 2:
        out = t
    else:
        out = t.reshape(t.shape[0], -1)
    return out.float()


def describe_reduction(t: torch.Tensor, view: Optional[SpatialView] = None, input_hw: Sequence[int] = (0, 0),
                       flatten_max: int = 0) -> str:
    """In words, how :func:`reduce_activation` turns this layer output into a vector per image."""
    how = view.describe(t, input_hw) if view is not None else ""
    if view is not None:
        t = view(t, input_hw)
    shape = "x".join(str(int(s)) for s in t.shape[1:])
    if t.dim() == 4:
        if flatten_max and t[0].numel() <= flatten_max:
            text = f"{shape} map flattened (positions kept)"
        else:
            text = f"{int(t.shape[1])} channels averaged over {int(t.shape[2])}x{int(t.shape[3])} positions"
    elif t.dim() == 3:
        text = f"{int(t.shape[2])} values averaged over {int(t.shape[1])} tokens"
    elif t.dim() == 2:
        text = f"vector of {int(t.shape[1])}"
    else:
        text = f"{shape} output flattened"
    return f"{how}: {text}" if how else text


def iter_reduced(model: nn.Module, layers: Sequence[str], inputs: Iterable[torch.Tensor], *,
                 view: Optional[SpatialView] = None, flatten_max: int = 0,
                 described: Optional[Dict[str, str]] = None) -> Iterator[List[torch.Tensor]]:
    """For each input batch, the reduced outputs of ``layers`` (a list of (B, D_i) in layer order),
    on the model's device. One forward pass per batch, cut short after the deepest layer; the hooks
    are removed and every module's train flag is restored when the iteration ends (or is closed).
    ``described`` (if given) receives layer -> :func:`describe_reduction` from the first batch."""
    if not layers:
        raise ValueError("no layers to compare")
    modules = {name: get_layer(model, name) for name in layers}
    device = model_device(model)
    with eval_mode(model), capture_activations(model, modules, stop_after=list(layers)) as store:
        for x in inputs:
            # Grad mode is global state: it is switched off per batch, never across the ``yield``,
            # or the caller would run with gradients off while this generator is suspended.
            with torch.no_grad():
                x = x.to(device)
                store.clear()
                run_until_stopped(model, x)
                missing = [name for name in layers if name not in store]
                if missing:
                    raise ValueError(f"layer(s) {missing} produced no output in the forward pass")
                if described is not None and not described:
                    described.update({name: describe_reduction(store[name], view, x.shape[-2:], flatten_max)
                                      for name in layers})
                reduced = [reduce_activation(store[name], view, x.shape[-2:], flatten_max) for name in layers]
            yield reduced


def collect_activations(model: nn.Module, layers: Sequence[str], inputs: Iterable[torch.Tensor], *,
                        view: Optional[SpatialView] = None, flatten_max: int = 0,
                        described: Optional[Dict[str, str]] = None) -> Features:
    """Layer name -> (N, D) float32 on the CPU: the reduced outputs of every input batch, in order
    (one pass over ``inputs``; see :func:`iter_reduced`)."""
    parts: List[List[torch.Tensor]] = [[] for _ in layers]
    with contextlib.closing(iter_reduced(model, layers, inputs, view=view, flatten_max=flatten_max,
                                         described=described)) as it:
        for batch in it:
            for i, t in enumerate(batch):
                parts[i].append(t.cpu())
    return {name: torch.cat(p) if p else torch.zeros(0, 0) for name, p in zip(layers, parts)}


# --- linear CKA ------------------------------------------------------------------------------

def _centred(x: torch.Tensor) -> torch.Tensor:
    x = x.reshape(x.shape[0], -1).double()
    return x - x.mean(dim=0, keepdim=True)


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """Linear CKA of two representations of the same n items ((n, D1) and (n, D2)), Kornblith et
    al. 2019 eq. 5, on all of them at once (the biased HSIC; float64). NaN when one is constant."""
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"different numbers of items: {x.shape[0]} and {y.shape[0]}")
    xc, yc = _centred(x), _centred(y)
    # The feature-space form: D x D products instead of n x n Gram matrices (cheaper for n > D).
    cross = torch.linalg.matrix_norm(yc.T @ xc) ** 2
    denom = torch.linalg.matrix_norm(xc.T @ xc) * torch.linalg.matrix_norm(yc.T @ yc)
    return float(cross / denom) if float(denom) > 0 else float("nan")


def centred_gram(x: torch.Tensor) -> torch.Tensor:
    """The (n, n) float64 Gram matrix of the centred rows of ``x``: ``H X X^T H``."""
    xc = _centred(x)
    return xc @ xc.T


def u_centre(k: torch.Tensor) -> torch.Tensor:
    """U-centring of (..., n, n) Gram matrices (Székely & Rizzo 2014): zero diagonal, and
    ``<U(K), U(L)> / (n (n - 3))`` is the unbiased HSIC estimator of Song et al. 2012."""
    n = k.shape[-1]
    if n < 4:
        raise ValueError(f"the unbiased HSIC needs at least 4 items, got {n}")
    eye = torch.eye(n, dtype=torch.bool, device=k.device)
    k = k.masked_fill(eye, 0.0)
    rows = k.sum(dim=-1)
    total = rows.sum(dim=-1)
    u = k - rows[..., :, None] / (n - 2) - rows[..., None, :] / (n - 2) + total[..., None, None] / ((n - 1) * (n - 2))
    return u.masked_fill(eye, 0.0)


def unbiased_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """Linear CKA with the unbiased HSIC estimator on all n items (n >= 4); what
    :class:`MinibatchCKA` gives with a single batch."""
    acc = MinibatchCKA(1, 1)
    acc.update([x], [y])
    return float(acc.result()[0, 0])


def _cka_from_hsic(xy: torch.Tensor, xx: torch.Tensor, yy: torch.Tensor) -> torch.Tensor:
    denom = torch.sqrt(torch.clamp(torch.outer(xx, yy), min=0.0))
    return torch.where(denom > 0, xy / torch.where(denom > 0, denom, torch.ones_like(denom)),
                       torch.full_like(xy, float("nan")))


class MinibatchCKA:
    """Linear CKA of every layer of A (``n_a`` layers) with every layer of B (``n_b``; None: A
    with itself), accumulated over mini-batches (Nguyen, Raghu & Kornblith 2021, eq. 3):

        CKA = mean_b HSIC_u(K_b, L_b) / sqrt(mean_b HSIC_u(K_b, K_b) * mean_b HSIC_u(L_b, L_b))

    with ``HSIC_u`` the unbiased estimator (Song et al. 2012) on the batch's Gram matrices. Memory
    holds one batch's Gram matrices and the K x L sums (float64), whatever the number of images.
    A batch of fewer than 4 images has no unbiased HSIC: it is skipped and counted in ``skipped``.
    """

    def __init__(self, n_a: int, n_b: Optional[int] = None):
        self.within = n_b is None
        self.n_a, self.n_b = n_a, (n_a if n_b is None else n_b)
        self.xy = torch.zeros(self.n_a, self.n_b, dtype=torch.float64)
        self.xx = torch.zeros(self.n_a, dtype=torch.float64)
        self.yy = torch.zeros(self.n_b, dtype=torch.float64)
        self.batches = 0
        self.images = 0
        self.skipped = 0

    @staticmethod
    def _u_grams(feats: Sequence[torch.Tensor]) -> torch.Tensor:
        # (layers, b*b): every layer's U-centred Gram matrix, flattened for one matmul per batch.
        grams = []
        for x in feats:
            x = x.reshape(x.shape[0], -1).double()
            grams.append(u_centre(x @ x.T).reshape(-1))
        return torch.stack(grams)

    def update(self, feats_a: Sequence[torch.Tensor], feats_b: Optional[Sequence[torch.Tensor]] = None) -> None:
        """Add one mini-batch: ``feats_a`` (and ``feats_b`` unless within one model) hold each
        layer's (b, D_i) activations of the same b images, in layer order."""
        if len(feats_a) != self.n_a or (not self.within and (feats_b is None or len(feats_b) != self.n_b)):
            raise ValueError(f"expected {self.n_a} layers of A and {self.n_b} of B")
        b = int(feats_a[0].shape[0])
        if b < 4:
            self.skipped += b
            return
        norm = b * (b - 3)
        ua = self._u_grams(feats_a)
        ub = ua if self.within or feats_b is None else self._u_grams(feats_b)
        if ub.shape[1] != ua.shape[1]:
            raise ValueError("A and B batches hold different numbers of images")
        self.xy += (ua @ ub.T).cpu() / norm
        self.xx += (ua * ua).sum(dim=1).cpu() / norm
        self.yy += (ub * ub).sum(dim=1).cpu() / norm
        self.batches += 1
        self.images += b

    def hsic(self) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Mean unbiased HSIC over the batches: (A x B, A diagonal, B diagonal)."""
        k = max(self.batches, 1)
        return self.xy / k, self.xx / k, self.yy / k

    def result(self) -> torch.Tensor:
        """(n_a, n_b) float64 CKA; NaN where a layer had no variance (or no batch was added)."""
        if not self.batches:
            return torch.full((self.n_a, self.n_b), float("nan"), dtype=torch.float64)
        return _cka_from_hsic(*self.hsic())


def _batched(feats: Sequence[torch.Tensor], batch_size: int) -> Iterator[List[torch.Tensor]]:
    """Slices of stored features; a remainder under 4 images joins the batch before it."""
    n = int(feats[0].shape[0])
    starts = list(range(0, n, batch_size))
    if len(starts) > 1 and n - starts[-1] < 4:
        starts.pop()
    for i, s in enumerate(starts):
        e = starts[i + 1] if i + 1 < len(starts) else n
        yield [f[s:e] for f in feats]


def cka_matrix(feats_a: Sequence[torch.Tensor], feats_b: Optional[Sequence[torch.Tensor]] = None,
               batch_size: int = 256) -> np.ndarray:
    """Mini-batch CKA (:class:`MinibatchCKA`) of stored features, ``batch_size`` images a batch."""
    acc = MinibatchCKA(len(feats_a), None if feats_b is None else len(feats_b))
    batches_a = _batched(feats_a, batch_size)
    if feats_b is None:
        for part in batches_a:
            acc.update(part)
    else:
        for part_a, part_b in zip(batches_a, _batched(feats_b, batch_size)):
            acc.update(part_a, part_b)
    return acc.result().numpy()


def jackknife_cka(feats_a: Sequence[torch.Tensor], feats_b: Optional[Sequence[torch.Tensor]] = None) -> np.ndarray:
    """Jackknife standard error (Efron & Stein 1981) of the unbiased CKA on all n images, for every
    pair of layers: the CKA recomputed n times with one image left out. O(n^3 K L): for small n."""
    ga = torch.stack([centred_gram(f) for f in feats_a])
    gb = ga if feats_b is None else torch.stack([centred_gram(f) for f in feats_b])
    n = ga.shape[-1]
    if n < 5:
        return np.full((ga.shape[0], gb.shape[0]), np.nan)
    values = []
    for i in range(n):
        keep = torch.cat([torch.arange(i), torch.arange(i + 1, n)])
        ua = u_centre(ga[:, keep][:, :, keep]).reshape(ga.shape[0], -1)
        ub = ua if feats_b is None else u_centre(gb[:, keep][:, :, keep]).reshape(gb.shape[0], -1)
        values.append(_cka_from_hsic(ua @ ub.T, (ua * ua).sum(1), (ub * ub).sum(1)))
    stack = torch.stack(values)
    spread = torch.sqrt((n - 1) / n * ((stack - stack.mean(0)) ** 2).sum(0))
    return spread.numpy()


# --- SVCCA -----------------------------------------------------------------------------------

def svd_directions(x: torch.Tensor, variance: float = 0.99, dims: Optional[int] = None) -> torch.Tensor:
    """(n, k) orthonormal float64 basis of the top singular directions of the centred ``x``: the
    fewest explaining ``variance`` of its variance, or the top ``dims``; never more than its rank.
    Raghu et al. 2017, step 1 (the span of the SVD-reduced activations)."""
    xc = _centred(x)
    u, s, _ = torch.linalg.svd(xc, full_matrices=False)
    if s.numel() == 0 or float(s[0]) == 0.0:
        return u[:, :0]
    rank = int((s > s[0] * max(xc.shape) * torch.finfo(torch.float64).eps).sum())
    if dims is not None:
        k = int(dims)
    else:
        energy = torch.cumsum(s ** 2, 0) / (s ** 2).sum()
        k = int(torch.searchsorted(energy, torch.tensor(variance, dtype=torch.float64) - 1e-12)) + 1
    return u[:, :max(1, min(k, rank))]


def _canonical(ua: torch.Tensor, ub: torch.Tensor) -> torch.Tensor:
    # CCA between two subspaces given orthonormal bases: the canonical correlations are the
    # cosines of their principal angles, the singular values of ua^T ub (Björck & Golub 1973).
    return torch.linalg.svdvals(ua.T @ ub).clamp(0.0, 1.0)


@dataclass
class SVCCA:
    """``mean``: mean canonical correlation (NaN when undefined); ``correlations`` sorted
    descending; ``dims``: directions kept of each representation."""

    mean: float
    correlations: np.ndarray
    dims: Tuple[int, int]


def _svcca_defined(ka: int, kb: int, n: int) -> bool:
    # Centred data of n items spans at most n - 1 dimensions: two subspaces with ka + kb > n - 1
    # must share a direction, so some correlations are 1 whatever the data (Raghu et al. use n >> k).
    return ka > 0 and kb > 0 and ka + kb <= n - 1


def svcca(x: torch.Tensor, y: torch.Tensor, variance: float = 0.99, dims: Optional[int] = None) -> SVCCA:
    """SVCCA of two representations of the same n items (Raghu et al. 2017)."""
    ua, ub = svd_directions(x, variance, dims), svd_directions(y, variance, dims)
    corr = _canonical(ua, ub)
    n = int(x.shape[0])
    ok = _svcca_defined(ua.shape[1], ub.shape[1], n)
    return SVCCA(mean=float(corr.mean()) if ok else float("nan"), correlations=corr.numpy(),
                 dims=(int(ua.shape[1]), int(ub.shape[1])))


def svcca_matrix(feats_a: Sequence[torch.Tensor], feats_b: Optional[Sequence[torch.Tensor]] = None,
                 variance: float = 0.99, dims: Optional[int] = None) -> Tuple[np.ndarray, List[int], List[int]]:
    """Mean SVCCA correlation of every pair of layers, and the directions kept per layer of A and
    of B. Each layer's SVD is computed once. NaN where undefined (too few images, see :func:`svcca`)."""
    bases_a = [svd_directions(f, variance, dims) for f in feats_a]
    bases_b = bases_a if feats_b is None else [svd_directions(f, variance, dims) for f in feats_b]
    n = int(feats_a[0].shape[0])
    out = np.full((len(bases_a), len(bases_b)), np.nan)
    for i, ua in enumerate(bases_a):
        for j, ub in enumerate(bases_b):
            if _svcca_defined(ua.shape[1], ub.shape[1], n):
                out[i, j] = float(_canonical(ua, ub).mean())
    return out, [int(u.shape[1]) for u in bases_a], [int(u.shape[1]) for u in bases_b]


# --- mutual k-NN -----------------------------------------------------------------------------

def knn_indices(x: torch.Tensor, k: int, chunk: int = 1024) -> torch.Tensor:
    """(n, k) indices of each item's k nearest other items by cosine similarity, computed
    ``chunk`` rows at a time (memory chunk x n)."""
    n = int(x.shape[0])
    if not 0 < k < n:
        raise ValueError(f"k must be between 1 and n - 1 = {n - 1}, got {k}")
    xn = torch.nn.functional.normalize(x.reshape(n, -1).double(), dim=1)
    out = []
    for s in range(0, n, chunk):
        e = min(n, s + chunk)
        sim = xn[s:e] @ xn.T
        rows = torch.arange(e - s, device=sim.device)
        sim[rows, rows + s] = -math.inf  # an item is not its own neighbour
        out.append(torch.topk(sim, k, dim=1).indices)
    return torch.cat(out)


def _overlap(ia: torch.Tensor, ib: torch.Tensor) -> float:
    k = ia.shape[1]
    shared = (ia[:, :, None] == ib[:, None, :]).any(dim=2).sum(dim=1)
    return float(shared.double().mean() / k)


def mutual_knn(x: torch.Tensor, y: torch.Tensor, k: int = 10) -> float:
    """Mutual k-NN alignment of two representations of the same items (Huh et al. 2024): the mean
    over items of |kNN_x(i) ∩ kNN_y(i)| / k; 1 for identical neighbourhoods, about k / (n - 1) for
    unrelated ones."""
    return _overlap(knn_indices(x, k), knn_indices(y, k))


def mutual_knn_matrix(feats_a: Sequence[torch.Tensor], feats_b: Optional[Sequence[torch.Tensor]] = None,
                      k: int = 10) -> np.ndarray:
    """Mutual k-NN alignment of every pair of layers (neighbours computed once per layer)."""
    ia = [knn_indices(f, k) for f in feats_a]
    ib = ia if feats_b is None else [knn_indices(f, k) for f in feats_b]
    return np.array([[_overlap(a, b) for b in ib] for a in ia], dtype=np.float64).reshape(len(ia), len(ib))


# --- all three at once -------------------------------------------------------------------------

@dataclass
class SimilarityResult:
    """Layer x layer matrices (float64) of one comparison; ``images``: how many images CKA used,
    ``dense_images``: how many SVCCA and k-NN used (all of them in :func:`similarity_from_features`)."""

    cka: np.ndarray
    svcca: np.ndarray
    knn: np.ndarray
    svcca_dims_a: List[int]
    svcca_dims_b: List[int]
    knn_k: int
    images: int
    dense_images: int
    cka_spread: Optional[np.ndarray] = None
    extra: Dict[str, float] = field(default_factory=dict)


def _knn_k(k: int, n: int) -> int:
    return max(1, min(int(k), n - 1))


def similarity_from_features(feats_a: Sequence[torch.Tensor], feats_b: Optional[Sequence[torch.Tensor]] = None, *,
                             batch_size: int = 256, knn_k: int = 10, svcca_variance: float = 0.99,
                             svcca_dims: Optional[int] = None, spread_max_images: int = 0) -> SimilarityResult:
    """CKA (mini-batch), SVCCA and mutual k-NN of stored features (``feats_b`` None: A with itself);
    with at most ``spread_max_images`` images, also the jackknife spread of the CKA."""
    n = int(feats_a[0].shape[0])
    if n < 4:
        raise ValueError(f"representation similarity needs at least 4 images, got {n}")
    sv, dims_a, dims_b = svcca_matrix(feats_a, feats_b, svcca_variance, svcca_dims)
    k = _knn_k(knn_k, n)
    spread = jackknife_cka(feats_a, feats_b) if n <= spread_max_images else None
    return SimilarityResult(cka=cka_matrix(feats_a, feats_b, batch_size), svcca=sv,
                            knn=mutual_knn_matrix(feats_a, feats_b, k), svcca_dims_a=dims_a, svcca_dims_b=dims_b,
                            knn_k=k, images=n, dense_images=n, cka_spread=spread)


Batch = Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]


def compare_streaming(model_a: nn.Module, layers_a: Sequence[str], model_b: nn.Module, layers_b: Sequence[str],
                      inputs: Iterable[Batch], *, view_a: Optional[SpatialView] = None,
                      view_b: Optional[SpatialView] = None, flatten_max: int = 0, knn_k: int = 10,
                      svcca_variance: float = 0.99, svcca_dims: Optional[int] = None,
                      dense_images: int = 2000) -> SimilarityResult:
    """Compare two models in one pass over ``inputs`` (a batch for both, or an (A, B) pair of
    batches when they preprocess differently) without holding all activations: CKA with
    :class:`MinibatchCKA` over every image; SVCCA and mutual k-NN on the first ``dense_images``
    images (they need all pairs of images at once), whose reduced activations are kept."""
    # Two lazy views of one pass over the inputs; zip below keeps at most one batch in the tee.
    both_a, both_b = itertools.tee((b, b) if isinstance(b, torch.Tensor) else b for b in inputs)
    acc = MinibatchCKA(len(layers_a), len(layers_b))
    kept_a: List[List[torch.Tensor]] = [[] for _ in layers_a]
    kept_b: List[List[torch.Tensor]] = [[] for _ in layers_b]
    kept = 0
    it_a = iter_reduced(model_a, layers_a, (a for a, _ in both_a), view=view_a, flatten_max=flatten_max)
    it_b = iter_reduced(model_b, layers_b, (b for _, b in both_b), view=view_b, flatten_max=flatten_max)
    with contextlib.closing(it_a), contextlib.closing(it_b):
        for fa, fb in zip(it_a, it_b):
            acc.update(fa, fb)
            take = min(int(fa[0].shape[0]), dense_images - kept)
            if take > 0:
                for store, feats in ((kept_a, fa), (kept_b, fb)):
                    for i, f in enumerate(feats):
                        store[i].append(f[:take].cpu())
                kept += take
    da = [torch.cat(p) for p in kept_a]
    db = [torch.cat(p) for p in kept_b]
    sv, dims_a, dims_b = svcca_matrix(da, db, svcca_variance, svcca_dims)
    k = _knn_k(knn_k, kept)
    return SimilarityResult(cka=acc.result().numpy(), svcca=sv, knn=mutual_knn_matrix(da, db, k),
                            svcca_dims_a=dims_a, svcca_dims_b=dims_b, knn_k=k, images=acc.images + acc.skipped,
                            dense_images=kept, extra={"skipped_images": float(acc.skipped)})
