"""Parameterisations represent known images; colour decorrelation; normalisation."""

from __future__ import annotations

import pytest
import torch
from featurevis_toys import gray_spec, rgb_spec

from generator.methods import featurevis as fv
from generator.methods.featurevis.param import color_correlation_matrix


def smooth_image(n: int, c: int, h: int, w: int) -> torch.Tensor:
    """A known image in (0, 1): gradients, a disc and stripes."""
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    chans = [0.5 + 0.4 * torch.sin(3 * xx + k) * torch.cos(2 * yy - k) for k in range(c)]
    img = torch.stack(chans)
    img = torch.where((xx**2 + yy**2 < 0.2)[None], 0.9 - img * 0.5, img)
    return img.expand(n, c, h, w).clone()


@pytest.mark.parametrize("kind", ["fft", "pixel", "pyramid"])
@pytest.mark.parametrize("shape", [(2, 3, 32, 32), (1, 1, 28, 28), (1, 3, 24, 31)])
def test_inverse_round_trip(kind, shape):
    n, c, h, w = shape
    target = smooth_image(n, c, h, w)
    p = fv.make_param(kind, n, c, (h, w))
    p.set_from_pixels(target)
    assert torch.allclose(p(), target, atol=1e-4)


def test_fft_fits_known_image_by_optimisation():
    """Gradient descent through the 1/f, decorrelated, sigmoid parameterisation reaches a
    known image: nothing about it is out of the parameterisation's reach."""
    target = smooth_image(1, 3, 32, 32)
    gens = [torch.Generator().manual_seed(0)]
    p = fv.make_param("fft", 1, 3, 32, generators=gens)
    opt = torch.optim.Adam(p.parameters(), lr=0.05)
    start = (p() - target).abs().mean().item()
    for _ in range(300):
        opt.zero_grad()
        loss = ((p() - target) ** 2).mean()
        loss.backward()
        opt.step()
    err = (p() - target).abs().mean().item()
    assert err < 0.02 < start


def test_fft_initial_image_is_low_contrast_and_in_range():
    gens = [torch.Generator().manual_seed(i) for i in range(3)]
    img = fv.make_param("fft", 3, 3, 64, generators=gens)()
    assert img.shape == (3, 3, 64, 64)
    assert 0 < img.min() and img.max() < 1
    assert abs(img.mean().item() - 0.5) < 0.05
    assert not torch.allclose(img[0], img[1])


def test_per_image_generators_make_images_independent_of_batch():
    g = lambda i: torch.Generator().manual_seed(100 + i)  # noqa: E731
    four = fv.make_param("fft", 4, 3, 16, generators=[g(i) for i in range(4)])()
    one = fv.make_param("fft", 1, 3, 16, generators=[g(2)])()
    assert torch.equal(four[2], one[0])


def test_color_matrix():
    m = color_correlation_matrix(3)
    assert torch.isclose(m.norm(dim=0).max(), torch.tensor(1.0))
    assert torch.equal(color_correlation_matrix(1), torch.eye(1))
    # the first principal direction is brightness: all channels alike
    col = m[:, 0] / m[:, 0].norm()
    assert torch.all(col > 0.5)


def test_normalizer_from_spec():
    spec = rgb_spec()
    norm = fv.Normalizer.from_spec(spec)
    x = torch.rand(2, 3, 4, 4)
    y = norm(x)
    assert torch.allclose(y[:, 1], (x[:, 1] - 0.456) / 0.224)
    assert torch.allclose(norm.inverse(y), x, atol=1e-6)
    g = fv.Normalizer.from_spec(gray_spec())
    assert g.mean.shape == (1, 1, 1, 1)
