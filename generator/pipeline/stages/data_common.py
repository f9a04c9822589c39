"""Shared inputs of the data stages: which training examples, which held-out examples, and the
network's activations on them (computed once per run, only when some data artifact is missing).

Training examples
    When the model was trained here (the Fashion-MNIST CNN), its real training split, read from
    where training read it, and its per-epoch checkpoints (TracIn needs them). Otherwise the
    configured dataset is split with the report's seed: ``1 - holdout`` is treated as the
    reference ("training") set, the rest as held-out examples; TracIn then has only the final
    weights. On a CPU the training examples are a class-stratified, seeded subset of
    ``data.pool.cpu`` examples, on CUDA ``data.pool.cuda`` (0 = all).

Held-out examples
    The configured dataset itself when the training examples come from elsewhere (Fashion-MNIST:
    the test split), otherwise the held-out share of it.

This module registers no stage.
"""

from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Optional, Tuple, Union

import numpy as np
import torch
from torch import nn

from generator.artifacts.keys import input_digest
from generator.config import ModelConfig
from generator.engine.hooks import capture_activations, forward_hook, hooks_removed_after
from generator.engine.layers import get_layer
from generator.engine.preprocess import batches, display_images
from generator.pipeline.context import RunContext
from generator.pipeline.inputs import DisplayRows, model_input

VERSION = "1"
_SPLITS: Dict[Tuple, "DataSplit"] = {}
_PASSES: Dict[Tuple, Dict[str, np.ndarray]] = {}


@dataclass
class DataSplit:
    """Training and held-out examples of one (model, dataset) pair, as the model sees them."""

    train_pixels: DisplayRows  # uint8 N x H x W x C as the model sees them, read on demand
    train_labels: np.ndarray  # int64 N
    train_index: np.ndarray  # rows of the training source the pool holds (sorted)
    train_total: int  # size of the whole training source
    train_source: str  # words for the page
    test_pixels: DisplayRows
    test_labels: np.ndarray
    test_index: np.ndarray  # items of the configured dataset
    test_ids: List[str]
    checkpoints: List[Tuple[Dict[str, torch.Tensor], float, str]] = field(default_factory=list)  # (state, lr, name)
    from_training: bool = False  # checkpoints are real training checkpoints
    digest: str = ""  # everything that determines the split

    def describe(self) -> Dict[str, object]:
        return {"train_source": self.train_source, "train_total": int(self.train_total),
                "train_used": int(len(self.train_index)), "test_used": int(len(self.test_index)),
                "checkpoints": [name for _, _, name in self.checkpoints],
                "learning_rates": [float(lr) for _, lr, _ in self.checkpoints],
                "from_training": self.from_training}


def applies(ctx: RunContext, mc: ModelConfig, dataset_id: str) -> bool:
    """Labelled datasets whose classes are the model's."""
    loaded, ds = ctx.models.get(mc.id), ctx.datasets.get(dataset_id)
    if loaded is None or ds is None or not ds.has_labels:
        return False
    return len(ds.class_names) == loaded.spec.num_classes and len(ds) >= 4


def stratified_subset(labels: np.ndarray, size: int, seed: int) -> np.ndarray:
    """Sorted indices of a seeded subset of about ``size`` rows with each class in proportion
    (every class keeps at least one row); all rows when ``size`` is 0 or at least ``len``."""
    n = len(labels)
    if size <= 0 or size >= n:
        return np.arange(n)
    perm = np.random.default_rng(seed).permutation(n)
    out = []
    for c in np.unique(labels):
        rows = perm[labels[perm] == c]
        out.append(rows[: max(1, int(round(size * len(rows) / n)))])
    return np.sort(np.concatenate(out))


def _checkpoint_list(ctx: RunContext, mc: ModelConfig):
    loaded = ctx.models[mc.id]
    key = loaded.artifacts.get("training")
    art = ctx.store.get("training", key) if key else None
    if art is None:
        return None, None
    cks = torch.load(art.file("checkpoints"), map_location="cpu", weights_only=True)
    return art, [(c["state_dict"], float(c["learning_rate"]), f"epoch {c['epoch']}") for c in cks]


