"""Tiny models and specs shared by the feature-visualisation tests (fast on 2 CPU cores)."""

from __future__ import annotations

import torch
from torch import nn

from generator.models.spec import ModelSpec


def rgb_spec(size: int = 32, classes: int = 5) -> ModelSpec:
    return ModelSpec(
        id="toy_rgb", source="test", input_size=(3, size, size), mean=(0.485, 0.456, 0.406),
        std=(0.229, 0.224, 0.225), class_names=[f"class{i}" for i in range(classes)],
    )


def gray_spec(size: int = 28, classes: int = 10) -> ModelSpec:
    return ModelSpec(
        id="toy_gray", source="test", input_size=(1, size, size), mean=(0.2860,), std=(0.3530,),
        class_names=[f"c{i}" for i in range(classes)],
    )


def toy_cnn(seed: int = 0, classes: int = 5) -> nn.Sequential:
    """conv-bn-relu x3 with an in-place ReLU, global pool, linear head; any input size."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(inplace=True),
        nn.Conv2d(8, 16, 3, padding=1, stride=2), nn.BatchNorm2d(16), nn.ReLU(inplace=True),
        nn.Conv2d(16, 16, 3, padding=1), nn.ReLU6(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, classes),
    ).eval()


class FashionCNN(nn.Module):
    """A 28x28 grayscale CNN with a linear head (needs exactly 28 px), functional pooling."""

    def __init__(self, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.act1 = nn.ReLU()
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
        self.act2 = nn.ReLU()
        self.fc = nn.Linear(16 * 7 * 7, 10)

    def forward(self, x):
        x = nn.functional.max_pool2d(self.act1(self.conv1(x)), 2)
        x = nn.functional.max_pool2d(self.act2(self.conv2(x)), 2)
        return self.fc(x.flatten(1))
