"""View models of the Building Blocks pages (numpy only, no torch): icon sprites, overlays,
the group-flow (Sankey-like) layout and the "what a reader learns" sentences.

Olah et al. 2018, "The Building Blocks of Interpretability" (Distill): the interfaces combine
feature-visualisation icons with activations and activation x gradient attribution.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from generator.render import images as img

# Categorical colours for neuron groups (colour-blind-friendly Okabe-Ito, then grays).
GROUP_COLOURS = ["#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7",
                 "#999999", "#000000", "#882255", "#44AA99", "#117733", "#332288", "#AA4499",
                 "#DDCC77", "#88CCEE"]


def hex_rgb(colour: str) -> np.ndarray:
    return np.array([int(colour[i:i + 2], 16) for i in (1, 3, 5)], dtype=np.float32)


@dataclass
class Sprite:
    """Icons packed in one PNG (``cols`` per row, ``size`` px each); ``index[channel] = slot``."""

    url: str
    size: int
    cols: int
    rows: int
    index: Dict[int, int]

    def style(self, key: int, px: int, rel) -> str:
        """Inline CSS that shows icon ``key`` at ``px`` pixels (background sprite)."""
        slot = self.index[int(key)]
        r, c = divmod(slot, self.cols)
        return (f"background-image:url('{rel(self.url)}');background-size:{self.cols * px}px {self.rows * px}px;"
                f"background-position:-{c * px}px -{r * px}px;width:{px}px;height:{px}px")

    def fluid_style(self, key: int, share: float, rel) -> str:
        """Inline CSS that shows icon ``key`` filling ``share`` of its box's width, in percentages,
        so an icon grid scaled down to a phone's width keeps every icon inside its cell."""
        slot = self.index[int(key)]
        r, c = divmod(slot, self.cols)
        x = 100 * c / (self.cols - 1) if self.cols > 1 else 0
        y = 100 * r / (self.rows - 1) if self.rows > 1 else 0
        return (f"background-image:url('{rel(self.url)}');background-size:{self.cols * 100}% {self.rows * 100}%;"
                f"background-position:{x:.4g}% {y:.4g}%;width:{100 * share:.1f}%;aspect-ratio:1")

    def json(self, rel) -> Dict[str, Any]:
        return {"url": rel(self.url), "cols": self.cols, "rows": self.rows,
                "index": {str(k): v for k, v in self.index.items()}}


