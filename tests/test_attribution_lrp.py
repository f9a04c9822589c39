"""LRP: hand-computed values on a toy network; relevance conservation on ResNet-18 and
EfficientNet-Lite0 (random weights, eval mode, biases zero so that no relevance is absorbed)."""

import pytest
import torch
from torch import nn

from generator.methods.attribution import ATTRIBUTION_METHODS


class Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(2, 2, 1, bias=False)
        self.r1 = nn.ReLU()
        self.c2 = nn.Conv2d(2, 2, 1, bias=False)
        self.r2 = nn.ReLU()
        self.fc = nn.Linear(2, 1, bias=False)
        with torch.no_grad():
            self.c1.weight.copy_(torch.tensor([[1.0, -1.0], [2.0, 1.0]]).view(2, 2, 1, 1))
            self.c2.weight.copy_(torch.tensor([[1.0, -0.5], [-1.0, 2.0]]).view(2, 2, 1, 1))
            self.fc.weight.copy_(torch.tensor([[1.0, 1.0]]))

    def forward(self, x):
        return self.fc(self.r2(self.c2(self.r1(self.c1(x)))).flatten(1))


X = torch.tensor([1.0, 3.0]).view(1, 2, 1, 1)
# By hand: h1 = relu([1-3, 2+3]) = [0, 5]; z2 = [0 - 2.5, 0 + 10] -> h2 = [0, 10]; out = 10.
# LRP-eps (eps -> 0): R(h2) = [0, 10]. c2: R(h1)_i = h1_i w2_{2i} 10 / 10 = [0, 10].
# c1: only unit 2 has relevance (10, z = 5): R(x) = [1*2, 3*1] * 10 / 5 = [4, 6].
EXPECTED_EPS = [4.0, 6.0]
# z-plus on c2 (x >= 0): z+ = 5*2 = 10 -> R(h1) = [0, 10]; flat on c1: 10 spread over 2 inputs.
EXPECTED_ZPLUS_FLAT = [5.0, 5.0]
# alpha2beta1 on c2: positive part as z+ gives [0, 10] * 2; negative part: the only negative
# weight reaching unit 2 is w = -1 from h1_1 = 0, so z- = 0 and nothing is subtracted -> [0, 20];
# flat on c1 -> [10, 10] (alpha-beta only conserves where both parts are non-zero).
EXPECTED_ALPHA_BETA = [10.0, 10.0]


@pytest.mark.parametrize("name,expected", [("lrp_epsilon", EXPECTED_EPS), ("lrp_zplus_flat", EXPECTED_ZPLUS_FLAT),
                                           ("lrp_alpha_beta", EXPECTED_ALPHA_BETA)])
def test_toy_network_by_hand(name, expected):
    r = ATTRIBUTION_METHODS.get(name)(Toy().eval(), None, epsilon=1e-9).attribute(X, 0)
    torch.testing.assert_close(r.raw.view(-1), torch.tensor(expected), rtol=1e-5, atol=1e-5)


def test_epsilon_equals_gradient_x_input_without_biases():
    toy = Toy().eval()
    x = torch.randn(4, 2, 1, 1)
    lrp = ATTRIBUTION_METHODS.get("lrp_epsilon")(toy, None, epsilon=1e-9).attribute(x, 0)
    gxi = ATTRIBUTION_METHODS.get("gradient_x_input")(toy).attribute(x, 0)
    torch.testing.assert_close(lrp.raw, gxi.raw, rtol=1e-4, atol=1e-5)


def _zero_biases(model):
    for m in model.modules():
        if isinstance(m, nn.Linear) and m.bias is not None:
            with torch.no_grad():
                m.bias.zero_()
    return model.eval()


def _resnet18():
    import torchvision

    torch.manual_seed(0)
    return _zero_biases(torchvision.models.resnet18(weights=None))


def _lite0():
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    return _zero_biases(timm.create_model("tf_efficientnet_lite0", pretrained=False))


_MODELS = {}


@pytest.mark.parametrize("factory", [_resnet18, _lite0], ids=["resnet18", "tf_efficientnet_lite0"])
@pytest.mark.parametrize("name", ["lrp_epsilon", "lrp_zplus_flat"])
def test_relevance_conserved(factory, name):
    if factory not in _MODELS:
        _MODELS[factory] = factory()
    model = _MODELS[factory]
    torch.manual_seed(1)
    x = torch.randn(2, 3, 48, 48)
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    before = model(x)
    r = ATTRIBUTION_METHODS.get(name)(model).attribute(x, torch.tensor([3, 7]))
    ratio = r.extras["conservation"]
    assert torch.all((ratio - 1).abs() < 0.01), ratio
    assert torch.equal(model(x), before)
    assert all(torch.equal(v, saved[k]) for k, v in model.state_dict().items())
