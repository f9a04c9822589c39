"""Reading image files of any common mode into uint8 arrays."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional, Tuple

import numpy as np
import PIL
from PIL import Image, ImageOps, UnidentifiedImageError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}

# Bump when ``read_image`` turns the same file into different pixels (a new mode rule, EXIF
# handling): a dataset's digest hashes file bytes rather than pixels, so this string (with
# Pillow's version, whose decoders may change) is what keeps cached artifacts honest.
READER_VERSION = "1"
_ONE_CHANNEL_MODES = {"I;16", "I;16B", "I;16L", "I", "F", "L", "1"}
_EXIF_ORIENTATION = 0x0112


class ImageReadError(ValueError):
    """A file that is not a readable image; the message names the file."""


def unit_to_uint8(images: np.ndarray) -> np.ndarray:
    """Floats in [0, 1] (any shape) -> uint8, rounded: the values a PNG of them holds."""
    return np.clip(np.asarray(images, dtype=np.float32) * 255.0 + 0.5, 0, 255).astype(np.uint8)


def to_uint8(pixels: np.ndarray) -> np.ndarray:
    """Scale an integer or float array into uint8 ``H x W x C`` (C = 1 or 3)."""
    arr = np.asarray(pixels)
    if arr.dtype == np.uint8:
        out = arr
    elif arr.dtype == np.uint16 or (arr.dtype.kind in "iu" and arr.max(initial=0) > 255):
        out = (arr.astype(np.float64) / 65535.0 * 255.0 + 0.5).clip(0, 255).astype(np.uint8)
    elif arr.dtype.kind == "f":
        scale = 255.0 if arr.max(initial=0) <= 1.0 else 1.0
        out = (arr * scale + 0.5).clip(0, 255).astype(np.uint8)
    else:
        out = arr.clip(0, 255).astype(np.uint8)
    if out.ndim == 2:
        out = out[:, :, None]
    if out.ndim != 3 or out.shape[2] not in (1, 3, 4):
        raise ImageReadError(f"expected an H x W, H x W x 3 or H x W x 4 image, got shape {arr.shape}")
    if out.shape[2] == 4:
        # Composite onto white: transparent regions of product photos and icons are background.
        rgb = out[:, :, :3].astype(np.float32)
        alpha = out[:, :, 3:4].astype(np.float32) / 255.0
        out = (rgb * alpha + 255.0 * (1.0 - alpha) + 0.5).astype(np.uint8)
    return np.ascontiguousarray(out)


def decoder_version() -> str:
    """What determines the pixels ``read_image`` makes of a file's bytes, for cache keys."""
    return f"generator.data.imageio {READER_VERSION}; Pillow {PIL.__version__}"


def probe_image(path: Path) -> Optional[Tuple[int, int, int]]:
    """``(height, width, channels)`` that ``read_image(path)`` will return, from the header only.

    Nothing is decoded, so listing many files stays cheap while files that are not images are
    still found at load; a file whose header is fine but whose data is damaged fails later, when
    it is decoded, with the same error. ``None`` when the header cannot tell the shape: a
    non-square PNG with no EXIF block before its pixel data (an ``eXIf`` chunk after them may
    turn it, and finding out would mean decoding). Raises :class:`ImageReadError` naming the file.
    """
    try:
        with Image.open(path) as img:
            width, height, mode = img.width, img.height, img.mode
            if img.format == "PNG" and "exif" not in img.info:
                # Pillow's PNG getexif() decodes the whole image to look for a trailing chunk.
                if width != height:
                    return None
                orientation = 1
            else:
                try:
                    orientation = int(img.getexif().get(_EXIF_ORIENTATION, 1))
                except Exception:  # noqa: BLE001 - read_image keeps such a file unturned, and so do we
                    orientation = 1
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageReadError(f"{path}: not a readable image ({type(exc).__name__}: {exc})") from None
    if orientation in (5, 6, 7, 8):  # the EXIF turns that swap width and height
        width, height = height, width
    # The same mode rules as read_image: one channel for gray and deep modes (checked there
    # before transparency), three for the rest (alpha is composited onto white).
    return height, width, (1 if mode in _ONE_CHANNEL_MODES else 3)


def _apply_exif_orientation(img: Image.Image, path: Path) -> None:
    """Rotate/flip ``img`` in place as its EXIF orientation tag says.

    Phones store pixels as the sensor saw them and record the turn in the tag; without this a
    portrait photo is analysed (and shown) lying on its side.
    """
    try:
        ImageOps.exif_transpose(img, in_place=True)
    except Exception as exc:  # noqa: BLE001 - a malformed EXIF block must not lose a readable image
        # The pixels are still good; say so rather than silently guessing an orientation.
        log.warning("%s: EXIF orientation unreadable, using the pixels as stored (%s: %s)",
                    path, type(exc).__name__, exc)


def read_image(path: Path) -> np.ndarray:
    """Read ``path`` as uint8 ``H x W x C``, upright as its EXIF orientation tag says.

    Grayscale, alpha, palette and 16-bit files work.
    """
    try:
        with Image.open(path) as img:
            img.load()
            _apply_exif_orientation(img, path)
            if img.mode in ("I;16", "I;16B", "I;16L", "I"):
                arr = np.asarray(img, dtype=np.uint32 if img.mode == "I" else np.uint16)
                if arr.dtype == np.uint32:
                    arr = (arr.astype(np.float64) / max(float(arr.max()), 1.0) * 255).astype(np.uint8)
                return to_uint8(arr)
            if img.mode == "F":
                arr = np.asarray(img, dtype=np.float32)
                lo, hi = float(arr.min()), float(arr.max())
                return to_uint8((arr - lo) / (hi - lo if hi > lo else 1.0))
            if img.mode in ("L", "1"):
                return to_uint8(np.asarray(img.convert("L")))
            if img.mode in ("RGBA", "LA", "P", "PA") or "transparency" in img.info:
                return to_uint8(np.asarray(img.convert("RGBA")))
            return to_uint8(np.asarray(img.convert("RGB")))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageReadError(f"{path}: not a readable image ({type(exc).__name__}: {exc})") from None
