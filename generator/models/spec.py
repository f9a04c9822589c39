"""ModelSpec: everything about a model that is not its weights.

The spec owns preprocessing (resize, crop, mean/std), the class names and the layers of
interest, so no code anywhere needs to branch on a model's class name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple


@dataclass
class ModelSpec:
    """Metadata and preprocessing of one classifier.

    Inputs reach the network as ``(pixels - mean) / std`` where ``pixels`` are in [0, 1],
    after a resize of the shorter side to ``resize`` and a centre crop to ``input_size``.
    """

    id: str
    source: str
    input_size: Tuple[int, int, int]  # (channels, height, width)
    mean: Tuple[float, ...]
    std: Tuple[float, ...]
    class_names: List[str]
    resize: Optional[int] = None  # shorter side before the centre crop; None: resize straight to input size
    interpolation: str = "bilinear"  # bilinear | bicubic | nearest
    layers: List[str] = field(default_factory=list)  # layers of interest, shallow to deep
    cam_layer: Optional[str] = None  # the layer Grad-CAM and friends use by default
    embedding_layer: Optional[str] = None  # penultimate features (prototypes, surrogates)
    description: str = ""
    architecture: str = ""
    weights: str = ""  # where the weights came from, for the card
    weights_digest: str = ""  # sha256 of the weights; part of every artifact key
    licence: str = ""
    extra: Dict[str, object] = field(default_factory=dict)

    @property
    def channels(self) -> int:
        return self.input_size[0]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def class_index(self, target: "int | str") -> int:
        """Index of a class given by index or name (case-insensitive, exact or unique prefix)."""
        if isinstance(target, int) or (isinstance(target, str) and target.isdigit()):
            idx = int(target)
            if not 0 <= idx < self.num_classes:
                raise ValueError(f"class index {idx} out of range for model {self.id!r} ({self.num_classes} classes)")
            return idx
        lowered = [c.lower() for c in self.class_names]
        name = str(target).lower()
        if name in lowered:
            return lowered.index(name)
        starts = [i for i, c in enumerate(lowered) if c.startswith(name)]
        if len(starts) == 1:
            return starts[0]
        import difflib

        close = difflib.get_close_matches(name, lowered, n=3)
        raise ValueError(f"unknown class {target!r} for model {self.id!r}; close matches: {close}")

    def to_json(self) -> Dict[str, object]:
        return {
            "id": self.id,
            "source": self.source,
            "input_size": list(self.input_size),
            "mean": list(self.mean),
            "std": list(self.std),
            "num_classes": self.num_classes,
            "resize": self.resize,
            "interpolation": self.interpolation,
            "layers": list(self.layers),
            "cam_layer": self.cam_layer,
            "embedding_layer": self.embedding_layer,
            "description": self.description,
            "architecture": self.architecture,
            "weights": self.weights,
            "weights_digest": self.weights_digest,
            "licence": self.licence,
        }
