"""Records of the comparison of models on one dataset (:mod:`generator.pipeline.stages.compare`).

One ``compare`` artifact per dataset that two or more compared models run on. Its record holds
the agreement numbers; its ``maps.npz`` holds, per image ``i``, the common-grid crop of the
original image (``image_<i>``, uint8 H x W x C) and each model's map of each compared method
resampled onto that image's common grid (``map_<i>_<model index>_<method index>``, float32).

Agreement values that are not defined (a constant map has no rank order and no top pixels) are
``null`` with the reason beside them, never NaN; means are over the defined values only.
"""

from __future__ import annotations

from typing import Dict, List, Literal, Optional

from generator.records.base import Number, Part, Record, register

#: How two models' class sets relate, which decides how their top-1 predictions are compared.
ClassRelation = Literal["same", "shared_names", "disjoint"]


class ComparedModel(Part):
    """A compared model: its preprocessing (what part of each image it sees) and which of the
    compared methods have maps for it."""

    id: str
    input_size: List[int]  # channels, height, width
    resize: Optional[int]  # shorter side before the centre crop; None: resized straight to the input size
    classes: int  # number of classes
    methods: List[str]  # compared methods whose stored maps were read for this model


class ModelOnImage(Part):
    """One model on one image: its top-1 prediction, the class its maps explain, and the part
    of the original image it sees."""

    model: str
    top_class: Optional[str]  # None: the model's predictions are missing
    top_index: Optional[int]
    top_probability: Optional[Number]
    explains: Optional[str]  # the class its maps explain (the outcome target); None: no maps
    explains_probability: Optional[Number]
    region: List[Number]  # x0, y0, x1, y1 of its centre crop, in original-image pixels


class ImageAgreement(Part):
    """One image: the region every model sees, the common grid, and its mean agreement."""

    id: str
    title: str
    size: List[int]  # original height, width
    region: List[Number]  # x0, y0, x1, y1 every model sees, in original-image pixels
    grid: List[int]  # common grid height, width (maps and the image crop in maps.npz)
    models: List[ModelOnImage]
    mean_spearman: Optional[Number]  # over every pair x method with a defined value; None: none defined
    mean_topk_iou: Optional[Number]
    undefined: int  # pair x method values left undefined (constant maps)


class MethodAgreement(Part):
    """One method for one pair of models: a value per image (None where undefined)."""

    method: str
    spearman: List[Optional[Number]]
    topk_iou: List[Optional[Number]]
    undefined: List[Optional[str]]  # the reason per image, e.g. "undefined (constant map of b)"; None: defined
    mean_spearman: Optional[Number]  # over the defined images; None: none defined
    mean_topk_iou: Optional[Number]
    defined: int
    undefined_count: int


class PairAgreement(Part):
    """Two models: how often their top-1 predictions agree, and their maps' agreement per method."""

    models: List[str]  # the two model ids, in the compared order
    classes: ClassRelation  # same class list | class names overlap | no class name in common
    shared_classes: int  # class names both models have
    top1_agree: List[Optional[bool]]  # per image; None where not defined
    top1_agreement: Optional[Number]  # fraction of the images with both predictions; None: not defined
    top1_compared: int  # images on which the top-1 predictions were compared
    methods: List[MethodAgreement]  # compared methods with maps for both models


@register("compare")
class CompareRecord(Record):
    """Several models on one dataset: maps on a common grid, agreement per pair and method."""

    dataset: str
    models: List[ComparedModel]
    methods: List[str]  # compared methods, in page order
    signed: Dict[str, bool]  # method -> whether its maps are signed (colour scale)
    top_k: Number  # fraction of the pixels in the top-k sets
    grid_most: int  # at most this many common-grid cells a side
    images: List[ImageAgreement]
    pairs: List[PairAgreement]
    order: List[str]  # image ids, least mean agreement first (images with none defined last)
