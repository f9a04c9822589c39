"""Transforms keep shape and range, are per image, and do what they say."""

from __future__ import annotations

import numpy as np
import torch

from generator.methods import featurevis as fv
from generator.methods.featurevis.transforms import TransformSchedule, transform_matrices


def rngs(n, start=0):
    return [np.random.default_rng(start + i) for i in range(n)]


def test_standard_transforms_keep_shape_and_range():
    x = torch.rand(5, 3, 40, 48)
    sched = TransformSchedule(fv.standard_transforms(), rngs(5), steps=6, hw=(40, 48))
    for step in range(6):
        y = sched(x, step)
        assert y.shape == x.shape
        assert y.min() >= 0 and y.max() <= 1
    # extremes stay in range
    for val in (0.0, 1.0):
        y = sched(torch.full_like(x, val), 3)
        assert y.min() >= 0 and y.max() <= 1


def test_different_random_transform_per_image():
    x = torch.rand(1, 3, 32, 32).expand(4, 3, 32, 32)
    y = TransformSchedule(fv.standard_transforms(), rngs(4), steps=1, hw=(32, 32))(x, 0)
    assert not torch.allclose(y[0], y[1])


def test_image_transforms_independent_of_batch():
    t = fv.standard_transforms()
    four = transform_matrices(t, rngs(4), 5, (32, 32))
    one = transform_matrices(t, rngs(1, start=2), 5, (32, 32))
    assert torch.equal(four[:, 2], one[:, 0])


def test_no_transforms_is_identity():
    x = torch.rand(2, 3, 16, 16)
    assert torch.equal(TransformSchedule([], rngs(2), 3, (16, 16))(x, 1), x)
    # pad then crop back by the same amount at the centre: identity up to float error
    sched = TransformSchedule([fv.pad(4), fv.random_scale([1.0]), fv.random_rotate([0])], rngs(2), 1, (16, 16))
    y = sched(x, 0)  # padded canvas 24 px sampled at 16 px: a zoom-out, not identity
    assert y.shape == x.shape


def test_pad_and_jitter_is_an_integer_shift_with_grey_fill():
    x = torch.rand(3, 1, 12, 12)
    p = 3
    sched = TransformSchedule([fv.pad(p), fv.jitter(2 * p)], rngs(3), steps=4, hw=(12, 12))
    for step in range(4):
        y = sched(x, step)
        for i in range(3):
            theta = sched.theta[step, i]
            # offsets in pixels from the translation terms: t = (2o - d) / W
            ox = round((theta[0, 2].item() * 12 + 2 * p) / 2)
            oy = round((theta[1, 2].item() * 12 + 2 * p) / 2)
            padded = torch.nn.functional.pad(x[i], (p, p, p, p), value=0.5)
            ref = padded[:, oy : oy + 12, ox : ox + 12]
            assert torch.allclose(y[i], ref, atol=1e-5)


def test_rotation_by_90_degrees_on_a_square():
    x = torch.rand(1, 1, 8, 8)
    sched = TransformSchedule([fv.random_rotate([90])], rngs(1), 1, (8, 8))
    y = sched(x, 0)
    assert torch.allclose(y[0, 0], torch.rot90(x[0, 0], k=1, dims=(0, 1)), atol=1e-5) or torch.allclose(
        y[0, 0], torch.rot90(x[0, 0], k=-1, dims=(0, 1)), atol=1e-5
    )
