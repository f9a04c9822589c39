"""Stage: concepts and dissection, what units and layers mean in words a user can check.

Per (model, dataset) of the models in ``concepts.models`` (default every model), three units,
each an artifact:

* ``concepts_tcav`` (Kim et al. 2018): concept images (the procedural textures and colour
  fields of :mod:`generator.methods.concepts.textures`, and any user folders) against J random
  sets drawn from the user's own data (random dataset images when the dataset is large enough,
  random crops of its images otherwise); CAVs per layer, TCAV scores per class and their test
  against random concepts (:func:`generator.methods.concepts.tcav.run_tcav`).
* ``concepts_rcv`` (Graziani et al. 2018): regression concept vectors of the image measures on
  the dataset's images (topped up with random crops), their held-out R² and the classes'
  sensitivities.
* ``concepts_dissection`` (Bau et al. 2017; Bykov et al. 2023): every unit of every chosen layer
  labelled by IoU with per-pixel concepts (colours from pixels, Fashion-MNIST parts, user
  Broden masks) or by AUC with image-level labels (the dataset's classes, the textures).

**Pooled activations.** CAVs and RCVs are fitted on each layer's activations averaged over
positions (one value per channel): smaller than the flattened activations Kim et al. use, and
invariant to where in the image a texture is. A pooled direction v is the spatially uniform
direction in the full layer; the directional derivative along it is proportional to the
spatially averaged gradient dotted with v, which is what is scored.

**Classes.** The dataset's labels when it has them, else the model's top-1 predictions; the
``tcav.classes`` most frequent. A class with fewer than ``tcav.min_class_images`` images of its
own is scored on every image of the dataset, and the record says so.

The computation lives in :mod:`generator.methods.concepts`; this module only chooses images,
runs it and writes records.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch

from generator.artifacts.keys import FAMILIES
from generator.artifacts.store import npz_bytes
from generator.config import ModelConfig
from generator.data.imageio import IMAGE_SUFFIXES, read_image
from generator.data.sources import FASHION_MNIST_CLASSES
from generator.engine.batching import eval_mode
from generator.engine.preprocess import display_images, match_channels, normalise
from generator.methods.concepts import dissection as dis
from generator.methods.concepts import measures as ms
from generator.methods.concepts import textures
from generator.methods.concepts.activations import iter_activations, layer_activations, logit_gradients
from generator.methods.concepts.rcv import fit_rcvs, sensitivities
from generator.methods.concepts.stats import adjust_p
from generator.methods.concepts.tcav import RANDOM, run_tcav
from generator.pipeline.context import RunContext
from generator.pipeline.stages import Stage, register_stage
from generator.pipeline.units import Computed, Unit
from generator.records.concepts import DissectionRecord, RcvRecord, TcavRecord

KIND_TCAV, KIND_RCV, KIND_DISSECTION = "concepts_tcav", "concepts_rcv", "concepts_dissection"
VERSION = "1"
FAMILY = "concepts"
assert FAMILY in FAMILIES
EXAMPLES = 4  # example images per concept stored for the pages


# --- choosing images --------------------------------------------------------------------------------

def _pool(t: torch.Tensor) -> torch.Tensor:
    """One value per channel: spatial mean of conv maps, token mean of token grids."""
    if t.dim() == 4:
        return t.mean((2, 3))
    if t.dim() == 3:
        return t.mean(1)
    return t.reshape(t.shape[0], -1)


def _layers(ctx: RunContext, mc: ModelConfig) -> List[str]:
    return list(ctx.config.concepts.layers.get(mc.id) or ctx.models[mc.id].spec.layers)


def _to_input(ctx: RunContext, mc: ModelConfig, pixels: Sequence[np.ndarray]) -> Tuple[torch.Tensor, np.ndarray]:
    spec = ctx.models[mc.id].spec
    display = display_images(list(pixels), spec)
    return normalise(display, spec, ctx.device), display


def _random_sets(ctx: RunContext, dataset_id: str, sets: int, count: int, side: int, seed: int, channels: int
                 ) -> Tuple[List[List[np.ndarray]], str]:
    """J random sets of ``count`` images each: disjoint random dataset images when there are
    enough, else random crops of the dataset's images."""
    items = ctx.datasets[dataset_id].items
    rng = np.random.default_rng([seed, 4241])
    if len(items) >= sets * count:
        order = rng.permutation(len(items))[: sets * count]
        chosen = [[items[int(i)].pixels for i in order[j * count:(j + 1) * count]] for j in range(sets)]
        return chosen, f"{sets} disjoint sets of {count} random images of the dataset"
    crops = textures.random_crops([match_channels(it.pixels, channels) for it in items], side, sets * count, seed=seed)
    return ([list(crops[j * count:(j + 1) * count]) for j in range(sets)],
            f"{sets} sets of {count} random crops (15-60 % of the shorter side) of the dataset's {len(items)} images")