def pack(icons: np.ndarray, cols: int) -> np.ndarray:
    """(N, s, s, 3) uint8 -> one (rows*s, cols*s, 3) sheet, row-major."""
    n, s = icons.shape[0], icons.shape[1]
    rows = max(1, -(-n // cols))
    sheet = np.full((rows * s, cols * s, 3), 255, np.uint8)
    for i in range(n):
        r, c = divmod(i, cols)
        sheet[r * s:(r + 1) * s, c * s:(c + 1) * s] = icons[i]
    return sheet


#: Icons at least this large are feature visualisations with photographic detail: their sheet
#: goes out as JPEG (a quarter of the PNG); JPEG's 8 x 8 blocks then line up with the icons
#: when the side is a multiple of 8, so no icon bleeds into its neighbour.
JPEG_ICON_SIDE = 32


def sprite(writer, rel_path: str, icons: np.ndarray, keys: Sequence[int], cols: Optional[int] = None) -> Sprite:
    """Pack ``icons`` into one sheet written at ``rel_path`` (its suffix is replaced by .jpg for
    photographic icons, .png for small ones)."""
    cols = cols or min(16, max(1, len(keys)))
    sheet = pack(icons, cols)
    side = int(icons.shape[1])
    suffix = ".jpg" if side >= JPEG_ICON_SIDE and side % 8 == 0 else ".png"
    url = writer.image(rel_path.rsplit(".", 1)[0] + suffix, sheet)
    return Sprite(url=url, size=int(icons.shape[1]), cols=cols, rows=sheet.shape[0] // icons.shape[1],
                  index={int(k): i for i, k in enumerate(keys)})


def big(pixels: np.ndarray, side: int = 448) -> np.ndarray:
    """The displayed image enlarged (nearest) so overlays of small grids stay crisp."""
    h = pixels.shape[0]
    f = max(1, side // h)
    return np.repeat(np.repeat(pixels, f, 0), f, 1)


def block_map(m: np.ndarray, h: int, w: int) -> np.ndarray:
    """A layer-resolution map enlarged to (h, w) with nearest neighbours: one block per position,
    so the reader sees the layer's grid rather than a smoothed picture."""
    ys = (np.arange(h) * m.shape[0] // h).clip(0, m.shape[0] - 1)
    xs = (np.arange(w) * m.shape[1] // w).clip(0, m.shape[1] - 1)
    return m[ys][:, xs]


def map_end(m: np.ndarray, signed: bool, shape: Optional[Sequence[int]] = None) -> float:
    """Where the overlay's colour scale ends (what the scale's end labels print): the 99.5th
    percentile of |map| (signed) or of the map (unsigned), as :func:`images.scale_map` computes
    it on the map enlarged to ``shape`` (the overlay's pixels) by :func:`map_overlay`."""
    a = np.nan_to_num(np.asarray(m, np.float32))
    if shape is not None:
        a = block_map(a, int(shape[0]), int(shape[1]))
    a = np.abs(a) if signed or a.min() < 0 else a
    return float(np.percentile(a, img.PERCENTILE)) or float(a.max())


def paint_bar(signed: bool, width: int = 160, height: int = 12) -> np.ndarray:
    """The colour ramp ``blocks.js`` paints hovered maps with (over white): transparent to red
    for an unsigned map, blue - white - red for a signed one; the same numbers as its paint()."""
    t = np.linspace(-1 if signed else 0, 1, width)
    red, blue = np.array([214, 96, 77]), np.array([67, 147, 195])
    plain = np.array([255, 23, 68])
    colour = np.where(t[:, None] >= 0, red if signed else plain, blue)
    a = (np.abs(t) * 0.75)[:, None]
    row = (255 * (1 - a) + colour * a).clip(0, 255).astype(np.uint8)
    return np.repeat(row[None], height, 0)


def map_overlay(pixels: np.ndarray, m: np.ndarray, signed: bool) -> np.ndarray:
    h, w = pixels.shape[:2]
    return img.overlay(pixels, block_map(m.astype(np.float32), h, w), signed)


def group_overlay(pixels: np.ndarray, maps: np.ndarray) -> np.ndarray:
    """Each position coloured by its dominant group, opacity by that group's share of its maximum."""
    h, w = pixels.shape[:2]
    k = maps.shape[0]
    norm = maps / np.maximum(maps.reshape(k, -1).max(1), 1e-12)[:, None, None]
    dom = norm.argmax(0)
    strength = norm.max(0).clip(0, 1)
    colours = np.stack([hex_rgb(GROUP_COLOURS[g % len(GROUP_COLOURS)]) for g in range(k)])
    col = colours[block_map(dom, h, w)]
    a = 0.15 + 0.6 * block_map(strength, h, w)[:, :, None]
    gray = img.as_rgb(pixels).astype(np.float32).mean(2, keepdims=True) * 0.85 + 20
    return (gray * (1 - a) + col * a).clip(0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------------------------
# the group flow


def sankey(lower: List[Dict[str, Any]], upper: List[Dict[str, Any]], classes: List[Dict[str, Any]],
           flow: np.ndarray, to_class: Optional[np.ndarray], *, width: int = 760, node_h: int = 44,
           gap: int = 14, min_share: float = 0.04) -> Dict[str, Any]:
    """Layout of a three-column flow diagram: lower groups -> upper groups (-> classes).

    ``flow`` (k1 x k2) and ``to_class`` (k2 x K) are activation x gradient attributions; link
    widths are proportional to |value| (one scale per column pair), red for positive, blue for
    negative; links under ``min_share`` of the largest are left out to keep the picture legible.
    """
    cols = [lower, upper] + ([classes] if to_class is not None else [])
    xs = [110, width // 2, width - 150] if to_class is not None else [110, width - 150]
    height = max(len(c) for c in cols) * (node_h + gap) + gap
    nodes: List[Dict[str, Any]] = []
    centre: Dict[tuple, tuple] = {}
    for ci, col in enumerate(cols):
        top = (height - len(col) * (node_h + gap) + gap) / 2
        for i, node in enumerate(col):
            y = top + i * (node_h + gap)
            nodes.append({**node, "x": xs[ci], "y": round(y, 1), "h": node_h, "column": ci})
            centre[(ci, i)] = (xs[ci], y + node_h / 2)
    links: List[Dict[str, Any]] = []

    def add(matrix: np.ndarray, c0: int):
        top = float(np.abs(matrix).max()) or 1.0
        for i in range(matrix.shape[0]):
            for j in range(matrix.shape[1]):
                v = float(matrix[i, j])
                if abs(v) < min_share * top:
                    continue
                (x0, y0), (x1, y1) = centre[(c0, i)], centre[(c0 + 1, j)]
                x0 += 22
                x1 -= 24
                mid = (x0 + x1) / 2
                links.append({"d": f"M{x0:.1f},{y0:.1f} C{mid:.1f},{y0:.1f} {mid:.1f},{y1:.1f} {x1:.1f},{y1:.1f}",
                              "w": round(1 + 16 * abs(v) / top, 2), "sign": "pos" if v > 0 else "neg",
                              "from": f"{c0}-{i}", "to": f"{c0 + 1}-{j}", "value": v})

    add(np.asarray(flow, np.float64), 0)
    if to_class is not None:
        add(np.asarray(to_class, np.float64), 1)
    return {"width": width, "height": int(height), "nodes": nodes, "links": links, "xs": xs}


# ---------------------------------------------------------------------------------------------
# token layers (vision transformers)

#: A spatial map at most this fraction of the strongest channel attribution is "about zero".
FLAT_SHARE = 1e-3


def token_label(names: Sequence[str]) -> str:
    """'class token', 'class and distillation tokens', 'class and register tokens' (names in order, once)."""
    unique = list(dict.fromkeys(str(n) for n in names))
    words = unique[0] if len(unique) == 1 else ", ".join(unique[:-1]) + " and " + unique[-1]
    return f"{words} token{'s' if len(names) > 1 else ''}"


def token_view(summary: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    """What a token layer's pages add, from ``summary["tokens"]`` (None for a CNN's layer).

    ``layout``: how the layer was read; ``label``: the special tokens ('class token'; '' when the
    layer has none); ``parts``: class -> {grid, prefix} (the patch grid's and the special tokens'
    parts of the class's total); ``flat``: every cell of every class map is about zero next to the
    channel attribution (a residual-stream layer: the later LayerNorms make activation x gradient
    sum to zero over each token's channels), with ``map_max`` and ``channel_max`` for the text.
    """
    tok = summary.get("tokens")
    if tok is None:
        return None
    names = list(tok["prefix_names"])
    parts = {int(a["class"]): {"grid": float(a["grid"]), "prefix": float(a["prefix"])} for a in tok["attribution"]}
    map_max = max((abs(float(v)) for sa in summary["spatial_attribution"] for row in sa["map"] for v in row),
                  default=0.0)
    channel_max = max((abs(float(v)) for r in summary["channel_attribution"] for _, v in r["support"] + r["oppose"]),
                      default=0.0)
    return {"layout": str(tok["layout"]), "names": names, "label": token_label(names) if names else "",
            "parts": parts, "flat": channel_max > 0 and map_max <= FLAT_SHARE * channel_max,
            "map_max": map_max, "channel_max": channel_max}


def token_shares(tokens: Dict[str, Any], summary: Dict[str, Any]) -> List[Dict[str, Any]]:
    """Per attributed class: the groups' part, the patch grid's residual, the special tokens' part
    and the total (groups + residual + special tokens = total)."""
    groups: Dict[int, float] = {}
    for g in summary["groups"]:
        for c, v in g["classes"]:
            groups[int(c)] = groups.get(int(c), 0.0) + float(v)
    residual = {int(c): float(v) for c, v in summary["group_residual"]}
    totals = {int(sa["class"]): float(sa["total"]) for sa in summary["spatial_attribution"]}
    return [{"class": c, "groups": groups.get(c, 0.0), "residual": residual.get(c, 0.0),
             "prefix": tokens["parts"][c]["prefix"], "total": totals.get(c, 0.0)}
            for c in totals if c in tokens["parts"]]


# ---------------------------------------------------------------------------------------------
# numbers in sentences


def fmt(v: float) -> str:
    return f"{v:+.3g}"


def channel_list(pairs: Sequence[Sequence[float]], n: int = 3) -> str:
    return ", ".join(f"{int(c)}" for c, _ in pairs[:n]) or "none"
