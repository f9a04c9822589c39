"""ROAR / KAR on a tiny synthetic problem where the informative pixels are known."""

import torch
from torch import nn

from generator.evaluation import remove_pixels, roar_kar


def make_data(n, gen):
    # 8x8 images of noise; the class is the sign of the mean of a fixed 2x2 patch
    x = torch.randn(n, 1, 8, 8, generator=gen) * 0.5
    y = (torch.randint(0, 2, (n,), generator=gen))
    x[:, 0, 2:4, 5:7] += (y.float() * 2 - 1).view(-1, 1, 1) * 1.0
    return x, y


def test_remove_and_keep():
    x = torch.arange(16.0).view(1, 1, 4, 4)
    m = x[:, 0].clone()
    fill = torch.tensor([-1.0])
    r = remove_pixels(x, m, 0.25, fill=fill)
    assert (r == -1).sum() == 4 and r[0, 0, 3, 3] == -1
    k = remove_pixels(x, m, 0.25, keep=True, fill=fill)
    assert (k != -1).sum() == 4 and k[0, 0, 3, 3] == 15


def test_informative_attribution_beats_random():
    gen = torch.Generator().manual_seed(0)
    xtr, ytr = make_data(400, gen)
    xte, yte = make_data(200, gen)

    def make_model():
        return nn.Sequential(nn.Flatten(), nn.Linear(64, 2))

    def train(model, x, y):
        opt = torch.optim.Adam(model.parameters(), lr=0.05)
        for _ in range(60):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
        return model

    def evaluate(model, x, y):
        with torch.no_grad():
            return float((model(x).argmax(1) == y).float().mean())

    truth = torch.zeros(8, 8)
    truth[2:4, 5:7] = 1.0
    informative_tr = truth.expand(400, 8, 8) + torch.rand(400, 8, 8, generator=gen) * 0.01
    informative_te = truth.expand(200, 8, 8) + torch.rand(200, 8, 8, generator=gen) * 0.01
    out = roar_kar(make_model, train, evaluate, xtr, ytr, xte, yte, {"oracle": informative_tr},
                   {"oracle": informative_te},
                   fractions=(0.1, 0.5))
    assert out["reference_accuracy"] > 0.9
    # ROAR: removing the informative 10% destroys accuracy; removing a random 10% does not
    assert out["roar"]["oracle"][0] < 0.7 < out["roar"]["random"][0]
    # KAR: keeping the informative 10% keeps accuracy; keeping a random 10% loses most of it
    assert out["kar"]["oracle"][0] > 0.9 > out["kar"]["random"][0]
