"""Settings of the ``compare`` section: several models on one dataset, side by side (maps,
agreement, representation similarity). Torch-free.

For every dataset that two or more compared models run on, the ``compare`` stage reads the
outcome stage's stored maps and measures, per method and image, how far each pair of models
agrees (Spearman rank correlation and top-k% overlap on a grid that every model sees); the
pages show the models' maps side by side. Model ids and method names are checked by
:mod:`generator.validation`.
"""

from __future__ import annotations

from typing import List, Optional

from pydantic import BaseModel, ConfigDict, Field

from generator.settings.similarity import SimilaritySettings


class CompareSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)
    enabled: bool = True
    # Model ids compared (in this order on the pages); None: every model of each dataset.
    models: Optional[List[str]] = None
    # Methods shown side by side and measured; None: those computed for every compared model.
    methods: Optional[List[str]] = None
    # Top-k overlap: the fraction of pixels with the highest values whose intersection over union
    # two models' maps are compared by (0.1: the top 10%).
    top_k: float = Field(default=0.1, gt=0, le=0.5)
    # At most this many of the shown images (outcome.images) per dataset; None: all of them.
    images: Optional[int] = Field(default=None, ge=1)
    similarity: SimilaritySettings = Field(default_factory=SimilaritySettings)
