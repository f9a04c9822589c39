"""Profiles: how much feature-visualisation work a run does."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Dict, Optional


@dataclass(frozen=True)
class Profile:
    """Settings for rendering a gallery.

    ``channels_per_layer`` None means every channel. ``size`` None means the model's input
    size (a 28 px Fashion-MNIST CNN keeps 28 px whatever the profile).
    """

    name: str
    steps: int
    size: Optional[int]
    channels_per_layer: Optional[int]
    batch_size: int
    precision: str = "auto"
    lr: float = 0.05
    redirected_relu_steps: int = 16
    diversity_images: int = 4
    # relative to the layer's activation scale; 8 gave visibly different images at a
    # 5-30 % lower channel activation on EfficientNet-Lite0 (1 barely changed the layout)
    diversity_weight: float = 8.0
    dataset_examples: int = 9
    deepdream_steps: int = 10
    deepdream_octaves: int = 3
    # steps for the secondary renders of a unit page (diversity set, negative); None: ``steps``
    set_steps: Optional[int] = None

    def size_for(self, spec) -> int:
        """The render size for a model: the profile's, but never above the model's input
        for small inputs (upsampling a 28 px model to 224 px only wastes time)."""
        native = int(spec.input_size[1])
        if self.size is None or native < 64:
            return native
        return self.size

    def to_json(self) -> Dict[str, object]:
        return asdict(self)

    def with_(self, **changes) -> "Profile":
        return replace(self, **changes)


PROFILES: Dict[str, Profile] = {
    # CPU: a few channels per layer, small images, enough steps for structure to appear.
    # Measured on 2 shared CPU cores (EfficientNet-Lite0, blocks.4): a batch of 24 costs
    # about a third per image of a batch of 6, so a layer's channels go in one batch.
    "quick": Profile(
        name="quick",
        steps=64,
        size=96,
        channels_per_layer=6,
        batch_size=32,
        precision="fp32",
        # with only 64 steps a higher rate reaches Lucid-like contrast (0.05 stays greyish)
        lr=0.1,
        redirected_relu_steps=8,
        dataset_examples=6,
        deepdream_steps=6,
        deepdream_octaves=2,
        # diversity sets are four times the gallery's images: half the steps keeps a unit
        # page's extras at the gallery's cost
        set_steps=32,
    ),
    # GPU: Lucid's full recipe on every channel.
    "full": Profile(
        name="full",
        steps=512,
        size=224,
        channels_per_layer=None,
        batch_size=128,
        precision="bf16",
        redirected_relu_steps=16,
        dataset_examples=9,
        deepdream_steps=12,
        deepdream_octaves=4,
        # a unit's diversity set (4 images) and negative are five times its gallery image;
        # at 512 steps they made the features stage of the default report about 10 minutes
        # on an H100 (every channel of every EfficientNet-Lite0 stage)
        set_steps=256,
    ),
}


def get_profile(name: "str | Profile") -> Profile:
    if isinstance(name, Profile):
        return name
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown feature-visualisation profile {name!r}; known: {', '.join(PROFILES)}") from None
