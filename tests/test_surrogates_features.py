"""Binary features: values recomputed by hand, names readable, hooks removed."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from generator.methods.surrogates import (
    ChannelFeatures,
    FeatureSet,
    RegionIntensityFeatures,
    TabularFeatures,
    pooled_activations,
)


def test_region_features_by_hand():
    rng = np.random.default_rng(0)
    imgs = rng.random((50, 28, 28)).astype(np.float32)
    imgs[:10, :9] = 0.0  # ten images with a dark upper band
    fx = RegionIntensityFeatures(grid=3, quantiles=(0.25, 0.75))
    fs = fx.fit_transform(imgs[:, None])  # (N,1,H,W) accepted
    assert fs.X.shape == (50, (3 + 3 + 9 + 1) * 2)
    assert "upper band mostly dark" in fs.names and "centre column bright" in fs.names
    assert "centre cell bright" in fs.names and "top-left cell mostly dark" in fs.names
    j = fs.names.index("upper band mostly dark")
    means = imgs[:, 0:9, :].mean(axis=(1, 2))
    assert (fs.X[:, j] == (means <= np.quantile(means, 0.25))).all()
    assert fs.X[:10, j].all()
    k = fs.names.index("centre column bright")
    cm = imgs[:, :, 9:19].mean(axis=(1, 2))
    assert (fs.X[:, k] == (cm >= np.quantile(cm, 0.75))).all()
    assert fs.features[k].param("box") == (0, 28, 9, 19)
    # thresholds are fitted once and reused on new data; uint8 images are rescaled
    fs2 = fx.transform((imgs[:5] * 255).round().astype(np.uint8))
    assert (fs2.X == fx.transform(np.round(imgs[:5] * 255) / 255).X).all()
    with pytest.raises(ValueError):
        fx.transform(np.zeros((2, 3, 28, 28)))


class Small(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.relu = nn.ReLU(inplace=True)
        self.fc = nn.Linear(4 * 26 * 26, 3)

    def forward(self, x):
        return self.fc(self.relu(self.conv(x)).flatten(1))


def test_channel_features_and_hooks_removed():
    torch.manual_seed(0)
    model = Small().eval()
    x = torch.randn(40, 1, 28, 28)
    before = model(x)
    pooled = pooled_activations(model, ["relu"], x, batch_size=16)
    assert torch.equal(model(x), before) and not model.conv._forward_hooks and not model.relu._forward_hooks
    with torch.no_grad():
        ref = torch.relu(model.conv(x)).mean((2, 3)).numpy()
    np.testing.assert_allclose(pooled["relu"], ref, rtol=1e-5, atol=1e-6)
    cf = ChannelFeatures(q=0.75, channels={"relu": [1, 3]})
    fs = cf.fit_transform(pooled)
    assert fs.names == ["channel 1 of relu fires above its q75", "channel 3 of relu fires above its q75"]
    assert (fs.X[:, 1] == (ref[:, 3] > np.quantile(ref[:, 3], 0.75))).all()


def test_tabular_features_and_concat():
    cols = {"outdoor": np.array([True, False, True, True]), "size": np.arange(4) * 1.0 + np.arange(4) ** 2,
            "colour": np.array(["red", "blue", "red", "green"])}
    tf = TabularFeatures(max_categories=3)
    fs = tf.fit_transform(cols)
    assert fs.names == ["outdoor", "not outdoor", "size low", "size high", "colour = blue", "colour = green",
                        "colour = red"]
    assert fs.X[:, 0].tolist() == [True, False, True, True] and fs.X[:, 6].tolist() == [True, False, True, False]
    assert fs.X[:, 2].tolist() == [True, False, False, False] and fs.X[:, 3].tolist() == [False, False, False, True]
    both = FeatureSet.concat([fs, fs])
    assert both.X.shape == (4, 14)
    with pytest.raises(ValueError):
        FeatureSet.concat([fs, FeatureSet(np.zeros((3, 1), bool), fs.features[:1])])
