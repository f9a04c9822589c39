"""ModelSpec: everything about a model that is not its weights.

The spec owns preprocessing (resize, crop, mean/std), the class names and the layers of
interest, so no code anywhere needs to branch on a model's class name.
"""

from __future__ import annotations

import hashlib
import importlib
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Tuple

#: Packages whose classes are identified by name and release rather than by their files: their
#: code changes only with a release, and much of it (kernels) is not Python source anyway.
LIBRARIES = ("torch", "torchvision", "timm")


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
    # What computes the outputs besides the weights: sha256 of the model's source files or
    # scripted code, or library + version + architecture. Also part of every artifact key, so
    # an edited ``forward`` never reuses the results of the old one.
    code_digest: str = ""
    licence: str = ""
    extra: Dict[str, object] = field(default_factory=dict)
    # The token grid of a vision transformer (generator.models.tokens.TokenLayout.to_json()),
    # inferred from one traced input at load time; None for a CNN.
    tokens: Optional[Dict[str, Any]] = None

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
        data: Dict[str, object] = {
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
        # Only when there is one: a CNN's spec, and so every key derived from it, stays as it was.
        if self.tokens is not None:
            data["tokens"] = dict(self.tokens)
        return data


# ---------------------------------------------------------------------------------------------
# code identity (no torch import: libraries are looked up by name)


def library_version(name: str) -> str:
    """``name``'s ``__version__`` (the library is imported if it is not yet)."""
    try:
        module = sys.modules.get(name) or importlib.import_module(name)
    except ImportError:
        return "not installed"
    return str(getattr(module, "__version__", "unknown"))


def _module_source(name: str) -> bytes:
    module = sys.modules.get(name)
    file = getattr(module, "__file__", None)
    if file and file.endswith(".py") and Path(file).is_file():
        # Line endings normalised: the same code checked out on Windows is the same code.
        return Path(file).read_bytes().replace(b"\r\n", b"\n")
    return b"(no source file)"


def code_digest(label: str, *, libraries: Iterable[str] = (), modules: Iterable[str] = (),
                extra: bytes = b"") -> str:
    """sha256 of what computes a model besides its weights.

    ``label`` names the architecture; each library in ``libraries`` (torch always) enters by
    name and version; each Python module in ``modules`` by its source file's bytes, so editing a
    ``forward`` changes the digest; ``extra`` adds other code (a TorchScript file's code).
    """
    digest = hashlib.sha256(label.encode() + b"\0")
    for name in sorted({"torch", *libraries}):
        digest.update(f"{name}=={library_version(name)}\0".encode())
    for name in sorted(set(modules)):
        digest.update(name.encode() + b"\0" + _module_source(name) + b"\0")
    digest.update(extra)
    return digest.hexdigest()


def module_code_digest(label: str, module: Any, modules: Iterable[str] = ()) -> str:
    """:func:`code_digest` of every class in ``module``'s tree (an ``nn.Module``): library
    classes by their library's version, any other class by its module's source file, plus the
    source files of ``modules`` (e.g. the factory that built it)."""
    libraries, sources = set(), set(modules)
    for sub in module.modules():
        name = type(sub).__module__
        top = name.split(".")[0]
        if top in LIBRARIES:
            libraries.add(top)
        else:
            sources.add(name)
    return code_digest(label, libraries=libraries, modules=sources)
