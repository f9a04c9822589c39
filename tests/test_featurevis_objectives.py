"""Every objective raises its own value; composition and descriptions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from featurevis_toys import FashionCNN, gray_spec, rgb_spec, toy_cnn

from generator.methods import featurevis as fv

FAST = dict(steps=12, size=32, transforms="none", lr=0.05, seed=1, precision="fp32")


def rises(result) -> bool:
    start = result.trajectory[0]  # value of the initial image (no transforms)
    return bool(np.all(result.final_values > start + 1e-4))


@pytest.fixture(scope="module")
def toy():
    return toy_cnn(), rgb_spec()


@pytest.mark.parametrize(
    "objective",
    [
        fv.channel("3", 2),
        fv.channel("5", [0, 3, 7]),
        fv.neuron("5", 4),
        fv.neuron("3", [1, 2], x=3, y=5),
        fv.direction("5", torch.linspace(-1, 1, 16)),
        fv.direction("5", torch.randn(2, 16, generator=torch.Generator().manual_seed(0)), x=2, y=2),
        fv.layer("4"),
        fv.class_logit(3),
        fv.class_logit([0, 4]),
        fv.negative(fv.channel("5", 1)),
        fv.channel("5", 1) - 0.5 * fv.channel("5", 2),
        2 * fv.neuron("7", 0) + fv.layer("2") / 4,
    ],
    ids=lambda o: o.description,
)
def test_objective_raises_its_value(toy, objective):
    model, spec = toy
    res = fv.render(model, spec, objective, n_images=2, **FAST)
    assert res.images.shape[1:] == (32, 32, 3)
    assert rises(res), (res.trajectory[0], res.final_values)


def test_diversity_raises_diversity(toy):
    model, spec = toy
    res = fv.render(model, spec, fv.diversity("5"), n_images=4, **FAST)
    assert res.final_values.mean() > res.trajectory[0].mean() + 1e-4


def test_negative_lowers_the_unit(toy):
    model, spec = toy
    neg = fv.render(model, spec, -fv.channel("5", 1), n_images=2, **FAST)
    plain = fv.evaluate(model, spec, fv.channel("5", 1), neg.images)
    assert np.allclose(plain, -neg.final_values, atol=1e-5)
    assert np.all(neg.final_values > neg.trajectory[0])


def test_grayscale_fixed_size_model():
    model, spec = FashionCNN(), gray_spec()
    res = fv.render(model, spec, fv.channel("act2", [0, 5]), steps=10, seed=0, precision="fp32")
    assert res.images.shape == (2, 28, 28, 1)
    assert rises(res) or res.final_values.mean() > res.trajectory[0].mean()
    res = fv.render(model, spec, fv.class_logit([1, 7]), steps=10, transforms="none", precision="fp32")
    assert rises(res)


def test_descriptions_are_readable():
    c = fv.channel("layer3", 5)
    assert c.description == "channel(layer3, 5)"
    assert (-c).description == "−channel(layer3, 5)"
    combo = c - 0.5 * fv.diversity("layer3")
    assert combo.description == "channel(layer3, 5) - 0.5 × diversity(layer3)"
    assert (c * 2).description == "2 × channel(layer3, 5)"
    batched = fv.channel("layer3", range(4)) + 100 * fv.diversity("layer3", group_size=4)
    assert batched.batch_size == 4
    assert batched.describe(2) == "channel(layer3, 2) + 100 × diversity(layer3, groups of 4)"
    assert "0…3" in batched.description
    assert fv.class_logit([1], ["cat", "dog"]).describe(0) == "logit(1 “dog”)"
    assert (-(c + c)).description == "−(channel(layer3, 5) + channel(layer3, 5))"
    assert sum([c, c]).description == "channel(layer3, 5) + channel(layer3, 5)"


def test_batched_objective_slices_and_sizes():
    obj = fv.channel("a", [3, 4, 5, 6]) * 2
    part = obj.slice(1, 3)
    assert part.batch_size == 2 and part.describe(0) == "2 × channel(a, 4)"
    acts = {"a": torch.arange(2 * 8 * 2 * 2, dtype=torch.float32).reshape(2, 8, 2, 2)}
    expected = torch.stack([acts["a"][0, 4].mean(), acts["a"][1, 5].mean()]) * 2
    assert torch.allclose(part(acts), expected)
    with pytest.raises(ValueError):
        fv.channel("a", [1, 2]) + fv.channel("a", [1, 2, 3])
    stacked = fv.stack([fv.channel("a", 1), fv.neuron("a", 2)])
    got = stacked(acts)
    assert torch.allclose(got, torch.stack([acts["a"][0, 1].mean(), acts["a"][1, 2, 1, 1]]))


def test_diversity_value_matches_reference():
    torch.manual_seed(0)
    act = torch.rand(4, 3, 5, 5)
    val = fv.diversity("a", group_size=2)({"a": act})
    grams = [a.reshape(3, -1) @ a.reshape(3, -1).T for a in act]
    grams = [g / g.norm() for g in grams]
    ref = [-(grams[0] * grams[1]).sum(), -(grams[0] * grams[1]).sum(), -(grams[2] * grams[3]).sum(),
           -(grams[2] * grams[3]).sum()]
    assert torch.allclose(val, torch.stack(ref), atol=1e-6)
