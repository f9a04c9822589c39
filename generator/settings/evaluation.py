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
    """Deletion / insertion curves (Petsiuk et al. 2018) from the stored outcome maps, and how
    far their order can be called a ranking.

    A map that is all zero, constant (range at most ``constant_tolerance`` times its largest
    magnitude) or not finite gives an arbitrary deletion order: that image is left out of the
    method's figures, and a method with such maps on most images is not ranked. Below
    ``min_images`` images the page shows the order but says it is not a ranking; above, each
    method's mean comes with a bootstrap interval (``bootstrap`` resamples, fixed seed) and the
    order is called resolved only when neighbours are separated; ``min_images`` is also the
    fewest images at which the page calls a class-sensitivity or sanity flag more than an
    indication. Two methods whose maps correlate at least ``identical_correlation`` on every
    image are named as the same maps. ``min_images`` and ``bootstrap`` only judge the recorded
    numbers when the pages are rendered: changing them recomputes nothing.
    """

    steps: int = Field(default=10, ge=2, le=200)
    patch: Union[int, float] = 1  # pixels, or a fraction (< 1) of the image side: cells removed together
    deletion_baseline: Literal["zeros", "blur", "mean"] = "zeros"
    insertion_baseline: Literal["zeros", "blur", "mean"] = "blur"
    output: Literal["probability", "logit"] = "probability"
    min_images: int = Field(default=5, ge=2)
    bootstrap: int = Field(default=2000, ge=100, le=100_000)
    constant_tolerance: float = Field(default=1e-5, ge=0, lt=1)
    identical_correlation: float = Field(default=0.995, gt=0, le=1)


class SensitivitySettings(_Check):
    """Maps for the top-1, the runner-up and a random class; flagged above ``threshold``."""

    threshold: float = Field(default=0.9, ge=-1, le=1)


class SanitySettings(_Check):
    """Cascading model-parameter randomisation (Adebayo et al. 2018)."""

    threshold: float = Field(default=0.5, ge=-1, le=1)
    max_layers: int = Field(default=12, ge=1)  # at most this many cascade steps (top-down)


class RoarSettings(_Check):
    """ROAR / KAR (Hooker et al. 2019) with a reduced retraining budget; only models whose
    training can be repeated here (the embedded Fashion-MNIST CNN).

    ``imputation``: removed pixels get the mean pixel (``mean``, Hooker et al.) or ROAD's noisy
    linear imputation (``road``, Rong et al. 2022: the weighted mean of the neighbours plus
    Gaussian noise of ``road_noise``, in pixel units 0..1), which hides the removed region's
    shape; it adds a sparse solve per image (on 2 CPU cores about as long again as the retraining
    for the default budget, some 3 minutes; ``benchmarks/roar_imputation.py``). ``leak_margin``: how far
    (accuracy, 0..1) above the unmodified retraining or the random baseline an accuracy must be
    before the page says the removal mask leaks the class (at least twice the accuracy's
    binomial standard error); it only judges the recorded accuracies on the page.
    """

    methods: List[str] = Field(default_factory=lambda: ["saliency", "integrated_gradients", "smoothgrad_sq", "gradcam"])
    fractions: List[float] = Field(default_factory=lambda: [0.1, 0.3, 0.5, 0.7, 0.9])
    train_images: int = Field(default=2000, ge=100)
    test_images: int = Field(default=2000, ge=100)
    epochs: int = Field(default=1, ge=1)
    batch_size: int = Field(default=64, ge=8)
    imputation: Literal["mean", "road"] = "mean"
    road_noise: float = Field(default=0.01, ge=0, le=1)
    leak_margin: float = Field(default=0.02, ge=0, le=1)


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
