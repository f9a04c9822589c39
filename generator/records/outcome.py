"""Records of the outcome dimension: predictions, attribution maps, CAM threshold segmentation.

Written by :mod:`generator.pipeline.stages.predictions`, ``outcome`` and ``segmentation``.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from generator.records.base import Number, Part, Record, register


class TopClass(Part):
    index: int
    name: str
    probability: Number


class PredictionRow(Part):
    """One shown image with its label and top-k predictions."""

    id: str
    title: Optional[str]
    licence: Optional[str]
    source: Optional[str]
    label: Optional[int]
    label_name: Optional[str]
    top: List[TopClass]


@register("predictions")
class PredictionsRecord(Record):
    """Top-k predictions on a whole dataset; the accuracy fields exist only for labelled
    datasets whose classes are the model's (``has_labels``). Also stored as ``summary.json``."""

    model: str
    dataset: str
    count: int
    top_k: int
    has_labels: bool
    accuracy: Optional[Number] = None
    top_k_accuracy: Optional[Number] = None
    confusion: Optional[List[List[int]]] = None  # true class x predicted class
    per_class_accuracy: Optional[List[Number]] = None
    shown: List[PredictionRow]


@register("attribution")
class AttributionRecord(Record):
    """One attribution method's maps (``maps.npz``) for the shown images of a pair."""

    model: str
    dataset: str
    method: str
    params: Dict[str, Any]  # the method's effective parameters (free-form per method)
    signed: bool
    reduction: str
    images: List[str]
    targets: List[int]
    target_names: List[str]
    target_probabilities: List[Number]
    # Method-specific numbers (per-image lists such as completeness_gap, or scalars such as
    # alphas): free-form, the method catalogue says which columns a page shows.
    extras: Dict[str, Any]
    doc: str


@register("cam_segmentation")
class CamSegmentationRecord(Record):
    """Grad-CAM thresholded at fractions of its maximum: mask areas and boxes per threshold."""

    model: str
    dataset: str
    images: List[str]
    targets: List[str]  # target class names
    thresholds: List[Number]
    largest_component: bool
    area: List[List[Number]]  # threshold x image, fraction of the image
    boxes: List[List[List[int]]]  # threshold x image x (x0, y0, x1, y1); -1s when empty
    layer: Optional[str]
