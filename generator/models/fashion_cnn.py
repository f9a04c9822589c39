"""A small CNN trained on the real Fashion-MNIST training set, for the default report.

It is trained on first use (seeded, a couple of CPU minutes) and cached as an artifact with
its training curve, its test accuracy and one checkpoint per epoch (TracIn reads those).
Every layer is its own named module (no ReLU reused), so hooks can address any of them.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import asdict, dataclass
from typing import Callable, Dict, List, Optional

import numpy as np
import torch
from torch import nn

ARCHITECTURE_VERSION = "1"


def build_fashion_cnn(num_classes: int = 10) -> nn.Sequential:
    """conv-bn-relu-pool x2, then fc-relu-dropout-fc; 28 x 28 x 1 input."""
    return nn.Sequential(OrderedDict([
        ("conv1", nn.Conv2d(1, 32, 3, padding=1)), ("bn1", nn.BatchNorm2d(32)), ("relu1", nn.ReLU()),
        ("pool1", nn.MaxPool2d(2)),
        ("conv2", nn.Conv2d(32, 64, 3, padding=1)), ("bn2", nn.BatchNorm2d(64)), ("relu2", nn.ReLU()),
        ("pool2", nn.MaxPool2d(2)),
        ("flatten", nn.Flatten()),
        ("fc1", nn.Linear(64 * 7 * 7, 128)), ("relu3", nn.ReLU()), ("dropout", nn.Dropout(0.25)),
        ("fc2", nn.Linear(128, num_classes)),
    ]))


FASHION_MEAN = (0.2860,)
FASHION_STD = (0.3530,)


@dataclass
class TrainingSettings:
    epochs: int = 3
    batch_size: int = 128
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    seed: int = 0
    train_subset: int = 0  # > 0: train on the first N images only (quick checks, tests)


def _to_input(images: np.ndarray, device: torch.device) -> torch.Tensor:
    x = torch.from_numpy(images).to(device).float().div_(255.0).unsqueeze(1)
    return (x - FASHION_MEAN[0]) / FASHION_STD[0]


@torch.no_grad()
def evaluate_accuracy(model: nn.Module, images: np.ndarray, labels: np.ndarray, device: torch.device,
                      batch_size: int = 1000) -> float:
    model.eval()
    correct = 0
    for i in range(0, len(images), batch_size):
        logits = model(_to_input(images[i:i + batch_size], device))
        correct += int((logits.argmax(1).cpu().numpy() == labels[i:i + batch_size]).sum())
    return correct / max(len(images), 1)


def train_fashion_cnn(train_images: np.ndarray, train_labels: np.ndarray, test_images: np.ndarray,
                      test_labels: np.ndarray, settings: TrainingSettings, device: torch.device,
                      progress: Optional[Callable[[int, int], None]] = None) -> Dict[str, object]:
    """Train with Adam and a cosine schedule; returns weights, per-epoch checkpoints and history.

    Deterministic for a seed on one device: the shuffling uses its own generator and the
    initialisation is seeded.
    """
    if settings.train_subset > 0:
        train_images, train_labels = train_images[: settings.train_subset], train_labels[: settings.train_subset]
    torch.manual_seed(settings.seed)
    model = build_fashion_cnn().to(device)
    opt = torch.optim.Adam(model.parameters(), lr=settings.learning_rate, weight_decay=settings.weight_decay)
    steps_per_epoch = (len(train_images) + settings.batch_size - 1) // settings.batch_size
    total = steps_per_epoch * settings.epochs
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=settings.learning_rate, total_steps=total)
    gen = torch.Generator().manual_seed(settings.seed)
    labels_t = torch.from_numpy(train_labels)
    history: List[Dict[str, float]] = []
    checkpoints: List[Dict[str, object]] = []
    step = 0
    start = time.perf_counter()
    for epoch in range(settings.epochs):
        model.train()
        order = torch.randperm(len(train_images), generator=gen).numpy()
        running, seen, lrs = 0.0, 0, []
        for b in range(steps_per_epoch):
            idx = order[b * settings.batch_size:(b + 1) * settings.batch_size]
            x = _to_input(train_images[idx], device)
            y = labels_t[idx].to(device)
            loss = nn.functional.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            lrs.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
            running += float(loss.detach()) * len(idx)
            seen += len(idx)
            step += 1
            if progress is not None:
                progress(step, total)
        test_acc = evaluate_accuracy(model, test_images, test_labels, device)
        history.append({"epoch": epoch + 1, "train_loss": running / seen, "test_accuracy": test_acc,
                        "mean_lr": float(np.mean(lrs)), "seconds": time.perf_counter() - start})
        checkpoints.append({"epoch": epoch + 1, "learning_rate": float(np.mean(lrs)),
                            "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}})
    return {
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "checkpoints": checkpoints,
        "history": history,
        "test_accuracy": history[-1]["test_accuracy"],
        "settings": asdict(settings),
        "seconds": time.perf_counter() - start,
    }
