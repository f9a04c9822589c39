"""Small models shared by the attribution and evaluation tests."""

import torch
from torch import nn


class SmallCNN(nn.Module):
    """Distinct ReLU modules (Captum's DeepLift and GuidedBackprop need that)."""

    def __init__(self, classes: int = 5, bn: bool = False):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8) if bn else nn.Identity()
        self.act1 = nn.ReLU()
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.act2 = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(4)
        self.flat = nn.Flatten()
        self.fc = nn.Linear(128, classes)

    def forward(self, x):
        x = self.act1(self.bn1(self.conv1(x)))
        x = self.act2(self.conv2(x))
        return self.fc(self.flat(self.pool(x)))


class ReusedInplace(nn.Module):
    """One in-place ReLU module used twice, as in torchvision's BasicBlock."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1)
        self.conv2 = nn.Conv2d(6, 6, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.fc = nn.Linear(24, 4)

    def forward(self, x):
        x = self.relu(self.conv1(x))
        x = self.relu(self.conv2(x))
        return self.fc(self.pool(x).flatten(1))


class SeparateRelu(nn.Module):
    """The same computation as ReusedInplace with two distinct, not in-place ReLUs."""

    def __init__(self, src: ReusedInplace):
        super().__init__()
        self.conv1, self.conv2, self.pool, self.fc = src.conv1, src.conv2, src.pool, src.fc
        self.r1, self.r2 = nn.ReLU(), nn.ReLU()

    def forward(self, x):
        x = self.r1(self.conv1(x))
        x = self.r2(self.conv2(x))
        return self.fc(self.pool(x).flatten(1))


def small_cnn(seed: int = 0, **kw) -> SmallCNN:
    torch.manual_seed(seed)
    return SmallCNN(**kw).eval()


def state_equal(model: nn.Module, saved) -> bool:
    sd = model.state_dict()
    return sd.keys() == saved.keys() and all(torch.equal(sd[k], saved[k]) for k in saved)


#: Attribution methods defined for transformers only: they refuse a CNN with a reason.
def transformer_only() -> set:
    from generator.catalogue import attnlrp, transformer

    return {e.name for e in (*transformer.ENTRIES, *attnlrp.ENTRIES)}


def tiny_vit(seed: int = 0, size: int = 16, classes: int = 5) -> nn.Module:
    """A one-block timm ViT on ``size`` px inputs (patches of 8 px, a class token)."""
    import timm

    torch.manual_seed(seed)
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=size, patch_size=8, depth=1,
                             embed_dim=16, num_heads=2, num_classes=classes).eval()
