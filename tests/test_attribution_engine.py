"""The rule engine, canonizers, batching and the registry contract."""

import re

import pytest
import torch
from _attr_models import ReusedInplace, SeparateRelu, small_cnn, state_equal, tiny_vit, transformer_only
from torch import nn

from generator.capability import Unsupported
from generator.engine import batching
from generator.engine.batching import run_chunked
from generator.engine.canonizers import BatchNormFolder, ResidualCanonizer, canonized
from generator.engine.rules import RELU_LIKE, GuidedBackpropRule, rules_applied, rules_by_type
from generator.methods.attribution import ATTRIBUTION_METHODS, attribute_many, cam_segmentation, resolve_targets
from generator.models.spec import ModelSpec

FAST = {"steps": 6, "n_samples": 3, "window": 4, "stride": 4}


def fast_params(cls):
    return {k: v for k, v in FAST.items() if k in cls.defaults}


def spec_for(model_classes=5):
    return ModelSpec(id="toy", source="test", input_size=(3, 16, 16), mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3),
                     class_names=[f"c{i}" for i in range(model_classes)], cam_layer="act2")


def no_hooks(model):
    return all(not m._forward_hooks and not m._forward_pre_hooks and not m._backward_hooks
               and "forward" not in m.__dict__
               for m in model.modules())


@pytest.mark.parametrize("name", ATTRIBUTION_METHODS.names())
def test_every_method_contract(name):
    cls = ATTRIBUTION_METHODS.get(name)
    assert cls.version and isinstance(cls.version, str)
    doc = cls.__doc__ or ""
    assert re.search(r"(19|20)\d\d", doc), "docstring must cite the paper"
    model, spec = small_cnn(bn=True), spec_for()
    x = torch.randn(2, 3, 16, 16)
    if name in transformer_only():
        # a CNN is refused with a one-line reason and left untouched; the contract holds on a ViT
        with pytest.raises(Unsupported) as why:
            cls(model, spec, **fast_params(cls)).attribute(x, torch.tensor([1, 2]))
        assert str(why.value).strip() and "\n" not in str(why.value).strip()
        assert no_hooks(model)
        model, spec = tiny_vit(), spec_for()
        spec.cam_layer = None
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    before = model(x)
    r = cls(model, spec, **fast_params(cls)).attribute(x, torch.tensor([1, 2]))
    assert r.maps.shape == (2, 16, 16) and r.maps.dtype == torch.float32
    assert torch.isfinite(r.maps).all()
    if r.raw is not None:
        assert r.raw.shape == x.shape
    if not cls.signed:
        assert (r.maps >= 0).all()
    assert no_hooks(model) and state_equal(model, saved) and torch.equal(model(x), before)
    assert all(p.requires_grad for p in model.parameters())


def test_model_restored_after_exception():
    import torchvision

    model = torchvision.models.resnet18(weights=None).eval()
    x = torch.randn(1, 3, 32, 32)
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    before = model(x)
    with pytest.raises(RuntimeError, match="boom"):
        with canonized(model, [BatchNormFolder(), ResidualCanonizer()], example=x):
            with rules_applied(model, rules_by_type(model, [(RELU_LIKE, GuidedBackpropRule())])):
                assert all(not m.inplace for m in model.modules() if isinstance(m, nn.ReLU))
                model(x.requires_grad_()).sum().backward()
                raise RuntimeError("boom")
    assert no_hooks(model) and state_equal(model, saved)
    assert all(m.inplace for m in model.modules() if isinstance(m, nn.ReLU))
    assert not any("mc_residual_add" in n for n, _ in model.named_modules())
    assert torch.equal(model(x.detach()), before)
    # an exception inside a method (wrong input size for the classifier) leaves nothing behind
    with pytest.raises(RuntimeError):
        ATTRIBUTION_METHODS.get("lrp_epsilon")(small_cnn()).attribute(torch.randn(1, 4, 16, 16), 0)


