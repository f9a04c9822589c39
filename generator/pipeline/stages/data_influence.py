"""Stage: the training examples that most helped and most hurt chosen held-out predictions.

* TracIn (Pruthi et al. 2020) over the checkpoints saved while the model trained (or, for a
  model not trained here, over its final weights only), restricted to the last linear layer.
* Influence functions (Koh & Liang 2017) over the last linear layer, exact Hessian.

Both explain the model's *predicted* class of each chosen image (the loss of that class).
Every score is computed by :mod:`generator.methods.data.influence`. Because only the last
linear layer's parameters are involved and its output is the model's output, the methods are
run on that layer alone with its recorded inputs: per checkpoint, one forward pass of the
network over the training examples gives the layer's inputs, and the scores are exactly those
of the whole network restricted to that layer (the stage checks the layer's output equals the
model's output before relying on this).

Test images: the first ``data.influence.correct`` correctly classified and the first
``data.influence.misclassified`` misclassified held-out images (the held-out order is fixed).
"""

from __future__ import annotations

from typing import Any, Dict, Iterator, List

import numpy as np
import torch
from torch import nn

from generator.artifacts.store import npz_bytes
from generator.config import ModelConfig
from generator.pipeline.context import RunContext
from generator.pipeline.stages import Stage, register_stage
from generator.pipeline.stages.data_common import applies, checkpoint_passes, data_split, final_passes, last_linear
from generator.pipeline.units import Unit

KIND = "data_influence"
VERSION = "1"


def choose_test_rows(pred: np.ndarray, labels: np.ndarray, correct: int, wrong: int) -> np.ndarray:
    """The first ``correct`` correctly classified rows, then the first ``wrong`` misclassified."""
    ok = np.flatnonzero(pred == labels)[:correct]
    bad = np.flatnonzero(pred != labels)[:wrong]
    return np.concatenate([ok, bad]).astype(np.int64)


def _head(lin_state: Dict[str, torch.Tensor]) -> nn.Linear:
    w = lin_state["weight"].float()
    lin = nn.Linear(w.shape[1], w.shape[0], bias="bias" in lin_state)
    lin.load_state_dict({k: v.float() for k, v in lin_state.items()})
    return lin


def _check_head(out: Dict[str, np.ndarray]) -> None:
    if not np.allclose(out["lin_out"], out["logits"], rtol=1e-4, atol=1e-4):
        raise ValueError("the last linear layer's output is not the model's output; last-layer influence "
                         "scores are only exact when the loss is applied to that layer's output")


def top_rows(scores: np.ndarray, k: int, helpful_is_large: bool) -> tuple:
    """``(helpful, harmful)`` row indices, ``(M, k)`` each, best first; ties to the lower row."""
    order_up = np.argsort(scores, axis=1, kind="stable")  # smallest first
    order_down = np.argsort(-scores, axis=1, kind="stable")
    small, large = order_up[:, :k], order_down[:, :k]
    return (large, small) if helpful_is_large else (small, large)


