"""The default report at test size, for the browser test.

The browser test must see every kind of page the default report has, but not pay for the
default report's sizes: training the Fashion-MNIST CNN for two epochs, ROAR's retraining at
three fractions, nine photos per method. This module loads the embedded default report and
shrinks only sizes (images, epochs, training subsets, pool sizes), never which dimensions,
models, methods or pages exist, so every template and every interaction is still exercised.
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
    (("evaluation", "roar", "train_images"), 600),
    (("evaluation", "roar", "test_images"), 600),
    (("evaluation", "roar", "fractions"), [0.5, 0.9]),
    (("data", "pool", "cpu"), 3000),
]


def _set(config: Dict[str, Any], path: tuple, value: Any) -> None:
    node = config
    for name in path[:-1]:
        node = node.setdefault(name, {})
    node[path[-1]] = value


def test_size_config() -> Dict[str, Any]:
    """The embedded default report with :data:`TEST_SIZES` applied (and a one-epoch CNN on
    10,000 training images: the model's pages do not depend on its last point of accuracy)."""
    config = yaml.safe_load(DEFAULT_CONFIG.read_text())
    for path, value in TEST_SIZES:
        _set(config, path, value)
    for model in config["models"]:
        if "training" in model:
            model["training"] = {**model["training"], "epochs": 1, "train_subset": 10000}
    return config


def write_test_size_config(folder: Path) -> Path:
    """Write the test-size report as ``folder/report.yaml``; site_src names stay built-in."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "report.yaml"
    text = yaml.safe_dump(test_size_config(), sort_keys=False, allow_unicode=True)
    if not path.exists() or path.read_text() != text:
        path.write_text(text)
    return path