def test_canonizers_keep_outputs():
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    x = torch.randn(2, 3, 32, 32)
    before = model(x)
    folder = BatchNormFolder()
    with canonized(model, [folder, ResidualCanonizer()], example=x):
        assert len(folder.folded) == 20
        torch.testing.assert_close(model(x), before, rtol=1e-4, atol=1e-4)
    assert torch.equal(model(x), before)


@pytest.mark.parametrize("name", ["guided_backprop", "deconvnet", "deeplift", "lrp_epsilon",
                                  "lrp_zplus_flat", "saliency"])
def test_inplace_and_reused_relu(name):
    torch.manual_seed(0)
    reused = ReusedInplace().eval()
    separate = SeparateRelu(reused).eval()
    x = torch.randn(3, 3, 8, 8)
    cls = ATTRIBUTION_METHODS.get(name)
    a = cls(reused).attribute(x, torch.tensor([0, 1, 2]))
    b = cls(separate).attribute(x, torch.tensor([0, 1, 2]))
    torch.testing.assert_close(a.raw, b.raw, rtol=1e-5, atol=1e-6)
    assert reused.relu.inplace and no_hooks(reused)


@pytest.mark.parametrize("name", ["integrated_gradients", "gradcam", "lrp_epsilon", "occlusion",
                                  "smoothgrad", "deeplift"])
def test_per_image_targets(name):
    model = small_cnn()
    x = torch.randn(3, 3, 16, 16)
    t = torch.tensor([4, 0, 2])
    cls = ATTRIBUTION_METHODS.get(name)
    method = cls(model, "act2" if "cam" in name else None, **fast_params(cls))
    batch = method.attribute(x, t).maps
    if name == "smoothgrad":  # noise differs per batch position; compare against the same batch
        single = torch.stack([method.attribute(x, torch.full((3,), int(t[i]))).maps[i] for i in range(3)])
    else:
        single = torch.cat([method.attribute(x[i:i + 1], int(t[i])).maps for i in range(3)])
    torch.testing.assert_close(batch, single, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["integrated_gradients", "interior_gradients", "smoothgrad", "vargrad", "occlusion",
                                  "lrp_zplus_flat", "deeplift", "gradcam_pp", "guided_gradcam"])
def test_chunked_equals_unchunked(name):
    model = small_cnn()
    x = torch.randn(4, 3, 16, 16)
    t = torch.tensor([0, 1, 2, 3])
    cls = ATTRIBUTION_METHODS.get(name)
    p = fast_params(cls)
    big = cls(model, "act2", max_batch=1000, **p).attribute(x, t)
    small = cls(model, "act2", max_batch=3, **p).attribute(x, t)
    torch.testing.assert_close(small.maps, big.maps, rtol=1e-4, atol=1e-6)


def test_integrated_gradients_completeness_256_steps():
    model = small_cnn()
    with torch.no_grad():
        model.fc.weight.mul_(20)  # logits of order one, so the relative gap is meaningful
    x = torch.rand(4, 3, 16, 16) * 2 - 1
    for baseline in ("black", "blur", "uniform"):
        r = ATTRIBUTION_METHODS.get("integrated_gradients")(model, spec_for(), steps=256, baseline=baseline,
                                                            max_batch=512).attribute(x, torch.tensor([0, 1, 2, 3]))
        # relative gap where f(x) - f(baseline) is not close to zero (there it is ill-conditioned)
        ok = r.extras["delta"].abs() > 0.1
        assert ok.sum() >= 2 and float(r.extras["completeness_gap"][ok].max()) < 0.01, (baseline, r.extras)
        assert float(r.extras["completeness_gap_abs"].max()) < 0.01


def test_run_chunked_halves_on_oom():
    seen = []

    def fn(a, b):
        if b - a > 3:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        seen.extend(range(a, b))

    assert run_chunked(10, 16, fn) == 2
    assert seen == list(range(10))