def _predictions(ctx: RunContext, mc: ModelConfig, x: torch.Tensor, batch: int) -> torch.Tensor:
    model = ctx.models[mc.id].module
    out = []
    with eval_mode(model), torch.no_grad():
        for i in range(0, len(x), batch):
            out.append(torch.softmax(model(x[i:i + batch]).float(), 1).cpu())
    return torch.cat(out)


def _class_images(ctx: RunContext, mc: ModelConfig, dataset_id: str
                  ) -> Tuple[torch.Tensor, torch.Tensor, List[Dict[str, Any]]]:
    """(inputs of the scored images, ``K x N`` mask of each class's images, class infos)."""
    t = ctx.config.concepts.tcav
    ds = ctx.datasets[dataset_id]
    spec = ctx.models[mc.id].spec
    names = spec.class_names
    if ds.has_labels:
        labels = ds.labels()
        counts = np.bincount(labels, minlength=len(names))
        ranked = sorted(range(len(counts)), key=lambda c: (-counts[c], c))
        classes = [int(c) for c in ranked if counts[c] > 0][:t.classes]
        index = [i for c in classes for i in np.flatnonzero(labels == c)[: t.class_images]]
        own = [int(labels[i]) for i in index]
        x, _ = _to_input(ctx, mc, [ds.items[i].pixels for i in index])
    else:
        x, _ = _to_input(ctx, mc, [it.pixels for it in ds.items[:max(t.class_images * t.classes, 50)]])
        probs = _predictions(ctx, mc, x, ctx.config.concepts.batch)
        top = probs.argmax(1).numpy()
        counts = np.bincount(top, minlength=len(names))
        best = probs.max(0).values.numpy()
        classes = [int(c) for c in sorted(np.flatnonzero(counts), key=lambda c: (-counts[c], -best[c], c))][:t.classes]
        own = [int(c) for c in top]
    own_arr = np.asarray(own)
    mask = torch.zeros(len(classes), len(own), dtype=torch.bool)
    infos = []
    for k, c in enumerate(classes):
        mine = own_arr == c
        enough = int(mine.sum()) >= t.min_class_images
        mask[k] = torch.from_numpy(mine) if enough else torch.ones(len(own), dtype=torch.bool)
        infos.append({"index": c, "name": names[c] if c < len(names) else str(c), "images": int(mask[k].sum()),
                      "scored_on": "class" if enough else "all"})
    return x, mask, infos


def _concept_images(ctx: RunContext, mc: ModelConfig) -> Dict[str, Tuple[np.ndarray, str, str]]:
    """concept -> (uint8 images, category, how they were made)."""
    t = ctx.config.concepts.tcav
    spec = ctx.models[mc.id].spec
    side = int(spec.input_size[1])
    out: Dict[str, Tuple[np.ndarray, str, str]] = {}
    for name in t.builtin:
        how = ("procedural texture, random colours and angle" if textures.CATEGORY[name] == "texture"
               else "flat colour with slow low-amplitude noise")
        out[name] = (textures.draw(name, side, t.images, seed=ctx.config.seed, channels=spec.channels),
                     textures.CATEGORY[name], how)
    for name, folder in t.folders.items():
        root = ctx.config.resolve(folder)
        files = sorted(p for p in Path(root).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)[: t.images]
        if len(files) < 2:
            raise ValueError(f"concept folder {root} of {name!r} has {len(files)} images; TCAV needs at least 2")
        out[name] = (display_images([read_image(p) for p in files], spec), "folder",
                     f"{len(files)} images from {folder}")
    return out


