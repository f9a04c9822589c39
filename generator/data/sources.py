"""Registry of image sources: ``samples``, ``folder:<path>``, ``fashion-mnist``.

A source is a function ``(argument, options) -> Dataset``; the config names it as
``source: "<name>"`` or ``source: "<name>:<argument>"``.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import numpy as np

from generator.data.dataset import Dataset, ImageItem
from generator.data.idx import read_idx
from generator.data.imageio import IMAGE_SUFFIXES, ImageReadError, read_image, to_uint8
from generator.registry import Registry

log = logging.getLogger(__name__)

DatasetSource = Callable[[Optional[str], Dict[str, Any]], Dataset]
DATASET_SOURCES: Registry[DatasetSource] = Registry("dataset source")

FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
FASHION_MNIST_DIRS = ["/usr/share/datasets/fashion-mnist", "/usr/share/dataset-fashion-mnist"]

# The photos that ship inside scikit-image and scikit-learn, with their licences as their
# own documentation states them.
SAMPLE_PHOTOS = [
    ("coffee", "skimage", "coffee", "A cup of coffee", "CC0, photographer Rachel Michetti (scikit-image data)"),
    ("chelsea", "skimage", "chelsea", "Chelsea the cat", "CC0, photographer Stefan van der Walt (scikit-image data)"),
    ("astronaut", "skimage", "astronaut", "Astronaut Eileen Collins",
     "Public domain, NASA Great Images database (scikit-image data)"),
    ("rocket", "skimage", "rocket", "SpaceX Falcon 9 on the launch pad",
     "Public domain, released by SpaceX (scikit-image data)"),
    ("motorcycle", "skimage", "stereo_motorcycle", "A motorcycle (left view of a stereo pair)",
     "Middlebury 2014 stereo benchmark, Scharstein et al., GCPR 2014 (scikit-image data)"),
    ("camera", "skimage", "camera", "A photographer with a camera (grayscale)",
     "CC0, photographer Lav Varshney (scikit-image data)"),
    ("clock", "skimage", "clock", "A wall clock, motion blurred (grayscale)",
     "Public domain, photographer Stefan van der Walt (scikit-image data)"),
    ("china", "sklearn", "china.jpg", "A temple in China",
     "CC BY 2.0, danielbuechele on Flickr (scikit-learn sample images)"),
    ("flower", "sklearn", "flower.jpg", "A flower",
     "CC BY 2.0, vultilion on Flickr (scikit-learn sample images)"),
]


def load_dataset(dataset_id: str, source: str, options: Optional[Dict[str, Any]] = None) -> Dataset:
    """Load the dataset named by ``source`` (``name`` or ``name:argument``)."""
    name, _, argument = source.partition(":")
    factory = DATASET_SOURCES.get(name)
    dataset = factory(argument or None, dict(options or {}))
    dataset.id = dataset_id
    limit = (options or {}).get("limit")
    if limit is not None and len(dataset) > int(limit):
        dataset.items = dataset.items[: int(limit)]
    return dataset


def _check_options(source: str, options: Dict[str, Any], allowed: List[str]) -> None:
    unknown = sorted(set(options) - set(allowed) - {"limit"})
    if unknown:
        raise ValueError(f"dataset source {source!r}: unknown option(s) {unknown}; allowed: {sorted(allowed + ['limit'])}")


@DATASET_SOURCES.register("samples", "real photos shipped inside scikit-image and scikit-learn, with licences")
def samples_source(argument: Optional[str], options: Dict[str, Any]) -> Dataset:
    _check_options("samples", options, ["names"])
    import skimage.data
    from sklearn.datasets import load_sample_image

    wanted = options.get("names") or [p[0] for p in SAMPLE_PHOTOS]
    known = {p[0]: p for p in SAMPLE_PHOTOS}
    items: List[ImageItem] = []
    for name in wanted:
        if name not in known:
            raise ValueError(f"dataset source 'samples': unknown photo {name!r}; known: {sorted(known)}")
        _, package, loader, title, licence = known[name]
        if package == "skimage":
            pixels = getattr(skimage.data, loader)()
            if isinstance(pixels, tuple):  # stereo pair: the left view
                pixels = pixels[0]
            origin = f"skimage.data.{loader}()"
        else:
            pixels = load_sample_image(loader)
            origin = f"sklearn.datasets.load_sample_image({loader!r})"
        items.append(ImageItem(id=name, pixels=to_uint8(np.array(pixels)), title=title, source=origin, licence=licence))
    return Dataset(id="samples", source="samples", items=items,
                   description="Real photos that ship inside the scikit-image and scikit-learn packages.",
                   licence="per image (see the table)")


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "image"


@DATASET_SOURCES.register("folder", "images in a folder: one subfolder per class, or flat (unlabelled)")
def folder_source(argument: Optional[str], options: Dict[str, Any]) -> Dataset:
    _check_options("folder", options, ["licence", "recursive"])
    if not argument:
        raise ValueError("dataset source 'folder' needs a path: source: \"folder:path/to/images\"")
    root = Path(os.path.expanduser(argument))
    if not root.is_dir():
        raise ValueError(f"dataset source 'folder:{argument}': {root} is not a directory")
    subdirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    class_names = [p.name for p in subdirs]
    licence = str(options.get("licence", ""))
    entries = []  # (path, label)
    if subdirs:
        for label, sub in enumerate(subdirs):
            entries += [(p, label) for p in sorted(sub.rglob("*")) if p.is_file()]
    entries += [(p, None) for p in sorted(root.iterdir()) if p.is_file()]
    items: List[ImageItem] = []
    skipped = []
    seen: Dict[str, int] = {}
    for path, label in entries:
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        try:
            pixels = read_image(path)
        except ImageReadError as exc:
            log.warning("skipping %s", exc)
            skipped.append((str(path), str(exc)))
            continue
        rel = path.relative_to(root)
        slug = _slug(str(rel.with_suffix("")))
        seen[slug] = seen.get(slug, 0) + 1
        if seen[slug] > 1:
            slug = f"{slug}-{seen[slug]}"
        items.append(ImageItem(id=slug, pixels=pixels, label=label, title=str(rel), source=str(path), licence=licence))
    if not items:
        raise ValueError(f"dataset source 'folder:{argument}': no readable images in {root}"
                         + (f" ({len(skipped)} unreadable)" if skipped else ""))
    if subdirs and any(it.label is None for it in items):
        # Mixed layout: files at the top level of a class-folder tree carry no label.
        log.warning("folder %s: %d images outside class subfolders have no label",
                    root, sum(it.label is None for it in items))
    return Dataset(id=root.name, source=f"folder:{argument}", items=items, class_names=class_names,
                   description=f"Images from {root}", licence=licence, skipped=skipped)


def find_fashion_mnist(path: Optional[str]) -> Path:
    """The directory holding the Fashion-MNIST IDX files."""
    candidates = [Path(os.path.expanduser(path))] if path else [Path(d) for d in FASHION_MNIST_DIRS]
    for directory in candidates:
        if directory.is_dir() and any(directory.glob("t10k-images-idx3-ubyte*")):
            return directory
    where = ", ".join(str(c) for c in candidates)
    raise FileNotFoundError(
        f"Fashion-MNIST IDX files (t10k-images-idx3-ubyte[.gz] ...) not found in {where}; "
        "install them with `sudo apt-get install dataset-fashion-mnist` or give options.path"
    )


def _idx_file(directory: Path, stem: str) -> Path:
    for suffix in ("", ".gz"):
        candidate = directory / f"{stem}{suffix}"
        if candidate.exists():
            return candidate
    raise FileNotFoundError(f"{directory}: missing {stem} (or {stem}.gz)")


def load_fashion_mnist_arrays(split: str, path: Optional[str] = None) -> "tuple[np.ndarray, np.ndarray]":
    """``(images N x 28 x 28 uint8, labels N int64)`` of the ``train`` or ``test`` split."""
    if split not in ("train", "test"):
        raise ValueError(f"fashion-mnist split must be 'train' or 'test', got {split!r}")
    directory = find_fashion_mnist(path)
    prefix = "train" if split == "train" else "t10k"
    images = read_idx(_idx_file(directory, f"{prefix}-images-idx3-ubyte"))
    labels = read_idx(_idx_file(directory, f"{prefix}-labels-idx1-ubyte")).astype(np.int64)
    if images.ndim != 3 or len(images) != len(labels):
        raise ValueError(f"{directory}: {prefix} images {images.shape} do not match labels {labels.shape}")
    return images, labels


@DATASET_SOURCES.register("fashion-mnist", "Fashion-MNIST (Xiao et al. 2017) from its IDX files; MIT licence")
def fashion_mnist_source(argument: Optional[str], options: Dict[str, Any]) -> Dataset:
    _check_options("fashion-mnist", options, ["split", "path"])
    split = options.get("split", argument or "test")
    images, labels = load_fashion_mnist_arrays(split, options.get("path"))
    limit = options.get("limit")
    if limit is not None:
        images, labels = images[: int(limit)], labels[: int(limit)]
    items = [ImageItem(id=f"{split}-{i:05d}", pixels=images[i][:, :, None], label=int(labels[i]),
                       title=f"{split} #{i} ({FASHION_MNIST_CLASSES[labels[i]]})", source="Fashion-MNIST",
                       licence="MIT (Zalando Research)") for i in range(len(images))]
    return Dataset(id="fashion-mnist", source="fashion-mnist", items=items, class_names=list(FASHION_MNIST_CLASSES),
                   description=f"Fashion-MNIST {split} split (Xiao, Rasul & Vollgraf 2017): 28x28 grayscale "
                               "images of clothing in 10 classes.",
                   licence="MIT (Zalando Research)")
