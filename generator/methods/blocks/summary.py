"""The complete Building Blocks set for one image and layer, and its JSON summary.

:func:`building_blocks` runs everything the interface pages need (Olah et al. 2018):
semantic dictionary, activation grid, spatial and channel attribution for the top classes,
the two competing classes, neuron groups with their attribution and, given a second (upper)
layer, layer-to-layer spatial attribution and the group flow between the two layers.
:func:`summary_json` turns the result into plain lists, dicts, ints, floats and strings for the
page's JavaScript (hover legends); the tensors stay on the result for the feature
visualisation icons (cell directions, group directions, channel indices).

A vision transformer's token layer works the same way on its patch grid: cells are patch
tokens; the class token (and other special tokens) is not a place in the image, so it has no
cell, and what it carries of each class's attribution is listed apart (``tokens`` in the JSON).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence

import torch
from torch import nn

from .activations import (
    ActivationGrid,
    LayerActivations,
    SemanticDictionary,
    activation_grid,
    layer_activations,
    semantic_dictionary,
)
from .attribution import (
    ChannelRanking,
    ClassAttribution,
    CompetingClasses,
    LayerToLayer,
    channel_ranking,
    class_attribution,
    competing_classes,
    layer_to_layer,
)
from .groups import GroupAttribution, GroupFlow, NeuronGroups, group_attribution, group_flow, neuron_groups


@dataclass
class BuildingBlocks:
    layer: str
    activations: LayerActivations
    probabilities: torch.Tensor  # (num_classes,)
    top_classes: List[int]  # by logit, highest first
    dictionary: SemanticDictionary
    grid: ActivationGrid
    attribution: ClassAttribution  # for top_classes (+ extra classes)
    rankings: List[ChannelRanking]  # one per attributed class
    competing: Optional[CompetingClasses]
    groups: NeuronGroups
    group_attr: GroupAttribution
    upper_layer: Optional[str] = None
    layer_to_layer: Optional[LayerToLayer] = None  # per upper position
    upper_groups: Optional[NeuronGroups] = None
    flow: Optional[GroupFlow] = None


def building_blocks(
    model: nn.Module,
    x: torch.Tensor,
    layer: str,
    *,
    top_k: int = 5,
    classes: Sequence[int] = (),
    n_channels: int = 6,
    n_groups: int = 6,
    group_mode: str = "auto",
    upper_layer: Optional[str] = None,
    n_groups_upper: Optional[int] = None,
    seed: int = 0,
    batch_size: int = 64,
    layout=None,
) -> BuildingBlocks:
    """Every Building Blocks view of one image (preprocessed, (C,H,W) or (1,C,H,W)) at ``layer``.

    ``classes`` are attributed in addition to the ``top_k`` predictions. With ``upper_layer``
    (deeper than ``layer``) also the layer-to-layer attribution (one map of ``layer`` per
    position of ``upper_layer``) and the group flow from ``layer``'s groups to the upper ones.
    ``layout``: the model's :class:`~generator.models.tokens.TokenLayout` (a vision transformer;
    inferred when None and a layer outputs tokens).
    """
    acts = layer_activations(model, x, layer, layout=layout)
    assert acts.logits is not None
    logits = acts.logits
    if logits.dim() != 1:
        raise ValueError(f"model output per image has shape {tuple(logits.shape)}; expected (classes,)")
    probs = torch.softmax(logits, 0)
    top = torch.sort(logits, descending=True, stable=True).indices[: min(top_k, logits.numel())].tolist()
    attributed = list(top) + [int(c) for c in classes if int(c) not in top]
    ca = class_attribution(model, x, layer, attributed, batch_size=batch_size, layout=layout)
    groups = neuron_groups(acts.act, min(n_groups, *acts.act.shape[:1], acts.act[0].numel()), layer=layer,
                           mode=group_mode, seed=seed)
    bb = BuildingBlocks(
        layer=layer,
        activations=acts,
        probabilities=probs,
        top_classes=top,
        dictionary=semantic_dictionary(acts.act, n_channels),
        grid=activation_grid(acts.act),
        attribution=ca,
        rankings=[channel_ranking(ca, c, n_channels) for c in attributed],
        competing=competing_classes(ca, n=n_channels) if len(attributed) >= 2 else None,
        groups=groups,
        group_attr=group_attribution(groups, ca),
    )
    if upper_layer is not None:
        bb.upper_layer = upper_layer
        bb.layer_to_layer = layer_to_layer(model, x, layer, upper_layer, target="positions", batch_size=batch_size,
                                           layout=layout)
        up = layer_activations(model, x, upper_layer, with_logits=False, layout=layout).act
        k2 = min(n_groups_upper or n_groups, up.shape[0], up[0].numel())
        bb.upper_groups = neuron_groups(up, k2, layer=upper_layer, mode=group_mode, seed=seed)
        bb.flow = group_flow(model, x, groups, bb.upper_groups, batch_size=batch_size, layout=layout)
    return bb


# ---------------------------------------------------------------------------------------------
# JSON


def _r(v: float, digits: int) -> float:
    """Round to ``digits`` significant digits; non-finite values become 0 (JSON has no NaN)."""
    v = float(v)
    if not math.isfinite(v) or v == 0:
        return 0.0
    return round(v, max(0, digits - 1 - int(math.floor(math.log10(abs(v))))))


def _grid(t: torch.Tensor, digits: int) -> List[List[float]]:
    return [[_r(v, digits) for v in row] for row in t.detach().cpu().tolist()]


def _pairs(pairs, digits: int) -> List[List[Any]]:
    return [[int(i), _r(v, digits)] for i, v in pairs]


def summary_json(
    bb: BuildingBlocks,
    class_names: Optional[Sequence[str]] = None,
    *,
    digits: int = 4,
    n_cell_classes: int = 3,
) -> Dict[str, Any]:
    """A JSON-serialisable summary of ``bb`` for hover interaction (only lists, dicts, str,
    int, float). Cells are listed row-major (index = row * W + col); class entries are
    ``{"index", "name", "prob", "logit"}``; ``[channel, value]`` and ``[class, value]`` pairs.
    """

    def name(c: int) -> str:
        return str(class_names[c]) if class_names is not None and 0 <= c < len(class_names) else str(c)

    ca = bb.attribution
    h, w = bb.grid.grid_shape
    logits = bb.activations.logits
    classes = [
        {"index": int(c), "name": name(c), "prob": _r(bb.probabilities[c], digits), "logit": _r(logits[c], digits)}
        for c in ca.classes
    ]
    spatial = ca.spatial.detach().cpu()  # K, H, W
    dict_ch = bb.dictionary.channels.cpu()
    dict_val = bb.dictionary.values.cpu()
    mag = bb.grid.magnitude.cpu()
    rel = bb.grid.relative.cpu()
    cells = []
    for i in range(h):
        for j in range(w):
            col = spatial[:, i, j]
            order = torch.sort(col, descending=True, stable=True).indices[:n_cell_classes].tolist()
            cells.append({
                "row": i,
                "col": j,
                "magnitude": _r(mag[i, j], digits),
                "relative": _r(rel[i, j], digits),
                "channels": [[int(c), _r(v, digits)] for c, v in zip(dict_ch[i, j].tolist(), dict_val[i, j].tolist())],
                "classes": [[int(ca.classes[k]), _r(col[k], digits)] for k in order],
            })
    ga = bb.group_attr
    g = bb.groups
    groups = []
    for gi in range(g.k):
        order = torch.sort(ga.attr[:, gi], descending=True, stable=True).indices.tolist()
        groups.append({
            "id": gi,
            "map": _grid(g.spatial[gi], digits),
            "channels": _pairs(g.top_channels(gi, len(bb.dictionary.channels[0, 0])), digits),
            "classes": [[int(ca.classes[k]), _r(ga.attr[k, gi], digits)] for k in order],
        })
    out: Dict[str, Any] = {
        "layer": bb.layer,
        "grid": [h, w],
        "channels": int(bb.activations.act.shape[0]),
        "classes": classes,
        "top_classes": [int(c) for c in bb.top_classes],
        "cells": cells,
        "spatial_attribution": [
            {"class": int(c), "map": _grid(spatial[k], digits), "total": _r(ca.total[k], digits)}
            for k, c in enumerate(ca.classes)
        ],
        "channel_attribution": [
            {"class": r.cls, "support": _pairs(r.support, digits), "oppose": _pairs(r.oppose, digits)}
            for r in bb.rankings
        ],
        "groups": groups,
        "group_mode": g.mode,
        "group_error": _r(g.relative_error, digits),
        "group_residual": [[int(c), _r(ga.residual[k], digits)] for k, c in enumerate(ca.classes)],
    }
    if bb.activations.tokens:
        # The grid is the patch tokens; the special tokens' share of each class's total.
        names = list(ca.prefix_names)
        prefix = ca.prefix if ca.prefix is not None else torch.zeros(len(ca.classes), 0)
        out["tokens"] = {
            "layout": bb.activations.tokens,
            "prefix_names": names,
            "note": "cells are patch tokens; " + (
                f"the {', '.join(names)} token{'s' if len(names) > 1 else ''} {'are' if len(names) > 1 else 'is'} "
                "not a place in the image: no cell, no group; its share of each class's total is listed here"
                if names else "this layer has no special tokens"),
            "attribution": [
                {"class": int(c), "grid": _r(ca.spatial_total[k], digits), "prefix": _r(ca.prefix_total[k], digits),
                 "per_token": [[n, _r(v, digits)] for n, v in zip(names, prefix[k].tolist())]}
                for k, c in enumerate(ca.classes)
            ],
        }
    if bb.competing is not None:
        cc = bb.competing
        out["competing"] = {"a": cc.a, "b": cc.b, "for_a": _pairs(cc.for_a, digits), "for_b": _pairs(cc.for_b, digits)}
    if bb.layer_to_layer is not None:
        l2l = bb.layer_to_layer
        out["layer_to_layer"] = {
            "lower": l2l.lower,
            "upper": l2l.upper,
            "upper_grid": list(l2l.upper_shape),
            # one lower-layer map per upper position (row-major), flattened row-major
            "maps": [[_r(v, digits) for v in row] for row in l2l.matrix().cpu().tolist()],
        }
    if bb.flow is not None:
        f = bb.flow
        ug = bb.upper_groups
        assert ug is not None
        out["flow"] = {
            "lower": f.lower,
            "upper": f.upper,
            "matrix": _grid(f.flow, digits),
            "residual": [_r(v, digits) for v in f.residual.tolist()],
            "upper_groups": [
                {"id": gi, "map": _grid(ug.spatial[gi], digits), "channels": _pairs(ug.top_channels(gi), digits)}
                for gi in range(ug.k)
            ],
        }
    return out