# --- TCAV ---------------------------------------------------------------------------------------------

def _num(v: Any) -> Optional[float]:
    v = float(v)
    return None if not np.isfinite(v) else round(v, 6)


def compute_tcav(ctx: RunContext, mc: ModelConfig, dataset_id: str) -> Computed:
    s = ctx.config.concepts
    t = s.tcav
    spec = ctx.models[mc.id].spec
    model = ctx.models[mc.id].module
    layers = _layers(ctx, mc)
    side = int(spec.input_size[1])
    concepts = _concept_images(ctx, mc)
    randoms, random_source = _random_sets(ctx, dataset_id, t.random_sets, t.images, side, ctx.config.seed,
                                          spec.channels)
    pixels = [p for images, _, _ in concepts.values() for p in images] + [p for rs in randoms for p in rs]
    x, display = _to_input(ctx, mc, pixels)
    acts = layer_activations(model, layers, x, batch=s.batch, adapter=_pool)
    concept_acts: Dict[str, Dict[str, torch.Tensor]] = {}
    at = 0
    for name, (images, _, _) in concepts.items():
        concept_acts[name] = {layer: acts[layer][at:at + len(images)] for layer in layers}
        at += len(images)
    random_acts = {layer: acts[layer][at:].reshape(t.random_sets, t.images, -1) for layer in layers}
    xc, mask, classes = _class_images(ctx, mc, dataset_id)
    grads = logit_gradients(model, layers, xc, [c["index"] for c in classes], batch=s.batch, adapter=_pool)
    result = run_tcav(concept_acts, random_acts, grads, mask.to(ctx.device), fit=t.fit, l2=t.l2, holdout=t.holdout,
                      seed=ctx.config.seed, alpha=t.alpha, correction=t.correction)
    rows = []
    for layer in layers:
        for name in concepts:
            entry = result.layers[layer][name]
            acc = np.asarray(entry.accuracy, dtype=np.float64)
            rows.append({"layer": layer, "concept": name, "accuracy_mean": _num(acc.mean()),
                         "accuracy_std": _num(acc.std(ddof=1)) if len(acc) > 1 else None,
                         "scores": [{"cls": classes[k]["index"], "mean": round(c.mean, 6), "std": _num(c.std),
                                     "random_mean": round(c.random_mean, 6), "random_std": _num(c.random_std),
                                     "t": _num(c.t), "p": round(c.p, 8), "p_adjusted": round(c.p_adjusted, 8),
                                     "significant": c.significant} for k, c in enumerate(entry.classes)]})
    record = {
        "model": mc.id, "dataset": dataset_id, "layers": layers,
        "concepts": [{"name": n, "category": cat, "source": how, "images": int(len(images))}
                     for n, (images, cat, how) in concepts.items()],
        "classes": classes, "random_sets": t.random_sets, "images_per_set": t.images, "random_source": random_source,
        "fit": t.fit, "pool": "spatial mean per channel", "alpha": t.alpha, "correction": t.correction,
        "tests": result.tests, "rows": rows,
        "random_accuracy": {layer: _num(np.mean(result.layers[layer][RANDOM].accuracy)) for layer in layers},
    }
    arrays = {}
    at = 0
    for i, (images, _, _) in enumerate(concepts.values()):
        arrays[f"concept_{i}"] = display[at:at + min(EXAMPLES, len(images))]
        at += len(images)
    arrays["random"] = display[at:at + EXAMPLES]
    return record, {"examples": ("examples.npz", npz_bytes(**arrays))}


# --- RCV ----------------------------------------------------------------------------------------------

def _image_pool(ctx: RunContext, dataset_id: str, most: int, topup: int, side: int, seed: int, channels: int
                ) -> Tuple[List[np.ndarray], List[Optional[int]], str]:
    """Dataset images (at most ``most``), topped up with random crops when there are fewer; with
    their labels (None for crops) and a sentence saying what they are."""
    items = ctx.datasets[dataset_id].items[:most]
    pixels = [it.pixels for it in items]
    labels: List[Optional[int]] = [it.label for it in items]
    extra = min(topup, most - len(items))
    how = f"{len(items)} images of the dataset"
    if extra > 0:
        pixels += list(textures.random_crops([match_channels(p, channels) for p in pixels], side, extra,
                                             seed=seed + 17))
        labels += [None] * extra
        how += f" and {extra} random crops of them"
    return pixels, labels, how