def test_bf16_is_faithful_to_fp32():
    model = small_cnn()
    x = torch.randn(2, 3, 16, 16)
    from generator.evaluation import spearman

    a = ATTRIBUTION_METHODS.get("gradient_x_input")(model).attribute(x, 1).maps
    b = ATTRIBUTION_METHODS.get("gradient_x_input")(model, None, precision="bf16").attribute(x, 1).maps
    assert float(spearman(a, b).min()) > 0.9


def test_attribute_many_shares_and_matches():
    model = small_cnn()
    x = torch.randn(2, 3, 16, 16)
    names = ["saliency", "gradient_x_input", "gradcam", "gradcam_pp", "counterfactual_gradcam", "guided_gradcam"]
    methods = [ATTRIBUTION_METHODS.get(n)(model, "act2") for n in names]
    shared = attribute_many(methods, x, torch.tensor([1, 3]))
    for m in methods:
        torch.testing.assert_close(shared[m.name].maps, m.attribute(x, torch.tensor([1, 3])).maps)


def test_resolve_targets():
    logits = torch.tensor([[0.1, 2.0, 1.0], [3.0, 0.0, 1.0]])
    spec = ModelSpec(id="t", source="t", input_size=(3, 4, 4), mean=(0,) * 3, std=(1,) * 3,
                     class_names=["cat", "dog", "emu"])
    assert resolve_targets(None, logits).tolist() == [1, 0]
    assert resolve_targets("second", logits).tolist() == [2, 2]
    assert resolve_targets("emu", logits, spec).tolist() == [2, 2]
    assert resolve_targets(["dog", "predicted"], logits, spec).tolist() == [1, 0]


def test_cam_segmentation():
    cam = torch.zeros(1, 10, 10)
    cam[0, 2:5, 3:7] = 1.0
    cam[0, 8, 8] = 0.5
    seg = cam_segmentation(cam, thresholds=(0.4, 0.9))
    assert seg["boxes"][0, 0].tolist() == [3, 2, 8, 8]
    assert seg["boxes"][1, 0].tolist() == [3, 2, 6, 4]
    torch.testing.assert_close(seg["area"][:, 0], torch.tensor([13 / 100, 12 / 100]))
    big = cam_segmentation(cam, thresholds=(0.4,), largest_component=True)
    assert big["boxes"][0, 0].tolist() == [3, 2, 6, 4]


def test_fast_layout_leaves_cpu_tensors_alone():
    x = torch.randn(2, 3, 8, 8)
    assert batching.fast_layout(x) is x


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_channels_last_forward_matches_nchw(monkeypatch):
    """Occlusion and deletion curves run channels-last on CUDA; the values must not change."""
    import torchvision

    from generator.evaluation import deletion_insertion

    model = torchvision.models.resnet18(weights=None).eval().cuda()
    torch.manual_seed(0)
    x = torch.randn(2, 3, 64, 64, device="cuda")
    t = torch.tensor([1, 7], device="cuda")
    maps = {"random": torch.rand(2, 64, 64, device="cuda")}
    results = {}
    for flag in (False, True):
        monkeypatch.setattr(batching, "CHANNELS_LAST_ON_CUDA", flag)
        occ = ATTRIBUTION_METHODS.get("occlusion")(model, None, window=16, stride=8).attribute(x, t).maps
        curves = deletion_insertion(model, x, maps, t, steps=5, modes=("deletion",))["deletion"]["curves"]["random"]
        results[flag] = (occ, curves)
    # fp32 convolutions may pick different (TF32) kernels per layout: equal to float tolerance
    torch.testing.assert_close(results[True][0], results[False][0], rtol=2e-2, atol=2e-3)
    torch.testing.assert_close(results[True][1], results[False][1], rtol=2e-2, atol=2e-3)
    assert sum(p.is_contiguous() for p in model.parameters()) == len(list(model.parameters()))
