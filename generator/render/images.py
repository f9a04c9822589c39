"""Images for the site, in vectorised numpy: heat-map overlays, colour bars, thumbnails, plots.

Heat-map conventions, the same on every page: unsigned maps (CAMs, gradient magnitudes) use
the sequential ``inferno`` scale from 0 to the 99.5th percentile of the map; signed maps use
the diverging ``RdBu_r`` scale, symmetric around 0 (red: evidence for the target class, blue:
evidence against), from minus to plus the 99.5th percentile of the absolute values.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
from PIL import Image

UNSIGNED_CMAP = "inferno"
SIGNED_CMAP = "RdBu_r"
PERCENTILE = 99.5


def _lut(name: str) -> np.ndarray:
    """A 256 x 3 uint8 colour table of a matplotlib colour map."""
    import matplotlib

    cmap = matplotlib.colormaps[name]
    return (cmap(np.linspace(0, 1, 256))[:, :3] * 255 + 0.5).astype(np.uint8)


def _scaled_values(attribution: np.ndarray, signed: bool) -> np.ndarray:
    """The values a scale is taken over: the map (signed), or its magnitude (unsigned maps with
    negative values, whose sign the unsigned convention does not show)."""
    a = np.nan_to_num(attribution.astype(np.float32))
    return a if signed or a.min() >= 0 else np.abs(a)


def scale_end(attribution: np.ndarray, signed: bool) -> float:
    """The value where the map's colour scale ends (the brightest colour; for signed maps -end
    is the bluest): the 99.5th percentile of |map|, else its maximum when that percentile is 0;
    1.0 for a map that is 0 everywhere. The pages print it next to each map's colour scale."""
    a = np.abs(_scaled_values(attribution, signed))
    return float(np.percentile(a, PERCENTILE)) or float(a.max()) or 1.0


def map_range(attribution: np.ndarray, signed: bool) -> dict:
    """What a page prints about one map's colour scale: ``end`` (:func:`scale_end`), ``peak``
    (the largest |value|, which can exceed ``end``: those pixels are clipped to the end
    colour), ``percentile`` (True when ``end`` is the 99.5th percentile, False when the fallback
    maximum) and ``zero`` (the map is 0 everywhere)."""
    a = np.abs(_scaled_values(attribution, signed))
    peak = float(a.max()) if a.size else 0.0
    pct = float(np.percentile(a, PERCENTILE)) if a.size else 0.0
    return {"end": scale_end(attribution, signed), "peak": peak, "percentile": pct > 0, "zero": peak == 0.0}


def scale_map(attribution: np.ndarray, signed: bool) -> np.ndarray:
    """Map values to [0, 1]: 0..p99.5 for unsigned maps, -p..+p -> 0..1 (0 at 0.5) for signed ones."""
    a = _scaled_values(attribution, signed)
    hi = scale_end(attribution, signed)
    if signed:
        return np.clip(0.5 + 0.5 * a / hi, 0, 1)
    return np.clip(a / hi, 0, 1)


def colourise(attribution: np.ndarray, signed: bool) -> np.ndarray:
    """``H x W`` map -> ``H x W x 3`` uint8 in the page's colour convention."""
    lut = _lut(SIGNED_CMAP if signed else UNSIGNED_CMAP)
    return lut[(scale_map(attribution, signed) * 255).astype(np.uint8)]


def resize_map(attribution: np.ndarray, height: int, width: int) -> np.ndarray:
    if attribution.shape == (height, width):
        return attribution
    img = Image.fromarray(attribution.astype(np.float32), mode="F")
    return np.asarray(img.resize((width, height), Image.BILINEAR))


def as_rgb(pixels: np.ndarray) -> np.ndarray:
    return np.repeat(pixels, 3, axis=2) if pixels.shape[2] == 1 else pixels


def overlay(pixels: np.ndarray, attribution: np.ndarray, signed: bool, alpha: float = 0.6) -> np.ndarray:
    """The heat map over a desaturated copy of the image; strong attribution is more opaque."""
    rgb = as_rgb(pixels).astype(np.float32)
    h, w = rgb.shape[:2]
    amap = resize_map(attribution, h, w)
    colours = colourise(amap, signed).astype(np.float32)
    gray = rgb.mean(axis=2, keepdims=True) * 0.8 + 25
    strength = np.abs(scale_map(amap, signed) - (0.5 if signed else 0.0)) * (2.0 if signed else 1.0)
    a = alpha * (0.35 + 0.65 * strength[:, :, None])
    return (gray * (1 - a) + colours * a).clip(0, 255).astype(np.uint8)


