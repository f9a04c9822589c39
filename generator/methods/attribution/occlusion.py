"""Occlusion: the drop of the class score when a window is replaced by a baseline."""

from __future__ import annotations

from typing import Optional, Tuple

import torch

from ...engine.batching import autocast_for, fast_layout, run_chunked, select_target
from .base import AttributionMethod, register


@register
class Occlusion(AttributionMethod):
    """Occlusion: slide a window over the image, replace it by a baseline and record how much
    the target score drops; each pixel gets the mean drop of the windows covering it.

    Zeiler & Fergus 2014, "Visualizing and Understanding Convolutional Networks". It is
    model-agnostic and easy to read, but costly (one forward per window), its resolution is
    the stride, and the baseline patch itself can create out-of-distribution evidence.
    Map: the per-pixel mean score drop (identical across channels; signed). ``window`` and
    ``stride`` are pixels (int) or fractions of the image height (float < 1), so one setting
    suits a 28 px and a 224 px model.

    On a model with a token grid (``spec.tokens``: a ViT or Swin) and ``align='patch'`` (the
    default), window and stride are one patch, whatever ``window`` and ``stride`` say: a window
    straddling patches half-hides several tokens, which the model never sees in training, while
    a whole patch replaced by the baseline is one token changed. The sizes used are returned in
    the result's extras (``window_hw``, ``stride_hw``). A CNN, or ``align='none'``, uses the
    given sizes.
    """

    name = "occlusion"
    signed = True
    reduction = "mean"

    def window_pixels(self, side: int, which: str = "window") -> int:
        value = self.params[which]
        if isinstance(value, float) and 0 < value < 1:
            return max(1, int(round(value * side)))
        return max(1, int(value))

    def _attribute(self, x, target):
        B, C, H, W = x.shape
        kh, sh = self.window_pixels(H), self.window_pixels(H, "stride")
        kw, sw = kh, sh
        patch = self.patch_size()
        if patch is not None:
            (kh, kw), (sh, sw) = patch, patch
        base = self.make_baseline(x, self.params["baseline"])
        ys = list(range(0, max(H - kh, 0) + 1, sh))
        xs = list(range(0, max(W - kw, 0) + 1, sw))
        pos = torch.tensor([(y, xx) for y in ys for xx in xs], device=x.device)
        P = pos.shape[0]
        ar_h = torch.arange(H, device=x.device)
        ar_w = torch.arange(W, device=x.device)

        def windows(p: torch.Tensor) -> torch.Tensor:  # (n,H,W) bool
            my = (ar_h.view(1, -1) >= p[:, :1]) & (ar_h.view(1, -1) < p[:, :1] + kh)
            mx = (ar_w.view(1, -1) >= p[:, 1:]) & (ar_w.view(1, -1) < p[:, 1:] + kw)
            return my.unsqueeze(2) & mx.unsqueeze(1)

        def score(inputs, tgt):
            with torch.inference_mode(), autocast_for(x.device, self.precision):
                out = self.model(fast_layout(inputs)).float()
            if self.params["output"] == "probability":
                out = out.softmax(1)
            return select_target(out, tgt)

        full = torch.empty(B, device=x.device)
        run_chunked(B, self.max_batch, lambda a, b: full.__setitem__(slice(a, b), score(x[a:b], target[a:b])))
        total = torch.zeros(B, H, W, device=x.device)
        count = windows(pos).float().sum(0)
        # items are (window, image) pairs, window-major; chunks mix windows and images freely
        def chunk(a: int, b: int) -> None:
            idx = torch.arange(a, b, device=x.device)
            p_idx, b_idx = idx // B, idx % B
            m = windows(pos[p_idx])
            occluded = torch.where(m.unsqueeze(1), base[b_idx], x[b_idx])
            drop = full[b_idx] - score(occluded, target[b_idx])
            total.index_add_(0, b_idx, m.float() * drop.view(-1, 1, 1))

        run_chunked(P * B, self.max_batch, chunk)
        maps = total / count.clamp(min=1)
        raw = maps.unsqueeze(1).expand(B, C, H, W)
        return self._result(maps, target, raw, windows=P, window_hw=(kh, kw), stride_hw=(sh, sw))

    def patch_size(self) -> Optional[Tuple[int, int]]:
        """The (height, width) of the model's patches when windows align to them, else None."""
        tokens = self.spec.tokens if self.spec is not None else None
        if self.params.get("align", "none") != "patch" or not tokens:
            return None
        ph, pw = (int(v) for v in tokens["patch"])
        return ph, pw
