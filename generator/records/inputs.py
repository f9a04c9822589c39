"""Records of what a report runs on: datasets, models and the training of models trained here.

Written by :mod:`generator.pipeline.run` (``dataset``, ``model``) and
:mod:`generator.models.fashion_training` (``training``); read by the model, data and front pages.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from pydantic import ConfigDict

from generator.records.base import Number, Part, Record, register


class SkippedFile(Part):
    """An input file the dataset loader could not read, and why."""

    file: str
    reason: str


class DatasetItem(Part):
    """One of the first 50 images of a dataset, as the data page lists it."""

    id: str
    title: Optional[str]
    source: Optional[str]
    licence: Optional[str]
    label: Optional[int]
    shape: List[int]  # H, W, C as loaded


@register("dataset")
class DatasetRecord(Record):
    """A dataset's summary (``Dataset.summary()``); the same object is the ``summary`` file."""

    id: str
    source: str
    count: int
    class_names: List[str]
    description: Optional[str]
    licence: Optional[str]
    skipped: List[SkippedFile]
    items: List[DatasetItem]


class ModelSpecInfo(Part):
    """``ModelSpec.to_json()``: preprocessing, classes, layers and provenance of a model.

    Open to new keys: the spec is the model's self-description and sources add to it (code
    identity, for instance) without changing anything the pages read.
    """

    model_config = ConfigDict(extra="allow")

    id: str
    source: str
    input_size: List[int]  # C, H, W
    mean: List[Number]
    std: List[Number]
    num_classes: int
    resize: Optional[int]
    interpolation: str
    layers: List[str]
    cam_layer: Optional[str]
    embedding_layer: Optional[str]
    description: str
    architecture: str
    weights: str
    weights_digest: str
    licence: str
    # The token grid of a transformer, inferred from one traced input (models/tokens.py
    # TokenLayout.to_json); absent for a CNN.
    tokens: Optional[Dict[str, Any]] = None


@register("model")
class ModelRecord(Record):
    """A model's card data: spec, size, card metadata (free-form: the config's ``card`` fields)."""

    model: str
    title: str
    spec: ModelSpecInfo
    parameters: int
    card: Dict[str, Any]  # CardMetadata.model_dump(): field -> text, list or None
    class_names: List[str]
    modules: int
    training: Optional[str]  # key of the training artifact, for models trained here
    extra: Dict[str, Any]  # the spec's scalar extras (e.g. weights_source, test_accuracy)


class TrainingEpoch(Part):
    epoch: int
    train_loss: Number
    test_accuracy: Number
    mean_lr: Number
    seconds: Number


class TrainingData(Part):
    source: str  # the folder the Fashion-MNIST files were read from
    train: int
    test: int


@register("training")
class TrainingRecord(Record):
    """Training of a model trained by this tool on first use (the embedded Fashion-MNIST CNN)."""

    model: str
    test_accuracy: Number
    history: List[TrainingEpoch]
    settings: Dict[str, Any]  # TrainingSettings as a dict (epochs, batch_size, learning_rate, ...)
    train_seconds: Number
    data: TrainingData
