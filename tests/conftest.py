"""Shared fixtures: tiny models and image folders written into a temporary directory."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def _threads_per_worker() -> None:
    """Under pytest-xdist, the cores shared out among the workers: two workers each running
    torch on every core would fight for them (tiny operations then wait on busy threads).
    Set in the environment too, for the processes tests start."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        threads = max(1, (os.cpu_count() or 1) // workers)
        os.environ.setdefault("OMP_NUM_THREADS", str(threads))
        import torch

        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


_threads_per_worker()


def pytest_collection_modifyitems(config, items) -> None:
    """The browser test first: building its report and visiting every page is the longest chain
    of the suite, so with two workers it starts at once while the other worker runs the rest."""
    items.sort(key=lambda item: 0 if item.path.name == "test_site_browser.py" else 1)

TINY_MODEL_MODULE = textwrap.dedent('''
    import torch
    from torch import nn

    def build():
        torch.manual_seed(0)
        model = nn.Sequential()
        model.add_module("conv1", nn.Conv2d(3, 8, 3, padding=1))
        model.add_module("relu1", nn.ReLU())
        model.add_module("conv2", nn.Conv2d(8, 16, 3, padding=1, stride=2))
        model.add_module("relu2", nn.ReLU())
        model.add_module("pool", nn.AdaptiveAvgPool2d(1))
        model.add_module("flatten", nn.Flatten())
        model.add_module("fc", nn.Linear(16, 4))
        return model, {"input_size": (3, 32, 32), "resize": 36, "class_names": ["ant", "bee", "cat", "dog"],
                       "layers": ["relu1", "relu2"], "cam_layer": "relu2"}
''')


def write_image_folder(root: Path, n_per_class: int = 2) -> Path:
    """Class folders with RGB, grayscale, RGBA, 16-bit and odd-sized images, plus one corrupt file."""
    rng = np.random.default_rng(0)
    for cls in ["bee", "cat"]:
        d = root / cls
        d.mkdir(parents=True, exist_ok=True)
        for i in range(n_per_class):
            Image.fromarray(rng.integers(0, 255, (40 + i, 50, 3), dtype=np.uint8)).save(d / f"rgb{i}.png")
    Image.fromarray(rng.integers(0, 255, (33, 47), dtype=np.uint8), mode="L").save(root / "bee" / "gray.png")
    Image.fromarray(rng.integers(0, 255, (30, 30, 4), dtype=np.uint8), mode="RGBA").save(root / "cat" / "alpha.png")
    Image.fromarray(rng.integers(0, 65535, (31, 29), dtype=np.uint16)).save(root / "cat" / "deep16.png")
    (root / "cat" / "broken.jpg").write_bytes(b"this is not a jpeg")
    return root


@pytest.fixture()
def image_folder(tmp_path: Path) -> Path:
    return write_image_folder(tmp_path / "images")


@pytest.fixture()
def tiny_report(tmp_path: Path, image_folder: Path) -> Path:
    """A complete config: a python-defined tiny CNN on a folder of images, two attribution methods."""
    (tmp_path / "tinymodel.py").write_text(TINY_MODEL_MODULE)
    config = tmp_path / "report.yaml"
    config.write_text(textwrap.dedent(f'''
        title: "Tiny <report> & friends"
        device: cpu
        card:
          owners: ["Team <b>bold</b>"]
          intended_use: "Testing | escaping"
        models:
          - id: tiny
            source: python:tinymodel:build
            title: "Tiny <script>alert(1)</script> CNN"
        datasets:
          - id: pics
            source: folder:{image_folder}
        outcome:
          methods: [saliency, gradcam]
          images: 4
    '''))
    return config


@pytest.fixture(scope="session")
def render_install(tmp_path_factory):
    """The project's wheel installed render-only (no torch) in a fresh venv, built once a session."""
    from render_install import make_render_install

    return make_render_install(tmp_path_factory.mktemp("render-install"))