def declare_influence(ctx: RunContext, mc: ModelConfig, dataset_id: str) -> Iterator[Unit]:
    """One unit: TracIn and influence functions for the chosen held-out images."""
    from generator.methods.data.influence import last_layer_influence, tracin

    s = ctx.config.data.influence
    loaded = ctx.models[mc.id]
    spec = loaded.spec
    split = data_split(ctx, mc, dataset_id)

    def compute():
        train, test = final_passes(ctx, mc, dataset_id)
        test_pred = test["logits"].argmax(1)
        test_prob = torch.softmax(torch.as_tensor(test["logits"]), 1).numpy()
        rows = choose_test_rows(test_pred, split.test_labels, s.correct, s.misclassified)
        if len(rows) == 0:
            raise ValueError("no held-out images to explain (data.influence.correct and misclassified are 0)")
        targets = torch.as_tensor(test_pred[rows])  # explain the predicted class
        y_train = torch.as_tensor(split.train_labels)
        train_pred = train["logits"].argmax(1)
        methods: Dict[str, Any] = {}
        arrays: Dict[str, np.ndarray] = {}
        k = min(s.top_k, len(split.train_labels))
        if "tracin" in s.methods:
            scores = np.zeros((len(rows), len(y_train)), dtype=np.float64)
            for tr, te, lin_state, lr in checkpoint_passes(ctx, mc, dataset_id, rows):
                _check_head(tr)
                head = _head(lin_state)
                res = tracin(lambda head=head: head, [(head.state_dict(), lr)], torch.as_tensor(tr["lin_in"]), y_train,
                             torch.as_tensor(te["lin_in"]), targets, params="last", top_k=k, device="cpu")
                scores += res.scores
            helpful, harmful = top_rows(scores, k, helpful_is_large=True)
            methods["tracin"] = {"helpful": helpful.tolist(), "harmful": harmful.tolist(),
                                 "helpful_scores": np.take_along_axis(scores, helpful, 1).tolist(),
                                 "harmful_scores": np.take_along_axis(scores, harmful, 1).tolist(),
                                 "checkpoints": split.describe()["checkpoints"],
                                 "learning_rates": split.describe()["learning_rates"],
                                 "sign": "positive = helpful (proponent), negative = harmful (opponent)"}
            arrays["tracin_scores"] = scores.astype(np.float32)
        if "influence_functions" in s.methods:
            _check_head(train)
            _, lin = last_linear(loaded.module)  # the final weights
            head = _head({name: p.detach().cpu() for name, p in lin.named_parameters()})
            res = last_layer_influence(head, torch.as_tensor(train["lin_in"]), y_train,
                                       torch.as_tensor(test["lin_in"][rows]), targets,
                                       damping=s.damping, top_k=k, device="cpu")
            methods["influence_functions"] = {
                "helpful": res.helpful.tolist(), "harmful": res.harmful.tolist(),
                "helpful_scores": res.helpful_scores.tolist(), "harmful_scores": res.harmful_scores.tolist(),
                "damping": float(s.damping), "n_params": res.extra.get("n_params"),
                "hessian_min_eig": res.extra.get("hessian_min_eig"),
                "sign": "I_up,loss: negative = helpful (up-weighting lowers the test loss), positive = harmful"}
            arrays["influence_functions_scores"] = res.scores.astype(np.float32)
        referenced = sorted({int(r) for m in methods.values() for key2 in ("helpful", "harmful")
                             for row in m[key2] for r in row})
        tests: List[Dict[str, Any]] = [
            {"row": int(r), "id": split.test_ids[r], "label": int(split.test_labels[r]),
             "prediction": int(test_pred[r]), "probability": round(float(test_prob[r, test_pred[r]]), 5),
             "correct": bool(test_pred[r] == split.test_labels[r])} for r in rows]
        train_info = {str(r): {"source_index": int(split.train_index[r]), "label": int(split.train_labels[r]),
                               "prediction": int(train_pred[r])} for r in referenced}
        record = {"model": mc.id, "dataset": dataset_id, "params": s.model_dump(), "split": split.describe(),
                  "class_names": list(spec.class_names), "tests": tests, "methods": methods, "train": train_info,
                  "device": ctx.device.type}
        arrays.update(test_rows=rows, test_pixels=split.test_pixels[rows], train_rows=np.asarray(referenced, np.int64),
                      train_pixels=split.train_pixels[referenced])
        return record, {"influence": ("influence.npz", npz_bytes(**arrays))}

    yield Unit(kind=KIND, family="data", version=VERSION,
               label=f"data (influential examples) of {mc.id} on {dataset_id}",
               compute=compute, model=mc.id, dataset=dataset_id, inputs={"split": split.digest},
               params=s.model_dump(), settings={"seed": ctx.config.seed, "device": ctx.device.type})


register_stage(Stage(name="data (influential examples)", order=41, declare=declare_influence,
                     enabled=lambda config: config.data.enabled and config.data.influence.enabled
                     and bool(config.data.influence.methods),
                     applies=applies))
