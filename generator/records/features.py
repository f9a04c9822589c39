"""Records of the features dimension: first-layer filters, channel galleries, diversity sets,
negatives, dataset examples, deconvnet projections, class visualisations and DeepDream
(:mod:`generator.pipeline.stages.features_compute`).

``settings`` (the render settings an optimisation ran with) stays a dict: its keys depend on
the profile and the parameterisation, and pages show whichever of them are present.
"""

from __future__ import annotations

from typing import Any, Dict, List

from generator.records.base import Number, Record, register


class _Rendered(Record):
    """What every optimised image set records: objectives and their final values."""

    descriptions: List[str]  # one objective description per image
    description: str  # the whole batch's objective
    values: List[Number]  # final objective value per image
    settings: Dict[str, Any]


@register("features_filters")
class FiltersRecord(Record):
    model: str
    layer: str
    shape: List[int]  # out, in, kh, kw
    in_channels: int
    out_channels: int


@register("features_gallery")
class GalleryRecord(_Rendered):
    """One visualisation per chosen channel of a layer."""

    model: str
    layer: str
    channels: List[int]
    layer_channels: int  # channels the layer has


@register("features_gallery_part")
class GalleryPartRecord(_Rendered):
    """Channels ``first_image`` .. of a layer's gallery, rendered as one unit of a split layer."""

    model: str
    layer: str
    channels: List[int]
    first_image: int


@register("features_diversity")
class DiversityRecord(_Rendered):
    """``per_unit`` images per channel, pushed apart (values are channel-major)."""

    model: str
    layer: str
    channels: List[int]
    per_unit: int


@register("features_negative")
class NegativeRecord(_Rendered):
    model: str
    layer: str
    channels: List[int]


@register("features_examples")
class ExamplesRecord(Record):
    """The top-``k`` dataset images per channel (rows follow ``channels``)."""

    model: str
    layer: str
    dataset: str
    channels: List[int]
    k: int
    reduce: str
    act_hw: List[int]
    input_hw: List[int]
    values: List[List[Number]]
    items: List[List[str]]
    titles: List[List[str]]
    description: str  # says "channel c" where a page names the channel


@register("features_deconv")
class DeconvRecord(Record):
    """Each channel's strongest dataset example projected back to pixels (Zeiler & Fergus 2014)."""

    model: str
    layer: str
    dataset: str
    channels: List[int]
    items: List[str]
    positions: List[List[int]]  # activation cell (row, column) per channel
    peaks: List[Number]
    description: str


@register("features_classes")
class ClassesRecord(_Rendered):
    """One image per class maximising its logit (Simonyan et al. 2013)."""

    model: str
    classes: List[int]
    names: List[str]
    source: str  # configured | predicted
    dataset: str


@register("features_deepdream")
class DeepDreamRecord(Record):
    """Photos dreamed at layers, shallow to deep (Mordvintsev, Olah & Tyka 2015)."""

    model: str
    dataset: str
    layers: List[str]
    items: List[str]
    titles: List[str]
    size: int
    steps: int
    octaves: int
    jitter: int
    descriptions: List[str]  # one per layer