def upscale(pixels: np.ndarray, min_side: int = 112) -> np.ndarray:
    """Small images (28 x 28) enlarged with nearest neighbours, so pixels stay visible."""
    h, w = pixels.shape[:2]
    factor = int(np.ceil(min_side / min(h, w)))
    if factor <= 1:
        return pixels
    return np.repeat(np.repeat(pixels, factor, axis=0), factor, axis=1)


def png_bytes(pixels: np.ndarray) -> bytes:
    arr = pixels[:, :, 0] if pixels.ndim == 3 and pixels.shape[2] == 1 else pixels
    buf = io.BytesIO()
    # zlib level 6 without the optimiser's filter search: 5-6x faster to write (a render writes
    # thousands of PNGs) for files about 3 % larger.
    Image.fromarray(np.ascontiguousarray(arr)).save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def jpeg_bytes(pixels: np.ndarray, quality: int = 90) -> bytes:
    """JPEG without chroma subsampling (colour detail of feature visualisations survives);
    the encoder is deterministic, so identical pixels give identical files."""
    arr = pixels[:, :, 0] if pixels.ndim == 3 and pixels.shape[2] == 1 else pixels
    buf = io.BytesIO()
    picture = Image.fromarray(np.ascontiguousarray(arr))
    try:
        picture.save(buf, format="JPEG", quality=quality, subsampling=0, optimize=True)
    except OSError:
        # Pillow's optimiser needs the whole compressed image in one buffer and fails on very
        # noisy pictures ("broken data stream"); the unoptimised encoding is as valid, a little larger.
        buf = io.BytesIO()
        picture.save(buf, format="JPEG", quality=quality, subsampling=0)
    return buf.getvalue()


def webp_bytes(pixels: np.ndarray, quality: int = 82) -> bytes:
    """Lossy WebP for photographic heat-map overlays: about a sixth of the PNG at no visible
    loss at page size; libwebp is deterministic for fixed settings, so renders stay byte-stable."""
    arr = pixels[:, :, 0] if pixels.ndim == 3 and pixels.shape[2] == 1 else pixels
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(arr)).save(buf, format="WEBP", quality=quality, method=4)
    return buf.getvalue()


def overlay_suffix(source: np.ndarray) -> str:
    """'.webp' for a heat-map overlay over a photographic image (judged by the image before any
    nearest-neighbour enlargement: the overlay is smooth, a sixth of the PNG as WebP); '.png'
    for small images (28 px Fashion-MNIST), whose enlarged pixels stay sharp and small as PNG."""
    return ".webp" if min(source.shape[:2]) >= PHOTO_MIN_SIDE else ".png"


def thumbnail(pixels: np.ndarray, max_side: int = 320) -> np.ndarray:
    """``pixels`` shrunk (Lanczos) so that its longer side is at most ``max_side``; unchanged
    when it already fits. Galleries show the thumbnail and open the full size in the lightbox."""
    h, w = pixels.shape[:2]
    if max(h, w) <= max_side:
        return pixels
    scale = max_side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    arr = pixels[:, :, 0] if pixels.ndim == 3 and pixels.shape[2] == 1 else pixels
    out = np.asarray(Image.fromarray(np.ascontiguousarray(arr)).resize(size, Image.LANCZOS))
    return out[:, :, None] if pixels.ndim == 3 and pixels.shape[2] == 1 else out


#: Image files the site writes, by suffix.
ENCODERS = {".png": png_bytes, ".jpg": jpeg_bytes, ".webp": webp_bytes}

#: Images at least this many pixels on their short side are photographic in character
#: (feature visualisations, photos, deconvnet projections at 224 px) and go out as JPEG: a
#: 224 px visualisation is about 110 KB as PNG and a quarter of that as JPEG, which decides
#: whether a GPU build's site (every channel of every stage) is a few hundred MB or a GB.
#: Smaller ones are nearest-neighbour upscales whose hard pixel edges stay lossless PNG.
PHOTO_MIN_SIDE = 64


def picture_suffix(pixels: np.ndarray) -> str:
    """'.jpg' for photographic images, '.png' for small (upscaled) ones."""
    return ".jpg" if min(pixels.shape[:2]) >= PHOTO_MIN_SIDE else ".png"


