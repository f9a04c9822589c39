"""Settings of ``compare.similarity``: representation similarity between layers of models
(linear CKA, SVCCA, mutual k-NN; :mod:`generator.methods.compare.similarity`). Torch-free.

For every dataset with two or more models, each pair of models is compared layer by layer; with
``within_model`` each model's layers are also compared with each other and their Gram matrices
stored (``representation_grams``), so ``modelcard diff`` can compare two versions of a model
from their reports alone.
"""

from __future__ import annotations

from typing import Dict, List, Optional

from pydantic import BaseModel, ConfigDict, Field


class SimilaritySettings(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)
    enabled: bool = True
    # Model id -> layers to compare, shallow to deep; a model not listed uses its spec's layers.
    layers: Dict[str, List[str]] = Field(default_factory=dict)
    # How many images of each dataset (the first ones); None: as many as ``outcome.images``. CKA on
    # fewer than ~50 images is noisy and the page says so; SVCCA needs many more images than the
    # directions it keeps.
    images: Optional[int] = Field(default=None, ge=4)
    batch_size: int = Field(default=256, ge=4)  # images per forward pass and per CKA mini-batch
    knn_k: int = Field(default=10, ge=1)  # neighbours in mutual k-NN (at most images - 1)
    svcca_variance: float = Field(default=0.99, gt=0, le=1)  # share of variance the SVCCA directions keep
    svcca_dims: Optional[int] = Field(default=None, ge=1)  # a fixed number of directions instead
    # Conv maps with at most this many values per image are flattened (position kept) instead
    # of averaged over positions; 0: always averaged.
    flatten_max: int = Field(default=0, ge=0)
    within_model: bool = True  # each model's layers against each other, and its Gram matrices
    gram_images: int = Field(default=256, ge=4, le=4096)  # images covered by the stored Gram matrices