def compute_rcv(ctx: RunContext, mc: ModelConfig, dataset_id: str) -> Computed:
    s = ctx.config.concepts
    r = s.rcv
    spec = ctx.models[mc.id].spec
    model = ctx.models[mc.id].module
    layers = _layers(ctx, mc)
    pixels, _, how = _image_pool(ctx, dataset_id, r.images, r.images, int(spec.input_size[1]), ctx.config.seed,
                                 spec.channels)
    x, display = _to_input(ctx, mc, pixels)
    values = torch.stack([ms.measure(m, display) for m in r.measures], dim=1)  # N x M, on what the model sees
    varies = (values.max(0).values - values.min(0).values) > 1e-9
    acts = layer_activations(model, layers, x, batch=s.batch, adapter=_pool)
    xc, mask, classes = _class_images(ctx, mc, dataset_id)
    grads = logit_gradients(model, layers, xc, [c["index"] for c in classes], batch=s.batch, adapter=_pool)
    rows = []
    for layer in layers:
        fitted = fit_rcvs(acts[layer].cpu(), values, l2=r.l2, holdout=r.holdout, seed=ctx.config.seed)
        sens = sensitivities(grads[layer].cpu(), fitted.directions, fitted.r2, mask)
        for j, m in enumerate(r.measures):
            if not bool(varies[j]):  # a measure constant over the images (colourfulness of gray images)
                rows.append({"layer": layer, "measure": m, "r2": None, "r2_train": None, "sensitivities": []})
                continue
            rows.append({"layer": layer, "measure": m, "r2": _num(fitted.r2[j]),
                         "r2_train": _num(fitted.r2_train[j]),
                         "sensitivities": [{"cls": c["index"], "mean": _num(sens.mean[k, j]),
                                            "std": _num(sens.std[k, j]), "positive": _num(sens.positive[k, j]),
                                            "relevance": _num(sens.relevance[k, j])}
                                           for k, c in enumerate(classes)]})
    record = {
        "model": mc.id, "dataset": dataset_id, "layers": layers,
        "measures": [{"name": m, "category": "measure", "source": ms.MEASURES[m][1], "images": len(pixels)}
                     for m in r.measures],
        "classes": classes, "images": len(pixels), "held_out": int(len(fitted.test)) if layers else 0,
        "image_source": how, "rows": rows,
        "measure_range": {m: [round(float(values[:, j].min()), 6), round(float(values[:, j].max()), 6)]
                          for j, m in enumerate(r.measures)},
    }
    return record, {}


# --- dissection ---------------------------------------------------------------------------------------

def _is_fashion(ctx: RunContext, dataset_id: str) -> bool:
    ds = ctx.datasets[dataset_id]
    return list(ds.class_names) == list(FASHION_MNIST_CLASSES) and ds.has_labels


def _resize_masks(masks: torch.Tensor, side: Tuple[int, int]) -> torch.Tensor:
    if tuple(masks.shape[-2:]) == tuple(side):
        return masks
    return torch.nn.functional.interpolate(masks.float(), size=side, mode="nearest") > 0.5


