"""Tiny labelled inputs for the data-dimension tests: a fake Fashion-MNIST (IDX files) that the
embedded CNN trains on in seconds, and a class folder with a python-defined 1-channel CNN."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
from PIL import Image

from generator.data.idx import write_idx


def fake_images(n: int, seed: int, classes: int = 10) -> tuple:
    """28 x 28 images: class ``c`` is a bright bar at a class-specific place, plus noise, so a
    CNN learns them quickly but not perfectly."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % classes
    rng.shuffle(labels)
    x = rng.integers(0, 60, (n, 28, 28)).astype(np.int32)
    for i, c in enumerate(labels):
        r, col = 2 + 2 * (c % 5), 2 + 12 * (c // 5)
        x[i, r : r + 6 + rng.integers(0, 4), col : col + 12] += 150 + rng.integers(0, 50)
        if rng.random() < 0.15:  # some confusable images
            x[i, 14:20, 4:24] += 120
    return np.clip(x, 0, 255).astype(np.uint8), labels.astype(np.uint8)


def write_fake_fashion(root: Path, n_train: int = 300, n_test: int = 120) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for prefix, n, seed in (("train", n_train, 1), ("t10k", n_test, 2)):
        x, y = fake_images(n, seed)
        write_idx(root / f"{prefix}-images-idx3-ubyte", x)
        write_idx(root / f"{prefix}-labels-idx1-ubyte", y)
    return root


def fashion_config(tmp: Path, data_dir: Path) -> Path:
    config = tmp / "report.yaml"
    config.write_text(textwrap.dedent(f'''
        title: data test
        device: cpu
        models:
          - id: fashion-cnn
            source: embedded:fashion_mnist_cnn
            title: Fake fashion CNN
            training: {{epochs: 2, batch_size: 32}}
            datasets: [fake-test]
        datasets:
          - id: fake-test
            source: fashion-mnist
            options: {{split: test, path: "{data_dir}"}}
        outcome:
          enabled: false
        data:
          enabled: true
          pool: {{cpu: 200}}
          prototypes: {{per_class: 2, criticisms_per_class: 2, global_prototypes: 3, global_criticisms: 3}}
          influence: {{correct: 2, misclassified: 2, top_k: 3}}
          decision_set: {{channels: 8, min_support: 0.05, examples_per_rule: 2}}
    '''))
    return config


GRAY_MODEL = textwrap.dedent('''
    import torch
    from torch import nn

    def build():
        torch.manual_seed(0)
        model = nn.Sequential()
        model.add_module("conv1", nn.Conv2d(1, 4, 3, padding=1))
        model.add_module("relu1", nn.ReLU())
        model.add_module("pool", nn.AdaptiveAvgPool2d(2))
        model.add_module("flatten", nn.Flatten())
        model.add_module("fc1", nn.Linear(16, 8))
        model.add_module("relu2", nn.ReLU())
        model.add_module("fc2", nn.Linear(8, 3))
        return model, {"input_size": (1, 16, 16), "mean": (0.5,), "std": (0.5,),
                       "class_names": ["ant", "bee <em>&", "cat"], "layers": ["relu1"],
                       "cam_layer": "relu1", "embedding_layer": "relu2"}
''')

FOLDER_CLASSES = ["ant", "bee <em>&", "cat"]


def folder_config(tmp: Path) -> Path:
    rng = np.random.default_rng(0)
    root = tmp / "gray"
    for c, name in enumerate(FOLDER_CLASSES):
        d = root / name
        d.mkdir(parents=True, exist_ok=True)
        for i in range(14):
            a = rng.integers(0, 80, (16, 16)).astype(np.uint8)
            a[4 * c : 4 * c + 5, :] = 220
            Image.fromarray(a, mode="L").save(d / f"img{i}.png")
    (tmp / "graymodel.py").write_text(GRAY_MODEL)
    config = tmp / "gray.yaml"
    config.write_text(textwrap.dedent(f'''
        title: "Gray <b>report</b>"
        site_src: []
        device: cpu
        models:
          - id: gray
            source: python:graymodel:build
        datasets:
          - id: shapes
            source: folder:{root}
        outcome:
          enabled: false
        data:
          enabled: true
          prototypes: {{per_class: 2, criticisms_per_class: 2, global_prototypes: 2, global_criticisms: 2}}
          influence: {{correct: 1, misclassified: 1, top_k: 3}}
          decision_set: {{channels: 4, min_support: 0.1, region_grid: 2}}
    '''))
    return config
