"""Cross-checks against Captum (test-only dependency) on a small CNN."""

import pytest
import torch

captum_attr = pytest.importorskip("captum.attr")

from _attr_models import small_cnn  # noqa: E402

from generator.methods.attribution import ATTRIBUTION_METHODS  # noqa: E402

TOL = dict(rtol=1e-4, atol=1e-5)


@pytest.fixture(scope="module")
def setup():
    model = small_cnn()
    torch.manual_seed(1)
    x = torch.randn(3, 3, 16, 16)
    target = torch.tensor([0, 3, 1])
    return model, x, target


def ours(name, model, x, target, layer=None, **params):
    return ATTRIBUTION_METHODS.get(name)(model, layer, **params).attribute(x, target)


def test_saliency(setup):
    model, x, t = setup
    ref = captum_attr.Saliency(model).attribute(x, target=t, abs=False)
    r = ours("saliency", model, x, t)
    torch.testing.assert_close(r.raw, ref, **TOL)
    torch.testing.assert_close(r.maps, ref.abs().amax(1), **TOL)


def test_gradient_x_input(setup):
    model, x, t = setup
    ref = captum_attr.InputXGradient(model).attribute(x, target=t)
    torch.testing.assert_close(ours("gradient_x_input", model, x, t).raw, ref, **TOL)


# riemann_trapezoid is left out: Captum weights its steps 1/n (summing to (n-1)/n), ours 1/(n-1).
@pytest.mark.parametrize("integration", ["gausslegendre", "riemann_middle", "riemann_left"])
def test_integrated_gradients(setup, integration):
    model, x, t = setup
    ref = captum_attr.IntegratedGradients(model).attribute(x, baselines=torch.zeros_like(x), target=t, n_steps=24,
                                                           method=integration)
    r = ours("integrated_gradients", model, x, t, steps=24, baseline="zeros", integration=integration, max_batch=16)
    torch.testing.assert_close(r.raw, ref, **TOL)


@pytest.mark.parametrize("name,stat", [("smoothgrad", "mean"), ("smoothgrad_sq", "sq"), ("vargrad", "var")])
def test_smoothgrad_family_shared_noise(setup, name, stat):
    model, x, t = setup
    method = ATTRIBUTION_METHODS.get(name)(model, None, n_samples=6, seed=3, max_batch=5)
    sal = captum_attr.Saliency(model)
    grads = torch.stack([sal.attribute(x + method.sample_noise(x, s), target=t, abs=False) for s in range(6)])
    ref = {"mean": grads.mean(0), "sq": (grads ** 2).mean(0), "var": grads.var(0, unbiased=False)}[stat]
    torch.testing.assert_close(method.attribute(x, t).raw, ref, **TOL)


def test_smoothgrad_against_noise_tunnel_statistics(setup):
    """Captum's NoiseTunnel draws its own noise; with many samples both estimate the same mean."""
    model, x, t = setup
    torch.manual_seed(0)
    ref = captum_attr.NoiseTunnel(captum_attr.Saliency(model)).attribute(
        x, target=t, nt_type="smoothgrad", nt_samples=200, stdevs=0.05, abs=False)
    span = (x.flatten(1).amax(1) - x.flatten(1).amin(1))
    assert torch.allclose(span, span[0], rtol=0.3)
    r = ours("smoothgrad", model, x, t, n_samples=200, noise_level=float(0.05 / span.mean()), max_batch=256)
    corr = torch.corrcoef(torch.stack([r.raw.flatten(), ref.flatten()]))[0, 1]
    assert corr > 0.95


def test_guided_backprop(setup):
    model, x, t = setup
    ref = captum_attr.GuidedBackprop(model).attribute(x, target=t)
    torch.testing.assert_close(ours("guided_backprop", model, x, t).raw, ref, **TOL)


def test_deconvnet(setup):
    model, x, t = setup
    ref = captum_attr.Deconvolution(model).attribute(x, target=t)
    torch.testing.assert_close(ours("deconvnet", model, x, t).raw, ref, **TOL)


def test_gradcam(setup):
    model, x, t = setup
    ref = captum_attr.LayerGradCam(model, model.act2).attribute(x, target=t, relu_attributions=True)
    r = ours("gradcam", model, x, t, layer="act2")
    torch.testing.assert_close(r.extras["cam"], ref[:, 0], **TOL)
    up = captum_attr.LayerAttribution.interpolate(ref, (16, 16), interpolate_mode="bilinear")
    torch.testing.assert_close(r.maps, up[:, 0], **TOL)


def test_occlusion(setup):
    model, x, t = setup
    ref = captum_attr.Occlusion(model).attribute(x, target=t, sliding_window_shapes=(3, 4, 4), strides=(3, 2, 2),
                                                 baselines=0)
    r = ours("occlusion", model, x, t, window=4, stride=2, max_batch=37)
    torch.testing.assert_close(r.raw, ref, **TOL)


def test_deeplift(setup):
    model, x, t = setup
    ref = captum_attr.DeepLift(model).attribute(x, baselines=torch.zeros_like(x), target=t)
    r = ours("deeplift", model, x, t, baseline="zeros")
    torch.testing.assert_close(r.raw, ref, **TOL)
    assert float(r.extras["completeness_gap"].max()) < 1e-3
