"""Stage: ROAR / KAR (Hooker et al. 2019) on the embedded Fashion-MNIST CNN.

The top-k% pixels of each training and test image by a method's map (from the trained model)
are replaced (ROAR) or all other pixels are (KAR), a fresh CNN is trained on the modified
training images and its test accuracy recorded. Replaced pixels get the mean pixel or, with
``evaluation.roar.imputation: road``, ROAD's noisy linear imputation (Rong et al. 2022). On CPU
the retraining budget is reduced (a subset of the training split, few epochs); the page states
the budget. Whether the removal mask leaks the class is judged by the page from the recorded
accuracies (:func:`generator.evaluation.statistics.roar_leak`, ``leak_margin``), so that setting
is not part of the key.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Dict, Iterator

import numpy as np
import torch

from generator.artifacts.store import npz_bytes
from generator.config import ModelConfig
from generator.pipeline.context import RunContext
from generator.pipeline.stages import Stage, register_stage
from generator.pipeline.stages.evaluation import effective_params, method_params
from generator.pipeline.units import Unit

KIND = "evaluation_roar"
VERSION = "2"  # 2: imputation (mean | road) recorded
ROAR_SOURCE = "embedded:fashion_mnist_cnn"


def attribution_maps(model, spec, name: str, x: torch.Tensor, labels: torch.Tensor, params: Dict[str, Any],
                     chunk: int = 500) -> torch.Tensor:
    """(N,H,W) maps of ``name`` for the true labels, ``chunk`` images at a time."""
    from generator.methods.attribution import ATTRIBUTION_METHODS

    explainer = ATTRIBUTION_METHODS.get(name)(model, spec, **params)
    return torch.cat([explainer.attribute(x[i:i + chunk], labels[i:i + chunk]).maps.detach().cpu()
                      for i in range(0, x.shape[0], chunk)])


def declare_roar(ctx: RunContext, mc: ModelConfig, dataset_id: str) -> Iterator[Unit]:
    """One unit per model: retrain on images with each method's top pixels removed or kept."""
    from generator.data.sources import load_fashion_mnist_arrays
    from generator.evaluation import roar_kar
    from generator.models.fashion_cnn import TrainingSettings, build_fashion_cnn, evaluate_accuracy, train_fashion_cnn
    from generator.pipeline.inputs import model_input

    s = ctx.config.evaluation.roar
    loaded = ctx.models[mc.id]
    spec = loaded.spec
    base = TrainingSettings(epochs=s.epochs, batch_size=s.batch_size, seed=ctx.config.seed)
    params = {m: method_params(ctx.config, m) for m in s.methods}

    def compute():
        train_x, train_y = load_fashion_mnist_arrays("train")
        test_x, test_y = load_fashion_mnist_arrays("test")
        train_x, train_y = train_x[: s.train_images], train_y[: s.train_images]
        test_x, test_y = test_x[: s.test_images], test_y[: s.test_images]
        maps_train, maps_test = {}, {}
        for m in s.methods:
            for arr, lab, out in ((train_x, train_y, maps_train), (test_x, test_y, maps_test)):
                x = model_input(spec, arr[..., None], ctx.device)
                torch.manual_seed(ctx.config.seed)
                out[m] = attribution_maps(loaded.module, spec, m, x, torch.as_tensor(lab, device=ctx.device),
                                          {"precision": ctx.config.precision, **params[m]})
        pixels = lambda a: torch.from_numpy(a).float().div(255).unsqueeze(1)  # noqa: E731
        to_uint8 = lambda t: t.squeeze(1).mul(255).round().clamp(0, 255).byte().numpy()  # noqa: E731

        def train(_model, x, y):
            # a tiny evaluation split: the accuracy that counts is measured by ``evaluate``
            result = train_fashion_cnn(to_uint8(x), y.numpy(), to_uint8(x[:8]), y[:8].numpy(), replace(base),
                                       ctx.device)
            net = build_fashion_cnn().to(ctx.device)
            net.load_state_dict(result["state_dict"])
            return net

        def evaluate(net, x, y):
            return evaluate_accuracy(net, to_uint8(x), y.numpy(), ctx.device)

        res = roar_kar(lambda: None, train, evaluate, pixels(train_x), torch.from_numpy(train_y.astype(np.int64)),
                       pixels(test_x), torch.from_numpy(test_y.astype(np.int64)), maps_train, maps_test,
                       fractions=s.fractions, seed=ctx.config.seed, imputation=s.imputation, noise=s.road_noise)
        original = evaluate_accuracy(loaded.module, test_x, test_y, ctx.device)
        roar = {m: [round(v, 6) for v in accs] for m, accs in res["roar"].items()}
        kar = {m: [round(v, 6) for v in accs] for m, accs in res["kar"].items()}
        record = {"model": mc.id, "dataset": dataset_id, "methods": list(s.methods) + ["random"],
                  "fractions": list(s.fractions), "reference_accuracy": round(res["reference_accuracy"], 6),
                  "original_model_accuracy": round(float(original), 6),
                  "roar": roar, "kar": kar, "imputation": s.imputation,
                  "road_noise": s.road_noise if s.imputation == "road" else None,
                  "budget": {"train_images": int(len(train_x)), "test_images": int(len(test_x)),
                             "epochs": s.epochs, "batch_size": s.batch_size,
                             "full_training": "60,000 images"},
                  "params": params}
        example = {f"{m}": maps_test[m][:4].numpy().astype(np.float32) for m in s.methods}
        return record, {"examples": ("examples.npz", npz_bytes(pixels=test_x[:4], **example))}

    # The Fashion-MNIST arrays are read from disk, not from the pair's dataset: the record only
    # names that dataset (one run per model), so its id enters the key but not its digest.
    # The leak margin only judges the record on the page; the noise only matters for ROAD.
    unkeyed = {"leak_margin"} | ({"road_noise"} if s.imputation == "mean" else set())
    yield Unit(kind=KIND, family="evaluation", version=VERSION, label=f"ROAR/KAR on {mc.id}", compute=compute,
               model=mc.id, dataset=dataset_id, dataset_digest=False,
               params={"methods": effective_params(ctx.config, list(s.methods)),
                       "settings": s.model_dump(exclude=unkeyed),
                       "training": dict(vars(base))},
               settings={"seed": ctx.config.seed, "device": ctx.device.type})


def _applies(ctx, mc: ModelConfig, dataset_id: str) -> bool:
    s = ctx.config.evaluation.roar
    first = mc.datasets[0] if mc.datasets else dataset_id
    # one run per model: the retraining does not depend on which dataset the pages show
    return mc.source == ROAR_SOURCE and s.applies_to(mc.id) and dataset_id == first


register_stage(Stage(name="evaluation ROAR/KAR", order=41, declare=declare_roar,
                     enabled=lambda config: config.evaluation.enabled and config.evaluation.roar.enabled,
                     applies=_applies))