def data_split(ctx: RunContext, mc: ModelConfig, dataset_id: str) -> DataSplit:
    loaded, ds = ctx.models[mc.id], ctx.datasets[dataset_id]
    spec, seed = loaded.spec, ctx.config.seed
    size = ctx.config.data.pool.size(ctx.device.type)
    holdout = ctx.config.data.pool.holdout
    cache = (spec.weights_digest, ds.digest(), size, holdout, seed, loaded.artifacts.get("training"))
    if cache in _SPLITS:
        return _SPLITS[cache]
    art, checkpoints = _checkpoint_list(ctx, mc)
    # Rows, not pixels: a folder of 50,000 photos is read batch by batch when a pass needs it.
    all_test = DisplayRows(spec, ds)
    labels = ds.labels()
    if art is not None and art.record.get("data", {}).get("source"):
        # The model's own training split (Fashion-MNIST), read from where training read it.
        from generator.data.sources import load_fashion_mnist_arrays

        images, train_labels = load_fashion_mnist_arrays("train", art.record["data"]["source"])
        index = stratified_subset(train_labels, size, seed)
        pixels = display_images([images[i][:, :, None] for i in index], spec)
        split = DataSplit(DisplayRows(spec, array=pixels), train_labels[index], index, len(images),
                          f"the model's training split ({len(images):,} images)",
                          all_test, labels, np.arange(len(ds)), [it.id for it in ds.items],
                          checkpoints, True)
        split.digest = input_digest("data_split", version=VERSION, training=art.key, index=index.tolist(),
                                    test=ds.digest())
    else:
        perm = np.random.default_rng(seed).permutation(len(ds))
        n_test = max(1, int(round(holdout * len(ds))))
        test_rows, rest = np.sort(perm[:n_test]), np.sort(perm[n_test:])
        index = rest[stratified_subset(labels[rest], size, seed)]
        final = [({k: v.detach().cpu() for k, v in loaded.module.state_dict().items()}, 1.0, "final weights")]
        split = DataSplit(all_test.subset(index), labels[index], index, len(rest),
                          f"{1 - holdout:.0%} of dataset {dataset_id} ({len(rest):,} images; the rest is held out)",
                          all_test.subset(test_rows), labels[test_rows], test_rows, [ds.items[i].id for i in test_rows],
                          final, False)
        split.digest = input_digest("data_split", version=VERSION, data=ds.digest(), index=index.tolist(),
                                    test=test_rows.tolist())
    _SPLITS[cache] = split
    return split


def last_linear(module: nn.Module) -> Tuple[str, nn.Linear]:
    name = None
    for n, m in module.named_modules():
        if isinstance(m, nn.Linear):
            name = n
    if name is None:
        raise ValueError("the model has no nn.Linear layer; influence scores need one")
    return name, get_layer(module, name)


def _pixel_batches(pixels: Union[np.ndarray, DisplayRows], batch_size: int) -> Iterator[np.ndarray]:
    if isinstance(pixels, DisplayRows):
        for _, batch in pixels.batches(batch_size):
            yield batch
    else:
        for sl in batches(len(pixels), batch_size):
            yield pixels[sl]


def _rows_of(pixels: Union[np.ndarray, DisplayRows], rows: np.ndarray) -> Union[np.ndarray, DisplayRows]:
    return pixels.subset(rows) if isinstance(pixels, DisplayRows) else pixels[rows]