def compute_dissection(ctx: RunContext, mc: ModelConfig, dataset_id: str) -> Computed:
    s = ctx.config.concepts
    d = s.dissection
    spec = ctx.models[mc.id].spec
    model = ctx.models[mc.id].module
    ds = ctx.datasets[dataset_id]
    layers = _layers(ctx, mc)
    h, w = int(spec.input_size[1]), int(spec.input_size[2])
    scale = min(1.0, d.mask_side / max(h, w))
    mask_size = (max(1, round(h * scale)), max(1, round(w * scale)))
    pixels, labels, how = _image_pool(ctx, dataset_id, d.images, d.topup, h, ctx.config.seed, spec.channels)
    tex = [n for n in textures.TEXTURES] if d.textures else []
    for name in tex:
        pixels += list(textures.draw(name, h, d.textures, seed=ctx.config.seed + 1, channels=spec.channels))
        labels += [None] * d.textures
    if tex:
        how += f" and {d.textures} procedural images of each texture ({', '.join(tex)})"
    display = display_images(pixels, spec)
    n = len(display)
    # pixel concepts: colours from pixels, Fashion parts, Broden masks
    pixel_masks = [_resize_masks(dis.colour_masks(display), mask_size)]
    names, cats = list(dis.COLOUR_NAMES), ["colour"] * len(dis.COLOUR_NAMES)
    derivation = {"colours": "each pixel named by hue, saturation and value (generator.methods.concepts.dissection."
                             "colour_masks): black v < 0.2; white s < 0.15 and v > 0.8; grey s < 0.15 otherwise; "
                             "chromatic pixels by hue: red, orange (brown when v < 0.6), yellow, green, blue, "
                             "purple, pink",
                  "textures": "the whole image, on the procedural images of the texture"}
    fashion = _is_fashion(ctx, dataset_id)
    if fashion:
        lab = [(-1 if v is None else int(v)) for v in labels]
        fm, fnames, fcats = dis.fashion_masks(display, [max(0, v) for v in lab], FASHION_MNIST_CLASSES)
        fm[torch.tensor([v < 0 for v in lab])] = False  # crops and textures have no garment
        pixel_masks.append(_resize_masks(fm, mask_size))
        names += fnames
        cats += fcats
        derivation.update({k: v for k, v in dis.PART_DERIVATION.items()})
        derivation["object"] = "the silhouette of the garment, on images of its class only"
    broden_pixels: List[np.ndarray] = []
    if d.masks:
        data = dis.load_broden(ctx.config.resolve(d.masks))
        broden_pixels = data.images
        derivation["broden"] = f"per-pixel masks read from {d.masks} (Broden format)"
    texture_masks = torch.zeros(n, len(tex), *mask_size, dtype=torch.bool)
    start = n - len(tex) * d.textures
    for j in range(len(tex)):
        texture_masks[start + j * d.textures:start + (j + 1) * d.textures, j] = True
    masks = torch.cat(pixel_masks + [texture_masks], dim=1)
    names += list(tex)
    cats += ["texture"] * len(tex)
    if broden_pixels:
        extra = display_images(broden_pixels, spec)
        bm = _resize_masks(data.masks, mask_size)
        pad_old = torch.zeros(n, bm.shape[1], *mask_size, dtype=torch.bool)
        pad_new = torch.zeros(len(extra), masks.shape[1], *mask_size, dtype=torch.bool)
        masks = torch.cat([torch.cat([masks, pad_old], 1), torch.cat([pad_new, bm], 1)], 0)
        display = np.concatenate([display, extra])
        labels += [None] * len(extra)
        names += data.names
        cats += data.categories
        n = len(display)
        how += f" and {len(extra)} images of the Broden folder"
    # image-level label concepts: the dataset's classes (one against the rest) and the textures
    label_names, label_cats, label_cols = [], [], []
    if any(v is not None for v in labels) and ds.class_names:
        for c, cname in enumerate(ds.class_names):
            col = np.array([v == c for v in labels])
            if col.any():
                label_names.append(cname)
                label_cats.append("object")
                label_cols.append(col)
    for j, name in enumerate(tex):
        label_names.append(name)
        label_cats.append("texture")
        col = np.zeros(n, dtype=bool)
        col[:len(texture_masks)] = texture_masks[:, j].flatten(1).any(1).numpy()
        label_cols.append(col)
    label_matrix = torch.from_numpy(np.stack(label_cols, 1)) if label_cols else torch.zeros(n, 0, dtype=torch.bool)

    # pass 1: thresholds and pooled scores; pass 2: IoU
    def batches():
        for i in range(0, n, s.batch):
            yield normalise(display[i:i + s.batch], spec, ctx.device)

    first = layer_activations(model, layers, normalise(display[:1], spec, ctx.device))
    spatial = {layer: first[layer].dim() == 4 for layer in layers}
    cells = {layer: n * (int(np.prod(first[layer].shape[2:])) if spatial[layer] else 1) for layer in layers}
    samplers = {layer: dis.ThresholdSampler(cells[layer], d.quantile, d.max_samples, ctx.config.seed)
                for layer in layers if spatial[layer]}
    scores: Dict[str, List[torch.Tensor]] = {layer: [] for layer in layers}
    for acts in iter_activations(model, layers, batches(), batch=s.batch):
        for layer in layers:
            scores[layer].append(dis.pooled(acts[layer], d.pool).cpu())
            if layer in samplers:
                samplers[layer].add(acts[layer])
    thresholds = {layer: sampler.thresholds() for layer, sampler in samplers.items()}
    accs = {layer: dis.IoUAccumulator(first[layer].shape[1], masks.shape[1], ctx.device) for layer in samplers}
    if accs:
        at = 0
        for acts in iter_activations(model, list(accs), batches(), batch=s.batch):
            b = next(iter(acts.values())).shape[0]
            for layer, acc in accs.items():
                acc.add(acts[layer], thresholds[layer], masks[at:at + b])
            at += b

    out_layers = []
    for layer in layers:
        pooled = torch.cat(scores[layer])
        units = pooled.shape[1]
        iou = accs[layer].iou().cpu() if layer in accs else None
        auc = dis.rank_auc(pooled, label_matrix) if label_cols else None
        p_adj = None
        if auc is not None:
            flat = [None if not np.isfinite(v) else float(v) for v in auc.p.flatten().tolist()]
            p_adj = torch.tensor([1.0 if v is None else v for v in adjust_p(flat, "holm")]).view_as(auc.p)
        rows = []
        for u in range(units):
            row: Dict[str, Any] = {"unit": u, "label": None, "concept": None, "category": None, "method": None,
                                   "best_iou_concept": None, "best_iou": None, "best_auc_concept": None,
                                   "best_auc": None, "auc_low": None, "auc_p": None}
            if iou is not None and iou.shape[1]:
                c = int(iou[u].argmax())
                row["best_iou_concept"], row["best_iou"] = names[c], round(float(iou[u, c]), 6)
                if float(iou[u, c]) >= d.iou_threshold:
                    row.update(label=f"{names[c]}, IoU {float(iou[u, c]):.2f}", concept=names[c], category=cats[c],
                               method="iou")
            if auc is not None:
                low = torch.nan_to_num(auc.low[u], nan=-1.0)
                c = int(low.argmax())
                a, q = float(auc.auc[u, c]), float(p_adj[u, c])
                row.update(best_auc_concept=label_names[c], best_auc=_num(a), auc_low=_num(auc.low[u, c]),
                           auc_p=_num(q))
                if row["method"] is None and np.isfinite(a) and a >= d.auc_threshold and q < d.alpha:
                    row.update(label=f"{label_names[c]}, AUC {a:.2f}", concept=label_names[c],
                               category=label_cats[c], method="auc")
            rows.append(row)
        summary: Dict[str, Dict[str, int]] = {}
        for row in rows:
            if row["concept"] is not None:
                summary.setdefault(row["category"], {})
                summary[row["category"]][row["concept"]] = summary[row["category"]].get(row["concept"], 0) + 1
        summary = {k: dict(sorted(v.items(), key=lambda kv: (-kv[1], kv[0]))) for k, v in sorted(summary.items())}
        out_layers.append({"layer": layer, "units": units, "spatial": spatial[layer],
                           "thresholds_exact": bool(samplers[layer].exact) if layer in samplers else True,
                           "labels": rows, "summary": summary, "labelled": sum(r["concept"] is not None for r in rows)})

    # example images with their masks, for the derivation figure
    picks: List[int] = []
    example_names: List[str] = []
    if fashion:
        example_names = list(dis.PART_NAMES)
        for c in (0, 2, 4, 6, 7, 9):
            found = next((i for i, v in enumerate(labels) if v == c), None)
            if found is not None:
                picks.append(found)
    else:
        example_names = [nm for nm in dis.COLOUR_NAMES]
        picks = list(range(min(4, len(ds.items[:d.images]))))
    arrays: Dict[str, np.ndarray] = {}
    for e, i in enumerate(picks):
        arrays[f"image_{e}"] = display[i]
        for k, nm in enumerate(example_names):
            arrays[f"mask_{e}_{k}"] = masks[i, names.index(nm)].numpy().astype(np.uint8)

    def info(name: str, cat: str, count: int) -> Dict[str, Any]:
        src = ("colour named from pixels" if cat == "colour" and name in dis.COLOUR_NAMES else
               "procedural texture image" if name in tex else "Fashion part from the silhouette"
               if name in dis.PART_NAMES and fashion else "dataset label" if cat == "object" else cat)
        return {"name": name, "category": cat, "source": src, "images": int(count)}

    present = masks.flatten(2).any(2).sum(0).tolist()
    record = {
        "model": mc.id, "dataset": dataset_id, "images": n, "image_source": how, "quantile": d.quantile,
        "iou_threshold": d.iou_threshold, "auc_threshold": d.auc_threshold, "alpha": d.alpha, "pool": d.pool,
        "pixel_concepts": [info(nm, c, present[k]) for k, (nm, c) in enumerate(zip(names, cats))],
        "label_concepts": [info(nm, c, int(col.sum())) for nm, c, col in zip(label_names, label_cats, label_cols)],
        "derivation": derivation, "examples": example_names, "example_count": len(picks), "layers": out_layers,
    }
    return record, ({"examples": ("examples.npz", npz_bytes(**arrays))} if arrays else {})


