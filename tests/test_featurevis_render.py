"""The render loop: reproducible seeds, batching, early stop, model left untouched."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from featurevis_toys import FashionCNN, gray_spec, rgb_spec, toy_cnn

from generator.methods import featurevis as fv
from generator.methods.featurevis.render import _RedirectedClamp, redirected_relu

KW = dict(steps=6, size=32, precision="fp32", seed=3)


def test_batched_equals_one_at_a_time():
    model, spec = toy_cnn(), rgb_spec()
    objective = fv.channel("5", [0, 3, 5, 9, 12])
    batched = fv.render(model, spec, objective, batch_size=5, redirected_relu_steps=2, **KW)
    single = fv.render(model, spec, objective, batch_size=1, redirected_relu_steps=2, **KW)
    assert np.allclose(batched.images, single.images, atol=1e-4)
    assert np.allclose(batched.trajectory, single.trajectory, rtol=1e-3, atol=1e-4)
    assert batched.descriptions == single.descriptions == [f"channel(5, {c})" for c in (0, 3, 5, 9, 12)]
    # and a chunking that splits the batch unevenly
    chunked = fv.render(model, spec, objective, batch_size=2, redirected_relu_steps=2, **KW)
    assert np.allclose(batched.images, chunked.images, atol=1e-4)


def test_same_seed_same_images_other_seed_other_images():
    model, spec = toy_cnn(), rgb_spec()
    a = fv.render(model, spec, fv.channel("5", 1), n_images=2, **KW)
    b = fv.render(model, spec, fv.channel("5", 1), n_images=2, **KW)
    c = fv.render(model, spec, fv.channel("5", 1), n_images=2, **{**KW, "seed": 4})
    assert np.array_equal(a.images, b.images)
    assert not np.allclose(a.images, c.images)
    assert not np.allclose(a.images[0], a.images[1])  # each image has its own seed


def test_list_of_objectives_is_batched_per_image():
    model, spec = toy_cnn(), rgb_spec()
    objs = [fv.channel("5", 0), fv.neuron("2", 1), fv.class_logit(2)]
    res = fv.render(model, spec, objs, batch_size=2, **KW)
    assert res.images.shape == (3, 32, 32, 3)
    assert res.descriptions == [o.description for o in objs]
    for i, o in enumerate(objs):
        assert np.isclose(fv.evaluate(model, spec, o, res.images[i : i + 1])[0], res.final_values[i], atol=1e-4)


class Counting:
    def __init__(self, model):
        self.calls = []
        self.handles = [
            m.register_forward_hook(lambda mod, i, o, n=n: self.calls.append(n))
            for n, m in model.named_modules()
            if n
        ]

    def remove(self):
        for h in self.handles:
            h.remove()


def test_forward_stops_at_the_deepest_needed_layer():
    model, spec = toy_cnn(), rgb_spec()
    counter = Counting(model)
    try:
        fv.render(model, spec, fv.channel("1", 0) + fv.neuron("4", 2), steps=3, size=32, precision="fp32")
        executed = set(counter.calls)
        assert executed == {"0", "1", "2", "3", "4"}
        assert len(counter.calls) == 4 * 5  # 3 steps + the final evaluation, 5 modules each
        counter.calls.clear()
        fv.render(model, spec, fv.class_logit(1), steps=2, size=32, precision="fp32")
        assert "10" in counter.calls  # the output needs the whole network
    finally:
        counter.remove()


def _snapshot(model):
    return (
        {k: v.clone() for k, v in model.state_dict().items()},
        [(n, p.requires_grad) for n, p in model.named_parameters()],
        [(n, m.training) for n, m in model.named_modules()],
        [(n, getattr(m, "inplace", None)) for n, m in model.named_modules()],
    )


def _hook_count(model):
    return sum(
        len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in model.modules()
    )


def test_model_untouched_and_hooks_removed():
    model, spec = toy_cnn(), rgb_spec()
    model.train()  # BatchNorm in training mode would update its running statistics
    model[3].eval()
    model[0].weight.requires_grad_(False)
    before = _snapshot(model)
    hooks = _hook_count(model)
    fv.render(model, spec, fv.channel("5", [0, 1]) + 0.1 * fv.diversity("2"), redirected_relu_steps=3, **KW)
    fv.render(model, spec, fv.class_logit(0), **KW)
    after = _snapshot(model)
    assert all(torch.equal(before[0][k], after[0][k]) for k in before[0])
    assert before[1:] == after[1:]
    assert _hook_count(model) == hooks
    assert all(p.grad is None for p in model.parameters())


def test_hooks_removed_and_state_restored_on_error():
    model, spec = toy_cnn(), rgb_spec()
    before = _snapshot(model)
    calls = {"n": 0}

    def boom(acts):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("objective failed")
        return acts["5"].float().mean(dim=(1, 2, 3))

    with pytest.raises(RuntimeError, match="objective failed"):
        fv.render(model, spec, fv.Objective(boom, ["5"], "boom"), redirected_relu_steps=5, **KW)
    assert _hook_count(model) == 0
    assert before[1:] == _snapshot(model)[1:]


def test_redirected_relu_gradient():
    x = torch.tensor([[-1.0, -2.0, 0.5], [1.0, -1.0, 7.0]], requires_grad=True)
    # image 0: the ordinary gradient of the only unit passing (0.5) is zero -> redirected
    g = torch.tensor([[-1.0, 1.0, 0.0], [-1.0, -1.0, -1.0]])
    y = _RedirectedClamp.apply(x, 0.0, 6.0)
    assert torch.equal(y, x.clamp(0, 6))
    (grad,) = torch.autograd.grad(y, x, g)
    # image 0: -1 at x=-1 pushes x up (kept); +1 at x=-2 pushes it lower (dropped)
    assert torch.equal(grad[0], torch.tensor([-1.0, 0.0, 0.0]))
    # image 1 has a live unit: ordinary ReLU6 gradient
    assert torch.equal(grad[1], torch.tensor([-1.0, 0.0, 0.0]))


def test_redirected_relu_hooks_relu_and_relu6_and_are_removed():
    model = toy_cnn()
    with redirected_relu(model) as n:
        assert n == 3  # two ReLU and one ReLU6
        assert _hook_count(model) == 3
    assert _hook_count(model) == 0


def test_pixel_and_pyramid_params_and_grayscale():
    model, spec = FashionCNN(), gray_spec()
    for param in ("pixel", "pyramid", "fft"):
        res = fv.render(model, spec, fv.channel("act1", [0, 1]), steps=4, param=param, precision="fp32")
        assert res.images.shape == (2, 28, 28, 1)
        assert res.images.min() >= 0 and res.images.max() <= 1
        assert res.settings["param"] == param


def test_start_from_given_pixels():
    model, spec = toy_cnn(), rgb_spec()
    start = torch.rand(2, 3, 32, 32) * 0.8 + 0.1
    res = fv.render(model, spec, fv.layer("2"), n_images=2, steps=0, init_pixels=start, size=32, precision="fp32")
    assert np.allclose(res.images, start.permute(0, 2, 3, 1).numpy(), atol=1e-4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_bf16_autocast_on_cuda():
    model, spec = toy_cnn().cuda(), rgb_spec()
    res = fv.render(model, spec, fv.channel("5", [0, 1]), steps=4, size=32, precision="bf16")
    assert res.settings["precision"] == "bfloat16"
    assert np.isfinite(res.images).all()
