"""Registry of image sources: ``samples``, ``folder:<path>``, ``fashion-mnist``.

A source is a function ``(argument, options, *, base_dir=None) -> Dataset``; the config
names it as ``source: "<name>"`` or ``source: "<name>:<argument>"``. Relative paths a source
reads resolve against ``base_dir`` (the config file's folder) when one is given.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any, Dict, List, Optional, Protocol, Tuple

import numpy as np

from generator.data.dataset import Dataset, ImageItem
from generator.data.idx import read_idx
from generator.data.imageio import IMAGE_SUFFIXES, ImageReadError, probe_image, to_uint8
from generator.registry import Registry

log = logging.getLogger(__name__)


class DatasetSource(Protocol):
    """What every registered source is: ``base_dir`` is keyword-only so ``(argument, options)`` still works."""

    def __call__(self, argument: Optional[str], options: Dict[str, Any], *,
                 base_dir: Optional[Path] = None) -> Dataset: ...


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


def load_dataset(dataset_id: str, source: str, options: Optional[Dict[str, Any]] = None, *,
                 base_dir: Optional[Path] = None) -> Dataset:
    """Load the dataset named by ``source`` (``name`` or ``name:argument``).

    ``base_dir`` is the folder relative paths (``folder:`` paths, ``options.path``) resolve
    against, so a config means the same files from any working directory; ``None`` keeps the
    working directory. ``options.limit`` keeps the first ``limit`` images.
    """
    name, _, argument = source.partition(":")
    factory = DATASET_SOURCES.get(name)
    options = dict(options or {})
    # Checked before the factory runs: a bad limit should fail at once, not after a long read.
    limit = check_limit(source, options)
    dataset = factory(argument or None, options, base_dir=base_dir)
    dataset.id = dataset_id
    # Sources that can stop early (folder, fashion-mnist) already did; this covers the rest.
    if limit is not None and len(dataset) > limit:
        dataset.items = dataset.items[:limit]
    return dataset


def check_limit(source: str, options: Dict[str, Any]) -> Optional[int]:
    """``options.limit`` as an int >= 1, or None when absent; ValueError naming the option otherwise."""
    limit = options.get("limit")
    if limit is None:
        return None
    # bool is an int subclass, and "20" or 2.5 are more likely typos than intentions.
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError(f"dataset source {source!r}: options.limit must be a whole number >= 1, got {limit!r}")
    return limit


def resolve_path(text: str, base_dir: Optional[Path]) -> Path:
    """``text`` with ``~`` expanded; relative paths are taken under ``base_dir`` when given."""
    path = Path(os.path.expanduser(text))
    if base_dir is not None and not path.is_absolute():
        path = Path(base_dir) / path
    return path


def _check_options(source: str, options: Dict[str, Any], allowed: List[str]) -> None:
    unknown = sorted(set(options) - set(allowed) - {"limit"})
    if unknown:
        raise ValueError(f"dataset source {source!r}: unknown option(s) {unknown}; "
                         f"allowed: {sorted(allowed + ['limit'])}")


@DATASET_SOURCES.register("samples", "real photos shipped inside scikit-image and scikit-learn, with licences")
def samples_source(argument: Optional[str], options: Dict[str, Any], *, base_dir: Optional[Path] = None) -> Dataset:
    """The photos bundled with scikit-image and scikit-learn (``base_dir`` unused: no paths)."""
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


def _scan_links(root: Path, paths: List[Path]) -> Tuple[List[Tuple[Path, str]], List[Tuple[Path, str]]]:
    """``(links leaving root, dangling links)`` among ``paths``, each with its target.

    Only links need checking: the listing never descends into a linked directory below a
    class folder, so a path can only leave ``root`` through a link that is itself listed.
    """
    real_root = Path(os.path.realpath(root))
    outside: List[Tuple[Path, str]] = []
    dangling: List[Tuple[Path, str]] = []
    for path in paths:
        if not path.is_symlink():
            continue
        if not path.exists():  # follows the link: False for a missing target or a loop
            dangling.append((path, os.readlink(path)))
            continue
        target = Path(os.path.realpath(path))
        if not target.is_relative_to(real_root):
            outside.append((path, str(target)))
    return outside, dangling


@DATASET_SOURCES.register("folder", "images in a folder: one subfolder per class, or flat (unlabelled)")
def folder_source(argument: Optional[str], options: Dict[str, Any], *, base_dir: Optional[Path] = None) -> Dataset:
    """Images under ``argument``: class subfolders (labels in sorted order), then top-level files.

    The files are listed, not decoded: each one's header is checked (so files that are not
    images are listed in ``skipped`` with the reason, as are dangling links) and its pixels are
    read when first asked for. Links that leave the folder refuse the whole dataset. With
    ``options.limit`` the listing stops once that many images are found.
    """
    _check_options("folder", options, ["licence", "recursive"])
    if not argument:
        raise ValueError("dataset source 'folder' needs a path: source: \"folder:path/to/images\"")
    name = f"folder:{argument}"
    root = resolve_path(argument, base_dir)
    if not root.is_dir():
        raise ValueError(f"dataset source {name!r}: {root} is not a directory")
    limit = check_limit(name, options)
    top = sorted(root.iterdir())
    # Hidden top-level directories are never read, so links inside them are not our business.
    top = [p for p in top if not (p.name.startswith(".") and p.is_dir())]
    subdirs = [p for p in top if p.is_dir()]
    class_names = [p.name for p in subdirs]
    licence = str(options.get("licence", ""))
    listed: List[Tuple[Path, Optional[int]]] = []  # (path, label), in the order images are read
    for label, sub in enumerate(subdirs):
        listed += [(p, label) for p in sorted(sub.rglob("*"))]
    listed += [(p, None) for p in top if not p.is_dir()]
    outside, dangling = _scan_links(root, subdirs + [p for p, _ in listed])
    if outside:
        # Refuse rather than skip: a file from outside the folder would be published on the site.
        links = "; ".join(f"{link} -> {target}" for link, target in outside)
        raise ValueError(f"dataset source {name!r}: {len(outside)} symlink(s) lead outside {root}: {links}. "
                         "Copy the files into the folder or remove the links.")
    skipped: List[Tuple[str, str]] = []
    for link, target in dangling:
        reason = f"dangling symlink: its target {target} does not exist"
        log.warning("skipping %s: %s", link, reason)
        skipped.append((str(link), reason))
    items: List[ImageItem] = []
    seen: Dict[str, int] = {}
    for path, label in listed:
        if limit is not None and len(items) >= limit:
            break  # read no further than asked
        if path.suffix.lower() not in IMAGE_SUFFIXES or not path.is_file():
            continue
        try:
            # Header only: the pixels are decoded when a stage asks for them (ImageItem.pixels).
            shape = probe_image(path)
        except ImageReadError as exc:
            log.warning("skipping %s", exc)
            skipped.append((str(path), str(exc)))
            continue
        rel = path.relative_to(root)
        slug = _slug(str(rel.with_suffix("")))
        seen[slug] = seen.get(slug, 0) + 1
        if seen[slug] > 1:
            slug = f"{slug}-{seen[slug]}"
        items.append(ImageItem(id=slug, path=path, rel_path=rel.as_posix(), shape=shape, label=label,
                               title=str(rel), source=str(path), licence=licence))
    if not items:
        raise ValueError(f"dataset source {name!r}: no readable images in {root}"
                         + (f" ({len(skipped)} unreadable)" if skipped else ""))
    if subdirs and any(it.label is None for it in items):
        # Mixed layout: files at the top level of a class-folder tree carry no label.
        log.warning("folder %s: %d images outside class subfolders have no label",
                    root, sum(it.label is None for it in items))
    return Dataset(id=root.name, source=name, items=items, class_names=class_names,
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
def fashion_mnist_source(argument: Optional[str], options: Dict[str, Any], *,
                         base_dir: Optional[Path] = None) -> Dataset:
    """Fashion-MNIST from ``options.path`` (relative to ``base_dir``) or the Debian package's folder."""
    _check_options("fashion-mnist", options, ["split", "path"])
    split = options.get("split", argument or "test")
    path = options.get("path")
    directory = str(resolve_path(str(path), base_dir)) if path else None
    images, labels = load_fashion_mnist_arrays(split, directory)
    limit = check_limit("fashion-mnist", options)
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    items = [ImageItem(id=f"{split}-{i:05d}", pixels=images[i][:, :, None], label=int(labels[i]),
                       title=f"{split} #{i} ({FASHION_MNIST_CLASSES[labels[i]]})", source="Fashion-MNIST",
                       licence="MIT (Zalando Research)") for i in range(len(images))]
    return Dataset(id="fashion-mnist", source="fashion-mnist", items=items, class_names=list(FASHION_MNIST_CLASSES),
                   description=f"Fashion-MNIST {split} split (Xiao, Rasul & Vollgraf 2017): 28x28 grayscale "
                               "images of clothing in 10 classes.",
                   licence="MIT (Zalando Research)")