# --- the stage ------------------------------------------------------------------------------------------

def _applies(ctx: RunContext, mc: ModelConfig, dataset_id: str) -> bool:
    wanted = ctx.config.concepts.models
    return wanted is None or mc.id in wanted


def declare_concepts(ctx: RunContext, mc: ModelConfig, dataset_id: str) -> Iterator[Unit]:
    s = ctx.config.concepts
    layers = _layers(ctx, mc)
    common = {"layers": layers, "batch": s.batch}
    settings = {"seed": ctx.config.seed, "device": ctx.device.type}
    if s.tcav.enabled:
        folders = {name: _folder_digest(ctx.config.resolve(f)) for name, f in s.tcav.folders.items()}
        yield Unit(kind=KIND_TCAV, family=FAMILY, version=VERSION, label=f"TCAV of {mc.id} on {dataset_id}",
                   model=mc.id, dataset=dataset_id, params={**common, **s.tcav.model_dump()},
                   inputs={"folders": folders}, settings={**settings, "schema": TcavRecord.SCHEMA},
                   compute=lambda: compute_tcav(ctx, mc, dataset_id))
    if s.rcv.enabled:
        yield Unit(kind=KIND_RCV, family=FAMILY, version=VERSION, label=f"RCV of {mc.id} on {dataset_id}",
                   model=mc.id, dataset=dataset_id, params={**common, **s.rcv.model_dump(),
                                                            "tcav_classes": _class_params(s)},
                   settings={**settings, "schema": RcvRecord.SCHEMA}, compute=lambda: compute_rcv(ctx, mc, dataset_id))
    if s.dissection.enabled:
        masks = _folder_digest(ctx.config.resolve(s.dissection.masks)) if s.dissection.masks else None
        yield Unit(kind=KIND_DISSECTION, family=FAMILY, version=VERSION,
                   label=f"dissection of {mc.id} on {dataset_id}", model=mc.id, dataset=dataset_id,
                   params={**common, **s.dissection.model_dump()}, inputs={"masks": masks},
                   settings={**settings, "schema": DissectionRecord.SCHEMA},
                   compute=lambda: compute_dissection(ctx, mc, dataset_id))


def _class_params(s: Any) -> Dict[str, Any]:
    # the RCV sensitivities use the TCAV section's choice of classes
    return {k: getattr(s.tcav, k) for k in ("classes", "class_images", "min_class_images")}


def _folder_digest(path: Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    for p in sorted(Path(path).rglob("*")):
        if p.is_file():
            digest.update(p.relative_to(path).as_posix().encode() + b"\0" + p.read_bytes())
    return digest.hexdigest()[:16]


register_stage(Stage(name="concepts (TCAV, RCV, dissection)", order=45, declare=declare_concepts,
                     enabled=lambda config: config.concepts.enabled, expected=lambda config: 3, applies=_applies))
