"""Records of representation similarity (:mod:`generator.pipeline.stages.compare_similarity`).

``representation_similarity``: two models on one dataset, every layer of A against every layer
of B. ``representation_grams``: one model's layers against each other, and its per-layer Gram
matrices (``grams.npz``: ``gram_<i>``, float64 n x n, in the order of ``layers``, rows in the
order of ``gram_images``) for comparing versions of a model without it.

Matrices are lists of rows (layers of A down, layers of B across), rounded to 6 decimals; a cell
that is undefined (a layer without variance over the images, SVCCA with too few images) is null.
"""

from __future__ import annotations

from typing import List, Optional

from generator.records.base import Number, Part, Record, register

Matrix = List[List[Optional[Number]]]


class SimilarityParams(Part):
    """What the numbers were computed with."""

    batch_size: int  # images per CKA mini-batch (Nguyen et al. 2021)
    knn_k: int  # neighbours used by mutual k-NN (after capping at images - 1)
    svcca_variance: Number
    svcca_dims: Optional[int]  # fixed number of SVCCA directions, or None (by variance)
    flatten_max: int
    spread: str  # how cka_spread was computed ("jackknife") or "" when it was not


@register("representation_similarity")
class SimilarityRecord(Record):
    """Linear CKA (mini-batch, unbiased HSIC), SVCCA and mutual k-NN between two models' layers."""

    model_a: str
    model_b: str
    dataset: str
    layers_a: List[str]
    layers_b: List[str]
    images: List[str]  # ids of the images, in order
    dims_a: List[int]  # values per image of each layer after reduction
    dims_b: List[int]
    reduction_a: List[str]  # how each layer was reduced to a vector per image
    reduction_b: List[str]
    params: SimilarityParams
    cka: Matrix
    cka_spread: Optional[Matrix]  # jackknife standard error per cell, or None
    svcca: Matrix
    svcca_dims_a: List[int]  # SVD directions kept per layer
    svcca_dims_b: List[int]
    knn: Matrix


@register("representation_grams")
class GramsRecord(Record):
    """One model's layers against each other (CKA) and its per-layer Gram matrices."""

    model: str
    dataset: str
    layers: List[str]
    images: List[str]  # ids of the images the CKA used, in order
    gram_images: List[str]  # ids of the Gram matrices' rows and columns (the first of ``images``)
    dims: List[int]
    reduction: List[str]
    params: SimilarityParams
    cka: Matrix
    cka_spread: Optional[Matrix]
