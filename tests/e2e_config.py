"""The default report at test size, for the browser test.

The browser test must see every kind of page the default report has, but not pay for the
default report's sizes: training the Fashion-MNIST CNN for two epochs, ROAR's retraining at
three fractions, nine photos per method, a page for every unit of the CNN. This module loads the
embedded default report and shrinks only sizes (images, epochs, training subsets, pool sizes,
optimisation steps, channels per layer), never which dimensions, models, layers, methods or
pages exist, so every template and every interaction is still exercised.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict

import yaml

from generator.config import DEFAULT_CONFIG

#: Sizes replaced in the default report, as (path in the YAML, value). Each one only shrinks.
TEST_SIZES = [
    (("outcome", "images"), 4),
    (("evaluation", "selectivity", "images"), 3),
    (("evaluation", "sensitivity", "images"), 3),
    (("evaluation", "sanity", "images"), 3),
    (("evaluation", "selectivity", "steps"), 4),
    (("evaluation", "roar", "train_images"), 200),
    (("evaluation", "roar", "test_images"), 200),
    (("evaluation", "roar", "fractions"), [0.5, 0.9]),
    (("data", "pool", "cpu"), 1000),
    # Feature visualisation: three units a layer (a unit page of each layer still), 16 steps
    # (the quick profile's 64 and 32 make the images, not the pages, better), smaller extras.
    (("features", "channels"), 3),
    (("features", "steps"), 16),
    (("features", "diversity"), 2),
    (("features", "examples"), 3),
    (("features", "max_classes"), 2),
    (("features", "deepdream_images"), 1),
    (("features", "deepdream_size"), 64),
    (("blocks", "icon_steps"), 8),
    (("blocks", "n_groups"), 3),
    (("concepts", "tcav", "images"), 6),
    (("concepts", "tcav", "random_sets"), 3),
    (("concepts", "tcav", "class_images"), 8),
    (("concepts", "rcv", "images"), 40),
    (("concepts", "dissection", "images"), 300),
    (("concepts", "dissection", "topup"), 30),
    (("concepts", "dissection", "textures"), 3),
]


def _set(config: Dict[str, Any], path: tuple, value: Any) -> None:
    node = config
    for name in path[:-1]:
        node = node.setdefault(name, {})
    node[path[-1]] = value


def test_size_config() -> Dict[str, Any]:
    """The embedded default report with :data:`TEST_SIZES` applied (and a one-epoch CNN on
    3,000 training images, about 80 % accurate: the model's pages need correct and misclassified
    test images, not its last points of accuracy)."""
    config = yaml.safe_load(DEFAULT_CONFIG.read_text())
    for path, value in TEST_SIZES:
        _set(config, path, value)
    for model in config["models"]:
        if "training" in model:
            model["training"] = {**model["training"], "epochs": 1, "train_subset": 3000}
    return config


def write_test_size_config(folder: Path) -> Path:
    """Write the test-size report as ``folder/report.yaml``; site_src names stay built-in."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "report.yaml"
    text = yaml.safe_dump(test_size_config(), sort_keys=False, allow_unicode=True)
    if not path.exists() or path.read_text() != text:
        path.write_text(text)
    return path
