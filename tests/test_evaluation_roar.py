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


def test_roar_stage_with_road_imputation(tmp_path):
    """The ROAR stage on a fake Fashion-MNIST with ``imputation: road``: the record says how the
    pixels were filled, and the page says it, judges the mask leak and gives the quality figures."""
    import json

    import pytest
    from data_fakes import write_fake_fashion

    import generator.data.sources as sources
    from generator.config import load_config
    from generator.pipeline.run import run_report
    from generator.render.site import render_site

    data_dir = write_fake_fashion(tmp_path / "fmnist", n_train=300, n_test=120)
    config_path = tmp_path / "report.yaml"
    config_path.write_text(f"""
title: ROAR with ROAD
device: cpu
site_src: []
models:
  - id: fashion-cnn
    source: embedded:fashion_mnist_cnn
    training: {{epochs: 1, batch_size: 32}}
    datasets: [fake-test]
datasets:
  - id: fake-test
    source: fashion-mnist
    options: {{split: test, path: "{data_dir}", limit: 8}}
outcome: {{enabled: false}}
evaluation:
  enabled: true
  roar: {{methods: [saliency], fractions: [0.5], train_images: 100, test_images: 100, epochs: 1, batch_size: 16,
          imputation: road, road_noise: 0.02}}
""")
    mp = pytest.MonkeyPatch()
    mp.setattr(sources, "FASHION_MNIST_DIRS", [str(data_dir)])
    try:
        config = load_config(config_path)
        run_report(config, show_progress=False)
    finally:
        mp.undo()
    manifest = json.loads((config.work_dir / "manifest.json").read_text())
    entry = next(e for e in manifest["artifacts"] if e["kind"] == "evaluation_roar")
    record = json.loads((config.work_dir / "artifacts" / entry["path"] / "record.json").read_text())
    assert record["imputation"] == "road" and record["road_noise"] == 0.02
    assert set(record["roar"]) == {"saliency", "random"} and len(record["roar"]["saliency"]) == 1
    render_site(config, build=False)
    page = (config.work_dir / "docs" / "evaluation" / "fashion-cnn" / "fake-test.md").read_text()
    assert "ROAD's noisy linear imputation" in page and "Rong et al. 2022" in page
    assert ("The removal mask leaks the class" in page) or ("No sign of a mask leak" in page)
    assert "binomial standard error" in page