def save_image(path: Path, pixels: np.ndarray) -> None:
    """Write the image in the format its suffix names (.png or .jpg) unless an identical
    file is there (keeps mtimes stable between renders)."""
    try:
        encode = ENCODERS[path.suffix.lower()]
    except KeyError:
        raise ValueError(f"{path}: image files must end in {' or '.join(ENCODERS)}") from None
    data = encode(pixels)
    if path.exists() and path.read_bytes() == data:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def colour_bar(signed: bool, width: int = 320, height: int = 14) -> np.ndarray:
    ramp = np.linspace(0, 1, width)[None, :].repeat(height, 0)
    lut = _lut(SIGNED_CMAP if signed else UNSIGNED_CMAP)
    return lut[(ramp * 255).astype(np.uint8)]


def save_figure(path: Path, fig) -> None:
    """Save a matplotlib figure as PNG without metadata that changes between runs."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    # An opaque white background: a transparent chart's black text vanishes in dark mode.
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None},
                facecolor="white", transparent=False)
    plt.close(fig)
    # A chart is lines, text and a few fills: 256 colours (median cut, no dithering) look the
    # same and take about a third of the bytes of the full-colour PNG; deterministic.
    chart = Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
    palette = chart.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    out = io.BytesIO()
    palette.save(out, format="PNG", optimize=True)
    data = out.getvalue()
    if path.exists() and path.read_bytes() == data:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def line_plot(path: Path, xs: Sequence[float], series: dict, xlabel: str, ylabel: str, title: str = "",
              ylim: Optional[tuple] = None, legend_outside: bool = False) -> None:
    """One chart, a line per series; ``legend_outside`` puts the legend right of the plot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.2) if legend_outside else (5.2, 3.2))
    for label, ys in series.items():
        ax.plot(xs, ys, marker="o", label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if ylim:
        ax.set_ylim(*ylim)
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    if legend_outside:
        ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0, fontsize=8, frameon=False)
    else:
        ax.legend()
    save_figure(path, fig)


def series_plot(path: Path, xs: Sequence[float], series: dict, xlabel: str, ylabel: str, title: str = "",
                ylim: Optional[tuple] = None, most_lines: int = 6, columns: int = 4) -> None:
    """Lines that stay readable however many there are. Up to ``most_lines`` series: one chart
    with the legend outside, right of the plot (never over the lines). More: small multiples,
    one panel per series with its line in colour and every other series in light grey behind
    it, on shared axes, each panel titled by its series. Opaque white background
    (:func:`save_figure`), so the chart reads the same in dark mode."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # Labels are data (image titles): a "$" must not switch matplotlib to mathtext.
    series = {str(k).replace("$", r"\$"): v for k, v in series.items()}
    names = list(series)
    if len(names) <= most_lines:
        line_plot(path, xs, series, xlabel, ylabel, title, ylim, legend_outside=True)
        return
    cols = min(columns, len(names))
    rows = -(-len(names) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.3 * cols, 1.9 * rows + 0.4), sharex=True, sharey=True,
                             squeeze=False)
    colour = plt.rcParams["axes.prop_cycle"].by_key()["color"][0]
    for k, ax in enumerate(axes.ravel()):
        if k >= len(names):
            ax.set_visible(False)
            continue
        for other in names:
            if other != names[k]:
                ax.plot(xs, series[other], color="#c8c8c8", linewidth=0.8)
        ax.plot(xs, series[names[k]], color=colour, marker="o", markersize=3, linewidth=1.6)
        ax.set_title(names[k], fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        if ylim:
            ax.set_ylim(*ylim)
    fig.supxlabel(xlabel, fontsize=9)
    fig.supylabel(ylabel, fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    save_figure(path, fig)


def confusion_plot(path: Path, confusion: np.ndarray, class_names: Sequence[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = np.asarray(confusion, dtype=np.float64)
    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    n = len(class_names)
    fig, ax = plt.subplots(figsize=(0.55 * n + 2, 0.5 * n + 1.5))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), class_names, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(n), class_names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true label")
    for i in range(n):
        for j in range(n):
            if cm[i, j]:
                ax.text(j, i, int(cm[i, j]), ha="center", va="center", fontsize=6,
                        color="white" if norm[i, j] > 0.5 else "black")
    save_figure(path, fig)
