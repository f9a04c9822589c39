"""Settings of the ``evaluation`` section: how far each attribution method can be trusted.

Every check names the models it runs on (``models``: ids; empty = every model) and how many of
the shown images it uses, so a CPU build can keep the expensive checks on the small model.
``segmentation`` (CAM threshold segmentation) runs with the outcome stage whenever a model has
a CAM layer, independently of ``enabled``.
"""

from __future__ import annotations

from typing import Dict, List, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class _Check(_Section):
    enabled: bool = True
    models: List[str] = Field(default_factory=list)  # model ids; empty = every model
    images: int = Field(default=8, ge=1)  # at most this many of the shown images
    images_by_model: Dict[str, int] = Field(default_factory=dict)  # per-model override of ``images``

    def applies_to(self, model_id: str) -> bool:
        return self.enabled and (not self.models or model_id in self.models)

    def images_for(self, model_id: str) -> int:
        return int(self.images_by_model.get(model_id, self.images))


class SelectivitySettings(_Check):
    """Deletion / insertion curves (Petsiuk et al. 2018) from the stored outcome maps."""

    steps: int = Field(default=10, ge=2, le=200)
    patch: Union[int, float] = 1  # pixels, or a fraction (< 1) of the image side: cells removed together
    deletion_baseline: Literal["zeros", "blur", "mean"] = "zeros"
    insertion_baseline: Literal["zeros", "blur", "mean"] = "blur"
    output: Literal["probability", "logit"] = "probability"


class SensitivitySettings(_Check):
    """Maps for the top-1, the runner-up and a random class; flagged above ``threshold``."""

    threshold: float = Field(default=0.9, ge=-1, le=1)


class SanitySettings(_Check):
    """Cascading model-parameter randomisation (Adebayo et al. 2018)."""

    threshold: float = Field(default=0.5, ge=-1, le=1)
    max_layers: int = Field(default=12, ge=1)  # at most this many cascade steps (top-down)


class RoarSettings(_Check):
    """ROAR / KAR (Hooker et al. 2019) with a reduced retraining budget; only models whose
    training can be repeated here (the embedded Fashion-MNIST CNN)."""

    methods: List[str] = Field(default_factory=lambda: ["saliency", "integrated_gradients", "smoothgrad_sq", "gradcam"])
    fractions: List[float] = Field(default_factory=lambda: [0.1, 0.3, 0.5, 0.7, 0.9])
    train_images: int = Field(default=2000, ge=100)
    test_images: int = Field(default=2000, ge=100)
    epochs: int = Field(default=1, ge=1)
    batch_size: int = Field(default=64, ge=8)


class LocalisationSettings(_Section):
    """Pointing game and energy inside the mask; only for datasets that provide masks."""

    enabled: bool = True
    tolerance: int = Field(default=15, ge=0)


class SegmentationSettings(_Section):
    """CAM threshold segmentation (Selvaraju et al. 2017): masks and boxes at fractions of the maximum."""

    enabled: bool = True
    thresholds: List[float] = Field(default_factory=lambda: [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9])
    largest_component: bool = False


class EvaluationSettings(_Section):
    enabled: bool = False
    methods: Optional[List[str]] = None  # None: every outcome method
    # method -> parameter overrides for re-computed maps
    params: Dict[str, Dict[str, object]] = Field(default_factory=dict)
    selectivity: SelectivitySettings = Field(default_factory=SelectivitySettings)
    sensitivity: SensitivitySettings = Field(default_factory=SensitivitySettings)
    sanity: SanitySettings = Field(default_factory=SanitySettings)
    roar: RoarSettings = Field(default_factory=RoarSettings)
    localisation: LocalisationSettings = Field(default_factory=LocalisationSettings)
    segmentation: SegmentationSettings = Field(default_factory=SegmentationSettings)
