"""Records of the concepts stage (:mod:`generator.pipeline.stages.concepts`).

* ``concepts_tcav``: one per (model, dataset): held-out CAV accuracy and TCAV score tests per
  layer x concept x class; ``examples.npz`` holds a few images of each concept
  (``concept_<i>``, uint8 N x H x W x C) and of random set 0 (``random``).
* ``concepts_rcv``: one per (model, dataset): R² per layer x measure and the classes'
  sensitivities.
* ``concepts_dissection``: one per (model, dataset): every unit's label per layer, the
  concept list and the per-category summary; ``examples.npz`` holds example images with their
  masks for the derivation figure (``image_<i>``, ``mask_<i>_<concept index>``).

Values that are not defined (a constant sample, no images of a class) are ``null``, never NaN.
"""

from __future__ import annotations

from typing import Dict, List, Optional

from generator.records.base import Number, Part, Record, register


class ConceptInfo(Part):
    name: str
    category: str  # colour | texture | material | part | object | scene | measure
    source: str  # how it was made, in words for the page
    images: int  # images that have it (TCAV: its images; dissection: images with a non-empty mask or the label)


class ClassInfo(Part):
    index: int
    name: str
    images: int  # images the class's scores are computed on
    scored_on: str  # "class" (its own images) or "all" (too few of its own: every image)


class ClassScore(Part):
    """TCAV of one class for one concept at one layer."""

    cls: int  # class index
    mean: Number  # mean TCAV score over the runs (one per random set)
    std: Optional[Number]
    random_mean: Number  # mean over the random concepts
    random_std: Optional[Number]
    t: Optional[Number]
    p: Number
    p_adjusted: Number
    significant: bool


class TcavRow(Part):
    layer: str
    concept: str
    accuracy_mean: Optional[Number]  # held-out CAV accuracy, mean over runs
    accuracy_std: Optional[Number]
    scores: List[ClassScore]


@register("concepts_tcav")
class TcavRecord(Record):
    model: str
    dataset: str
    layers: List[str]
    concepts: List[ConceptInfo]
    classes: List[ClassInfo]
    random_sets: int
    images_per_set: int
    random_source: str  # where the random counterexamples come from, in words
    fit: str
    pool: str
    alpha: Number
    correction: str
    tests: int
    rows: List[TcavRow]
    random_accuracy: Dict[str, Optional[Number]]  # layer -> mean held-out accuracy of random-vs-random CAVs


class Sensitivity(Part):
    cls: int
    mean: Optional[Number]  # mean directional derivative of the class logit along the RCV
    std: Optional[Number]
    positive: Optional[Number]  # fraction of images with a positive derivative
    relevance: Optional[Number]  # bidirectional relevance R² x mean / std


class RcvRow(Part):
    layer: str
    measure: str
    r2: Optional[Number]  # held-out R²
    r2_train: Optional[Number]
    sensitivities: List[Sensitivity]


@register("concepts_rcv")
class RcvRecord(Record):
    model: str
    dataset: str
    layers: List[str]
    measures: List[ConceptInfo]
    classes: List[ClassInfo]
    images: int
    held_out: int
    image_source: str
    rows: List[RcvRow]
    measure_range: Dict[str, List[Number]]  # measure -> [min, max] over the images


class UnitLabelInfo(Part):
    unit: int
    label: Optional[str]  # e.g. "striped, IoU 0.12"; None: no concept passes a threshold
    concept: Optional[str]
    category: Optional[str]
    method: Optional[str]  # "iou" | "auc" | None
    best_iou_concept: Optional[str]
    best_iou: Optional[Number]
    best_auc_concept: Optional[str]
    best_auc: Optional[Number]
    auc_low: Optional[Number]  # lower 95 % bound of the best AUC (Hanley & McNeil)
    auc_p: Optional[Number]  # its corrected p-value


class LayerDissection(Part):
    layer: str
    units: int
    spatial: bool  # False: no per-pixel IoU (a vector layer); AUC labels only
    thresholds_exact: bool
    labels: List[UnitLabelInfo]
    summary: Dict[str, Dict[str, int]]  # category -> concept -> number of detector units
    labelled: int


@register("concepts_dissection")
class DissectionRecord(Record):
    model: str
    dataset: str
    images: int
    image_source: str
    quantile: Number
    iou_threshold: Number
    auc_threshold: Number
    alpha: Number
    pool: str
    pixel_concepts: List[ConceptInfo]
    label_concepts: List[ConceptInfo]
    derivation: Dict[str, str]  # concept or group -> how its masks were made
    examples: List[str]  # concept names of the example masks in examples.npz, in order
    example_count: int
    layers: List[LayerDissection]