@torch.no_grad()
def forward_pass(module: nn.Module, spec, pixels: Union[np.ndarray, DisplayRows], device: torch.device, *,
                 embedding_layer: Optional[str], channel_layer: Optional[str], batch_size: int = 500
                 ) -> Dict[str, np.ndarray]:
    """One pass over ``pixels`` (an array, or rows read batch by batch): ``logits``, the
    embedding (flattened), the channel layer's spatially mean-pooled activations, and the last
    linear layer's input and output."""
    lin_name, lin = last_linear(module)
    layers = {k: v for k, v in (("embedding", embedding_layer), ("channels", channel_layer)) if v}
    mods = {role: get_layer(module, name) for role, name in layers.items()}
    out: Dict[str, List[np.ndarray]] = {k: [] for k in ["logits", "lin_in", "lin_out", *layers]}
    lin_store: Dict[str, torch.Tensor] = {}
    was_training = module.training
    module.eval()
    try:
        with hooks_removed_after() as handles, capture_activations(module, mods) as store:
            handles.append(forward_hook(lin,
                lambda _m, i, o: lin_store.update(lin_in=i[0].detach(), lin_out=o.detach())))
            for batch in _pixel_batches(pixels, batch_size):
                logits = module(model_input(spec, batch, device))
                out["logits"].append(logits.float().cpu().numpy())
                out["lin_in"].append(lin_store["lin_in"].flatten(1).float().cpu().numpy())
                out["lin_out"].append(lin_store["lin_out"].float().cpu().numpy())
                if "embedding" in layers:
                    out["embedding"].append(store["embedding"].flatten(1).float().cpu().numpy())
                if "channels" in layers:
                    a = store["channels"]
                    out["channels"].append((a.flatten(2).mean(2) if a.dim() > 2 else a).float().cpu().numpy())
    finally:
        module.train(was_training)
    return {k: np.concatenate(v) for k, v in out.items()}


def embedding_layer(ctx: RunContext, mc: ModelConfig) -> Optional[str]:
    spec = ctx.models[mc.id].spec
    return ctx.config.data.embedding_layer or spec.embedding_layer


def channel_layer(ctx: RunContext, mc: ModelConfig) -> Optional[str]:
    spec = ctx.models[mc.id].spec
    return ctx.config.data.decision_set.channel_layer or spec.cam_layer or (spec.layers[-1] if spec.layers else None)


def final_passes(ctx: RunContext, mc: ModelConfig, dataset_id: str
                 ) -> Tuple[Dict[str, np.ndarray], Dict[str, np.ndarray]]:
    """The final model's pass over the training pool and over the held-out examples (cached)."""
    split = data_split(ctx, mc, dataset_id)
    loaded = ctx.models[mc.id]
    emb, ch = embedding_layer(ctx, mc), channel_layer(ctx, mc)
    res = []
    for role, pixels in (("train", split.train_pixels), ("test", split.test_pixels)):
        key = (split.digest, loaded.spec.weights_digest, role, emb, ch, ctx.device.type)
        if key not in _PASSES:
            _PASSES[key] = forward_pass(loaded.module, loaded.spec, pixels, ctx.device,
                                        embedding_layer=emb, channel_layer=ch)
        res.append(_PASSES[key])
    return res[0], res[1]


def checkpoint_passes(ctx: RunContext, mc: ModelConfig, dataset_id: str, test_rows: np.ndarray
                      ) -> List[Tuple[Dict[str, np.ndarray], Dict[str, np.ndarray], Dict[str, torch.Tensor], float]]:
    """For every checkpoint: the last linear layer's inputs/outputs on the pool and on the chosen
    held-out rows, the layer's weights and the learning rate. Checkpoints equal to the final
    weights reuse the final pass."""
    split = data_split(ctx, mc, dataset_id)
    loaded = ctx.models[mc.id]
    lin_name, _ = last_linear(loaded.module)
    final_state = loaded.module.state_dict()
    out = []
    for state, lr, _name in split.checkpoints:
        same = all(torch.equal(state[k].cpu(), v.cpu()) for k, v in final_state.items() if k in state)
        if same:
            tr, te = final_passes(ctx, mc, dataset_id)
            te = {k: v[test_rows] for k, v in te.items()}
        else:
            model = copy.deepcopy(loaded.module)
            model.load_state_dict(state)
            model.to(ctx.device).eval()
            tr = forward_pass(model, loaded.spec, split.train_pixels, ctx.device, embedding_layer=None,
                              channel_layer=None)
            te = forward_pass(model, loaded.spec, _rows_of(split.test_pixels, test_rows), ctx.device,
                              embedding_layer=None, channel_layer=None)
            del model
        prefix = f"{lin_name}." if lin_name else ""
        lin_state = {k[len(prefix):]: v for k, v in state.items()
                     if k.startswith(prefix) and k[len(prefix):] in ("weight", "bias")}
        out.append((tr, te, lin_state, lr))
    return out


def array_digest(*arrays: np.ndarray) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()
