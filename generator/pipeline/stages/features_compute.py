"""The artifacts of the features stage (see :mod:`generator.pipeline.stages.features`).

Images are stored PNG-ready (uint8, N x H x W x C) with the objective values and the
readable objective descriptions, so the renderer only writes files. Each piece is a unit whose
key holds the model's identity, the layer and channels, the effective render settings, the
seed and the device type; a second run with the same settings reuses every one of them.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, Iterator, List, Optional

import numpy as np
import torch
import torch.nn.functional as F

from generator.artifacts.store import Artifact, npz_bytes
from generator.config import ModelConfig
from generator.data.imageio import unit_to_uint8 as to_uint8
from generator.pipeline.context import RunContext
from generator.pipeline.inputs import DisplayRows, display_batches, displayed, model_input
from generator.pipeline.units import Need, Unit, unit_key

VERSION = "1"


def _rounded(values: np.ndarray, digits: int = 5) -> List[float]:
    return [round(float(v), digits) for v in np.asarray(values).ravel()]


class FeatureJob:
    """All feature units of one model; each method declares the units of one kind."""

    def __init__(self, ctx: RunContext, mc: ModelConfig, plan) -> None:
        self.ctx, self.mc, self.plan = ctx, mc, plan
        loaded = ctx.models[mc.id]
        self.model, self.spec = loaded.module, loaded.spec
        self.seed = int(ctx.config.seed)
        self.dataset = ctx.datasets.get(plan.dataset_id) if plan.dataset_id else None

    def units(self) -> Iterator[Unit]:
        """Every unit, in the order the pages list them."""
        for step in (self.filters, self.galleries, self.unit_sets, self.examples, self.classes, self.deepdream):
            yield from step()

    # -------------------------------------------------------------------------- helpers
    def _unit(self, kind: str, compute, what: str, *, dataset: Optional[str] = None,
              labels: Optional[Dict[str, Any]] = None, needs: Optional[Dict[str, Need]] = None,
              **params: Any) -> Unit:
        return Unit(kind=kind, family="features", version=VERSION, label=f"{what} of {self.mc.id}", compute=compute,
                    model=self.mc.id, dataset=dataset, needs=needs or {}, params=params, labels=labels or {},
                    settings={"seed": self.seed, "device": self.ctx.device.type})

    def _render_settings(self) -> Dict[str, Any]:
        p = self.plan.profile
        return {"profile": p.name, "steps": p.steps, "size": p.size_for(self.spec), "lr": p.lr,
                "precision": p.precision, "redirected_relu_steps": p.redirected_relu_steps,
                "batch_size": p.batch_size}

    def _set_steps(self) -> int:
        """Steps of the diversity sets and negatives: the profile's ``set_steps``, unless the
        config sets ``steps`` (then everything uses it)."""
        p = self.plan.profile
        if self.ctx.config.features.steps is not None or p.set_steps is None:
            return int(p.steps)
        return int(p.set_steps)

    def _over(self, layer: str) -> str:
        """' over its patch tokens' for a token layer of a vision transformer, else ''."""
        return " over its patch tokens" if layer in self.plan.token_layers else ""

    @staticmethod
    def _result_record(res) -> Dict[str, Any]:
        settings = {k: v for k, v in res.settings.items() if k != "device"}
        return {"descriptions": list(res.descriptions), "description": res.description,
                "values": _rounded(res.final_values), "settings": settings}

    # -------------------------------------------------------------------------- pieces
    def filters(self) -> Iterator[Unit]:
        """The first convolution's weights (each filter scaled by its own peak, grey = 0)."""
        if not self.ctx.config.features.filters:
            return
        from generator.methods import featurevis as fv

        def compute():
            name, conv = fv.first_conv(self.model)
            kh = int(conv.kernel_size[0])
            grid = fv.filter_grid(self.model, zoom=max(4, 48 // max(kh, 1)))
            rec = {"model": self.mc.id, "layer": name, "shape": list(conv.weight.shape),
                   "in_channels": int(conv.in_channels), "out_channels": int(conv.out_channels)}
            return rec, {"grid": ("grid.npz", npz_bytes(grid=to_uint8(grid)))}

        yield self._unit("features_filters", compute, "first-layer filters")

    def galleries(self) -> Iterator[Unit]:
        """One image per chosen channel of each layer, the whole layer in one render call, or
        in parts of ``features.part_channels`` channels joined afterwards (:meth:`_gallery_parts`)."""
        from generator.methods import featurevis as fv

        part = self.ctx.config.features.part_channels
        for layer in self.plan.layers:
            chans = self.plan.channels[layer]
            if part is not None and len(chans) > part:
                yield from self._gallery_parts(layer, chans, part)
                continue

            def compute(layer=layer, chans=chans):
                res = fv.channel_gallery(self.model, self.spec, layer, chans, profile=self.plan.profile, seed=self.seed)
                return self._gallery_record(layer, chans, to_uint8(res.images), res.final_values, res.trajectory,
                                            self._result_record(res))

            yield self._unit("features_gallery", compute, f"gallery {layer}", labels={"layer": layer}, layer=layer,
                             channels=chans, settings=self._render_settings())

    def _gallery_record(self, layer: str, chans: List[int], images: np.ndarray, values: np.ndarray,
                        trajectory: np.ndarray, result: Dict[str, Any]):
        """The gallery's record and files from uint8 images and their objective values."""
        rec = {"model": self.mc.id, "layer": layer, "channels": chans,
               "layer_channels": self.plan.layer_channels[layer], **result}
        return rec, {"images": ("images.npz", npz_bytes(
            images=images, channels=np.asarray(chans, np.int64),
            values=values.astype(np.float32), trajectory=trajectory.astype(np.float32)))}

    def _gallery_parts(self, layer: str, chans: List[int], part: int) -> Iterator[Unit]:
        """A layer's gallery as parts of whole render batches (each a unit any rank may take),
        then the gallery joined from them. Images are seeded by their index in the layer
        (``first_image``) and batches are the same as in one render, so the joined gallery holds
        the images one render of the layer gives."""
        from generator.methods import featurevis as fv

        batch = int(self.plan.profile.batch_size)
        size = -(-part // batch) * batch  # whole batches: the same batches as one render
        needs: Dict[str, Need] = {}
        for first in range(0, len(chans), size):
            sub = chans[first:first + size]

            def compute(sub=sub, first=first):
                res = fv.channel_gallery(self.model, self.spec, layer, sub, profile=self.plan.profile, seed=self.seed,
                                         first_image=first)
                rec = {"model": self.mc.id, "layer": layer, "channels": sub, "first_image": first,
                       **self._result_record(res)}
                return rec, {"images": ("images.npz", npz_bytes(
                    images=to_uint8(res.images), values=res.final_values.astype(np.float32),
                    trajectory=res.trajectory.astype(np.float32)))}

            what = f"gallery {layer} channels {first}-{first + len(sub) - 1}"
            unit = self._unit("features_gallery_part", compute, what,
                              labels={"layer": layer, "first_image": first}, layer=layer, channels=sub,
                              first_image=first, settings=self._render_settings())
            needs[f"part{first}"] = Need(unit.kind, unit_key(self.ctx, unit))
            yield unit

        def join(**parts: Artifact):
            ordered = [parts[f"part{first}"] for first in range(0, len(chans), size)]
            arrays = [a.load_npz("images") for a in ordered]
            result = {"settings": ordered[0].record["settings"],  # the same in every part
                      "descriptions": [d for a in ordered for d in a.record["descriptions"]],
                      "description": fv.channel(layer, list(chans)).description,
                      "values": [v for a in ordered for v in a.record["values"]]}
            return self._gallery_record(
                layer, chans, np.concatenate([a["images"] for a in arrays]),
                np.concatenate([a["values"] for a in arrays]),
                np.concatenate([a["trajectory"] for a in arrays], axis=1), result)

        yield self._unit("features_gallery", join, f"gallery {layer}", labels={"layer": layer}, layer=layer,
                         channels=chans, settings=self._render_settings(), needs=needs, part_channels=size)

    def unit_sets(self) -> Iterator[Unit]:
        """Per unit: a diversity set and the negative visualisation (each one batched render
        over all the layer's chosen channels)."""
        from generator.methods import featurevis as fv

        feats = self.ctx.config.features
        for layer in self.plan.layers:
            chans = self.plan.channels[layer]
            n = int(feats.diversity)
            if n > 0:
                def compute_div(layer=layer, chans=chans, n=n):
                    # seed + 1: the diversity set must not start from the gallery's noise
                    res = fv.diversity_set(self.model, self.spec, layer, chans, n=n, profile=self.plan.profile,
                                           seed=self.seed + 1, steps=self._set_steps())
                    imgs = to_uint8(res.images)
                    imgs = imgs.reshape((len(chans), n) + imgs.shape[1:])
                    rec = {"model": self.mc.id, "layer": layer, "channels": chans, "per_unit": n,
                           **self._result_record(res)}
                    return rec, {"images": ("images.npz", npz_bytes(
                        images=imgs, values=res.final_values.reshape(len(chans), n).astype(np.float32)))}

                yield self._unit("features_diversity", compute_div, f"diversity {layer}", labels={"layer": layer},
                                 layer=layer, channels=chans, n=n, weight=self.plan.profile.diversity_weight,
                                 settings=self._render_settings(), steps=self._set_steps())
            if feats.negative:
                def compute_neg(layer=layer, chans=chans):
                    res = fv.negative_gallery(self.model, self.spec, layer, chans, profile=self.plan.profile,
                                              seed=self.seed + 2, steps=self._set_steps())
                    rec = {"model": self.mc.id, "layer": layer, "channels": chans, **self._result_record(res)}
                    return rec, {"images": ("images.npz", npz_bytes(
                        images=to_uint8(res.images), values=res.final_values.astype(np.float32)))}

                yield self._unit("features_negative", compute_neg, f"negative {layer}", labels={"layer": layer},
                                 layer=layer, channels=chans, settings=self._render_settings(), steps=self._set_steps())

    def examples(self) -> Iterator[Unit]:
        """Top-activating dataset images per unit (spatial max), their crops around the
        strongest position, and the deconvnet projection of the strongest one."""
        if self.dataset is None or self.plan.examples <= 0:
            return
        from generator.methods import featurevis as fv

        dataset, spec, dev = self.dataset, self.spec, self.ctx.device
        for layer in self.plan.layers:
            chans = self.plan.channels[layer]
            k = min(self.plan.examples, len(dataset))

            def compute(layer=layer, chans=chans, k=k):
                # Streamed: top_activating keeps only the top k per channel, so the dataset is
                # read batch by batch and only the winners are decoded again for their crops.
                feed = (model_input(spec, display, dev) for _, display in display_batches(spec, dataset))
                ex = fv.top_activating(self.model, spec, layer, feed, channels=chans, k=k, reduce="max",
                                       precision="fp32")
                shown = np.unique(ex.indices)
                winners = DisplayRows(spec, dataset, shown)[:]
                # crops() indexes images by dataset row; searchsorted maps each row to its place
                # among the winners (shown is sorted and holds every row of ex.indices).
                crops = dataclasses.replace(ex, indices=np.searchsorted(shown, ex.indices)).crops(winners)
                rec = {"model": self.mc.id, "layer": layer, "dataset": dataset.id, "channels": chans, "k": k,
                       "reduce": ex.reduce, "act_hw": list(ex.act_hw), "input_hw": list(ex.input_hw),
                       "values": np.round(ex.values.astype(np.float64), 5).tolist(),
                       "items": [[dataset.items[int(i)].id for i in row] for row in ex.indices],
                       "titles": [[dataset.items[int(i)].title or dataset.items[int(i)].id for i in row]
                                  for row in ex.indices],
                       "description": f"spatial {ex.reduce} of channel c of {layer}{self._over(layer)} over "
                                      f"{len(dataset)} images of {dataset.id}; top {k} per channel"}
                return rec, {"examples": ("examples.npz", npz_bytes(
                    values=ex.values.astype(np.float32), indices=ex.indices.astype(np.int64),
                    positions=ex.positions.astype(np.int64), boxes=ex.boxes(), crops=crops,
                    shown=shown.astype(np.int64), thumbs=winners))}

            unit = self._unit("features_examples", compute, f"dataset examples {layer}", dataset=dataset.id,
                              labels={"layer": layer}, layer=layer, channels=chans, k=k)
            yield unit
            if self.ctx.config.features.deconvnet:
                yield self._deconv(layer, Need("features_examples", unit_key(self.ctx, unit)))

    def _deconv(self, layer: str, examples: Need) -> Unit:
        from generator.methods import featurevis as fv

        dataset, spec = self.dataset, self.spec

        def compute(examples: Artifact):
            arrays = examples.load_npz("examples")
            top = arrays["indices"][:, 0]
            pos = arrays["positions"][:, 0]
            boxes = arrays["boxes"][:, 0]
            x = model_input(spec, DisplayRows(spec, dataset, top)[:], self.ctx.device)
            chans = examples.record["channels"]
            proj = fv.deconv_projection(self.model, layer, x, chans, pos, layout=fv.spec_layout(spec))
            images = np.stack([fv.projection_image(p) for p in proj])
            crops = np.stack([images[j, top:bottom, left:right]
                              for j, (top, left, bottom, right) in enumerate(boxes)])
            rec = {"model": self.mc.id, "layer": layer, "dataset": dataset.id, "channels": chans,
                   "items": [dataset.items[int(i)].id for i in top], "positions": pos.tolist(),
                   "peaks": _rounded(np.abs(proj).reshape(len(chans), -1).max(axis=1), 6),
                   "description": "gradient of the unit's activation at its arg-max position"
                                  f"{' (a patch token)' if self._over(layer) else ''} on its top "
                                  "dataset example, every ReLU rectifying the backward signal (deconvnet)"}
            return rec, {"projections": ("projections.npz", npz_bytes(images=images, crops=crops))}

        return self._unit("features_deconv", compute, f"deconvnet {layer}", dataset=dataset.id, labels={"layer": layer},
                          needs={"examples": examples}, layer=layer)

    def classes(self) -> Iterator[Unit]:
        """One image per chosen class maximising its logit."""
        if not self.plan.classes:
            return
        from generator.methods import featurevis as fv

        classes = list(self.plan.classes)

        def compute():
            res = fv.class_visualisations(self.model, self.spec, classes, profile=self.plan.profile,
                                          seed=self.seed + 3)
            rec = {"model": self.mc.id, "classes": classes, "names": [self.spec.class_names[c] for c in classes],
                   "source": "configured" if self.mc.id in self.ctx.config.features.classes else "predicted",
                   "dataset": self.plan.dataset_id, **self._result_record(res)}
            return rec, {"images": ("images.npz", npz_bytes(images=to_uint8(res.images),
                                                            values=res.final_values.astype(np.float32)))}

        yield self._unit("features_classes", compute, "class visualisations", classes=classes,
                         settings=self._render_settings())

    def deepdream(self) -> Iterator[Unit]:
        """Each photo dreamed at each DeepDream layer (rows shallow to deep)."""
        if self.dataset is None or self.plan.dream_images <= 0 or not self.plan.dream_layers:
            return
        from generator.methods import featurevis as fv

        dataset, spec, prof = self.dataset, self.spec, self.plan.profile
        n, size, layers = self.plan.dream_images, self.plan.dream_size, list(self.plan.dream_layers)

        def compute():
            # a model that refuses the asked size (a fixed-size vision transformer) dreams at its
            # own, and only at the octaves it accepts (checked once per size, before dreaming)
            fit = fv.fit_size(self.model, spec, (size, size), layers=layers, device=self.ctx.device)
            run_size = fit.hw[0]
            jitter = max(1, round(16 * run_size / 224))  # the jitter Lucid uses at 224 px, scaled
            octaves = fv.dream_octaves(self.model, spec, fit.hw, prof.deepdream_octaves, layers,
                                       device=self.ctx.device)
            display = displayed(spec, dataset, n)
            photos = torch.as_tensor(display, dtype=torch.float32).permute(0, 3, 1, 2) / 255.0
            if photos.shape[-1] != run_size:
                photos = F.interpolate(photos, size=fit.hw, mode="bilinear", align_corners=False,
                                       antialias=True).clamp(0, 1)
            dreams = fv.deepdream(self.model, spec, photos, layers, steps=prof.deepdream_steps,
                                  octaves=octaves, jitter=jitter, seed=self.seed, precision=prof.precision)
            stack = np.stack([to_uint8(dreams[layer]) for layer in layers])  # (layers, N, H, W, C)
            originals = to_uint8(photos.permute(0, 2, 3, 1).numpy())
            notes = ([fit.note] if fit.changed else []) + (
                [f"{octaves} of {prof.deepdream_octaves} octaves: the model refuses the smaller sizes"]
                if octaves != prof.deepdream_octaves else [])
            suffix = "".join(f"; {note}" for note in notes)
            rec = {"model": self.mc.id, "dataset": dataset.id, "layers": layers,
                   "items": [it.id for it in dataset.items[:n]],
                   "titles": [it.title or it.id for it in dataset.items[:n]], "size": run_size,
                   "steps": prof.deepdream_steps, "octaves": octaves, "jitter": jitter,
                   "descriptions": [f"layer({layer}): mean squared activation of {layer}{self._over(layer)}{suffix}"
                                    for layer in layers]}
            return rec, {"dreams": ("dreams.npz", npz_bytes(dreams=stack, originals=originals))}

        yield self._unit("features_deepdream", compute, "DeepDream", dataset=dataset.id, layers=layers, images=n,
                         size=size, steps=prof.deepdream_steps, octaves=prof.deepdream_octaves,
                         precision=prof.precision)
