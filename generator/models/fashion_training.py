"""Train-on-first-use for ``embedded:fashion_mnist_cnn``, cached as an artifact.

This module knows nothing of model sources: :mod:`generator.models.sources` calls it and wraps
what it returns, so the two never import each other.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import asdict
from typing import Any, Callable, Mapping, Optional, Tuple

import torch
from torch import nn

from generator.artifacts.keys import effective_key
from generator.artifacts.store import Artifact, json_bytes
from generator.data.sources import FASHION_MNIST_CLASSES, find_fashion_mnist, load_fashion_mnist_arrays
from generator.models.fashion_cnn import (
    ARCHITECTURE_VERSION,
    FASHION_MEAN,
    FASHION_STD,
    TrainingSettings,
    build_fashion_cnn,
    train_fashion_cnn,
)
from generator.models.spec import ModelSpec, code_digest

TRAINING_KIND = "training"


def _torch_bytes(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def training_settings(model_id: str, options: Optional[Mapping[str, Any]]) -> TrainingSettings:
    """The config's ``training:`` options as :class:`TrainingSettings`; unknown names are an error."""
    options = dict(options or {})
    try:
        return TrainingSettings(**options)
    except TypeError:
        raise ValueError(f"model {model_id!r}: unknown training option(s) in {sorted(options)}; "
                         f"allowed: {sorted(asdict(TrainingSettings()))}") from None


def trained_fashion_cnn(model_id: str, source: str, *, store: Any, device: torch.device,
                        options: Optional[Mapping[str, Any]] = None, data_path: Optional[str] = None,
                        progress: Optional[Callable[[str, int, int], None]] = None
                        ) -> Tuple[nn.Module, ModelSpec, Artifact]:
    """The CNN with weights from ``store``, trained first when no artifact exists yet.

    Returns the module, its spec (before the user's overrides) and the training artifact.
    """
    if store is None:
        raise RuntimeError("embedded:fashion_mnist_cnn needs an artifact store to cache its training")
    settings = training_settings(model_id, options)
    directory = find_fashion_mnist(data_path)
    train_x, train_y = load_fashion_mnist_arrays("train", data_path)
    test_x, test_y = load_fashion_mnist_arrays("test", data_path)
    data_digest = hashlib.sha256(train_x.tobytes() + train_y.tobytes() + test_x.tobytes()
                                 + test_y.tobytes()).hexdigest()
    # The device is part of the key: float arithmetic differs between CPU and GPU.
    key = effective_key(TRAINING_KIND, family="training", version=ARCHITECTURE_VERSION, params=asdict(settings),
                        inputs={"data": data_digest}, device=device.type)

    def compute():
        def report(step: int, total: int) -> None:
            if progress:
                progress("train fashion_mnist_cnn", step, total)

        result = train_fashion_cnn(train_x, train_y, test_x, test_y, settings, device, report)
        record = {"model": model_id, "test_accuracy": result["test_accuracy"], "history": result["history"],
                  "settings": result["settings"], "train_seconds": round(result["seconds"], 1),
                  "data": {"source": str(directory), "train": int(len(train_x)), "test": int(len(test_x))}}
        checkpoints = [{"epoch": c["epoch"], "learning_rate": c["learning_rate"], "state_dict": c["state_dict"]}
                       for c in result["checkpoints"]]
        return record, {"weights": ("weights.pt", _torch_bytes(result["state_dict"])),
                        "checkpoints": ("checkpoints.pt", _torch_bytes(checkpoints)),
                        "history": ("history.json", json_bytes(result["history"]))}

    artifact, _ = store.get_or_compute(TRAINING_KIND, key, compute)
    module = build_fashion_cnn()
    module.load_state_dict(torch.load(artifact.file("weights"), map_location="cpu", weights_only=True))
    spec = ModelSpec(
        id=model_id, source=source, input_size=(1, 28, 28), mean=FASHION_MEAN, std=FASHION_STD,
        class_names=list(FASHION_MNIST_CLASSES), resize=None, interpolation="bilinear",
        layers=["relu1", "relu2", "relu3"], cam_layer="relu2", embedding_layer="relu3",
        architecture="2 x (conv 3x3, batch norm, ReLU, max-pool) + 2 fully connected layers, 421k parameters",
        description="A small CNN trained by this tool on the Fashion-MNIST training set (60,000 images).",
        weights=f"trained here on first use (artifact {artifact.key})", licence="same as this report",
        extra={"training_artifact": artifact.key, "test_accuracy": artifact.record["test_accuracy"]},
        code_digest=code_digest("embedded fashion_mnist_cnn", modules=("generator.models.fashion_cnn",)),
    )
    return module, spec, artifact
