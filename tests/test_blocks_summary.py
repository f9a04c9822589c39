"""Semantic dictionary, activation grid and the JSON summary of the Building Blocks set."""

import json

import torch
from torch import nn

from generator.methods.blocks import (
    activation_grid,
    building_blocks,
    layer_activations,
    semantic_dictionary,
    summary_json,
)


def model():
    torch.manual_seed(3)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
        nn.Conv2d(8, 10, 3, stride=2, padding=1), nn.ReLU(),  # '3': 8 x 8, non-negative
        nn.Conv2d(10, 12, 3, stride=2, padding=1),  # '4': 4 x 4, signed
        nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(12, 6),
    ).eval()


def x():
    return torch.randn(3, 16, 16, generator=torch.Generator().manual_seed(0))


def test_semantic_dictionary_matches_brute_force():
    act = torch.randn(9, 4, 5, generator=torch.Generator().manual_seed(1))
    act[3, 0, 0] = act[5, 0, 0] = 10.0  # a tie: lower channel first
    for by in ("value", "abs"):
        sd = semantic_dictionary(act, 4, by=by)
        assert sd.channels.shape == (4, 5, 4)
        for i in range(4):
            for j in range(5):
                col = act[:, i, j].tolist()
                key = [abs(v) for v in col] if by == "abs" else col
                ref = sorted(range(9), key=lambda c: (-key[c], c))[:4]
                assert sd.channels[i, j].tolist() == ref
                assert sd.values[i, j].tolist() == [col[c] for c in ref]
    assert semantic_dictionary(act, 4).channels[0, 0, :2].tolist() == [3, 5]


def test_activation_grid():
    act = torch.randn(7, 3, 4, generator=torch.Generator().manual_seed(2))
    g = activation_grid(act)
    assert g.grid_shape == (3, 4)
    torch.testing.assert_close(g.directions[1, 2], act[:, 1, 2])
    torch.testing.assert_close(g.magnitude, act.norm(dim=0))
    assert float(g.relative.max()) == 1.0 and float(g.relative.min()) >= 0


def test_layer_activations_stop_early_and_vector_layers():
    m = model()
    a = layer_activations(m, x(), "3", with_logits=False)
    assert a.logits is None and a.act.shape == (10, 8, 8) and a.matrix().shape == (64, 10)
    v = layer_activations(m, x(), "7")  # Flatten: a (C,) vector is a 1 x 1 grid
    assert v.act.shape == (12, 1, 1) and v.logits.shape == (6,)


def _plain(obj):
    if isinstance(obj, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in obj.items())
    if isinstance(obj, list):
        return all(_plain(v) for v in obj)
    return isinstance(obj, (int, float, str)) and not isinstance(obj, bool)


def test_building_blocks_and_summary_json():
    m = model()
    names = [f"class {i}" for i in range(6)]
    bb = building_blocks(m, x(), "3", top_k=3, classes=[5], n_channels=4, n_groups=3, upper_layer="4", n_groups_upper=2)
    assert bb.attribution.classes[:3] == bb.top_classes and 5 in bb.attribution.classes
    assert bb.groups.k == 3 and bb.upper_groups.k == 2 and bb.flow.flow.shape == (3, 2)
    s = summary_json(bb, names, digits=4)
    assert _plain(s)
    text = json.dumps(s, allow_nan=False)
    back = json.loads(text)
    assert back["grid"] == [8, 8] and back["channels"] == 10
    assert len(back["cells"]) == 64 and back["cells"][9]["row"] == 1 and back["cells"][9]["col"] == 1
    cell = back["cells"][9]
    assert [c for c, _ in cell["channels"]] == bb.dictionary.channels[1, 1].tolist()
    vals = [v for _, v in cell["classes"]]
    assert vals == sorted(vals, reverse=True) and len(vals) == 3
    assert [c["name"] for c in back["classes"]][:3] == [names[c] for c in bb.top_classes]
    assert len(back["groups"]) == 3 and len(back["groups"][0]["map"]) == 8 and len(back["groups"][0]["map"][0]) == 8
    assert len(back["spatial_attribution"]) == 4
    sa = back["spatial_attribution"][0]
    assert abs(sa["total"] - float(bb.attribution.total[0])) <= 1e-3 * abs(float(bb.attribution.total[0])) + 1e-6
    assert back["competing"]["a"] == bb.top_classes[0]
    assert back["layer_to_layer"]["upper_grid"] == [4, 4] and len(back["layer_to_layer"]["maps"]) == 16
    assert len(back["layer_to_layer"]["maps"][0]) == 64
    assert len(back["flow"]["matrix"]) == 3 and len(back["flow"]["matrix"][0]) == 2
    # rounding to 4 significant digits
    v = back["cells"][0]["magnitude"]
    assert v == float(f"{v:.4g}")
