"""ROAR and KAR (Hooker et al. 2019, "A Benchmark for Interpretability Methods in Deep Neural
Networks"): remove (ROAR) or keep (KAR) the top-k% pixels by each method, *retrain* the model
on the modified data and measure test accuracy. Retraining separates "the pixels carry
information" from "the model was surprised by the distribution shift". A random ranking is
always included as the baseline: a useful method degrades accuracy faster than it under ROAR
and keeps more of it under KAR.

Removed pixels are replaced by the mean pixel (Hooker et al.) or, with ``imputation='road'``,
by ROAD's noisy linear imputation (Rong et al. 2022, :mod:`.imputation`): a single fill colour
draws the removed region's shape, which follows the map and can tell the retrained model the
class by itself (the check :func:`generator.evaluation.statistics.roar_leak` looks for that)."""

from __future__ import annotations

from typing import Callable, Dict, Optional, Sequence

import torch

IMPUTATIONS = ("mean", "road")


def remove_pixels(x: torch.Tensor, maps: torch.Tensor, fraction: float, *, keep: bool = False,
                  fill: Optional[torch.Tensor] = None, imputation: str = "mean", noise: float = 0.01,
                  generator: Optional[torch.Generator] = None, chunk: int = 4096) -> torch.Tensor:
    """Replace the top ``fraction`` of pixels by ``maps`` (or all others when ``keep``).

    ``imputation='mean'``: with ``fill`` (per-channel values, default the per-channel mean of
    ``x``), as in Hooker et al. 2019. ``'road'``: ROAD's noisy linear imputation (Rong et al.
    2022) with Gaussian noise of standard deviation ``noise`` drawn from ``generator``, solved
    ``chunk`` images at a time."""
    if imputation not in IMPUTATIONS:
        raise ValueError(f"unknown imputation {imputation!r} (one of {', '.join(IMPUTATIONS)})")
    N, C, H, W = x.shape
    if fill is None:
        fill = x.mean(dim=(0, 2, 3))
    fill = fill.to(x).view(1, C, 1, 1)
    k = int(round(fraction * H * W))
    order = maps.flatten(1).argsort(dim=1, descending=True, stable=True)
    top = torch.zeros(N, H * W, dtype=torch.bool, device=x.device)
    top.scatter_(1, order[:, :k], True)
    replace = ~top if keep else top
    if imputation == "road":
        from .imputation import noisy_linear_imputation

        return torch.cat([noisy_linear_imputation(x[i:i + chunk], replace[i:i + chunk].view(-1, H, W), noise=noise,
                                                  generator=generator, fill=fill.view(C))
                          for i in range(0, N, chunk)]) if N else x.clone()
    return torch.where(replace.view(N, 1, H, W), fill.expand_as(x), x)


def roar_kar(
    make_model: Callable[[], torch.nn.Module],
    train: Callable[[torch.nn.Module, torch.Tensor, torch.Tensor], torch.nn.Module],
    evaluate: Callable[[torch.nn.Module, torch.Tensor, torch.Tensor], float],
    x_train: torch.Tensor, y_train: torch.Tensor, x_test: torch.Tensor, y_test: torch.Tensor,
    maps_train: Dict[str, torch.Tensor], maps_test: Dict[str, torch.Tensor],
    *,
    fractions: Sequence[float] = (0.1, 0.3, 0.5, 0.7, 0.9),
    modes: Sequence[str] = ("roar", "kar"),
    seed: int = 0,
    random_baseline: bool = True,
    imputation: str = "mean",
    noise: float = 0.01,
) -> Dict[str, object]:
    """Accuracy after retraining, for every mode, method (plus 'random') and fraction.

    ``maps_*``: method -> (N,H,W) attributions of the respective images (from the original
    model). ``imputation`` and ``noise``: how removed pixels are filled (:func:`remove_pixels`).
    Returns ``{"fractions": [...], "reference_accuracy": float, "roar": {method: [acc per
    fraction]}, "kar": {...}}``.
    """
    fill = x_train.mean(dim=(0, 2, 3))
    maps_train, maps_test = dict(maps_train), dict(maps_test)
    if random_baseline:
        g = torch.Generator().manual_seed(seed)
        maps_train["random"] = torch.rand(x_train.shape[0], *x_train.shape[2:], generator=g).to(x_train.device)
        maps_test["random"] = torch.rand(x_test.shape[0], *x_test.shape[2:], generator=g).to(x_test.device)
    torch.manual_seed(seed)
    reference = float(evaluate(train(make_model(), x_train, y_train), x_test, y_test))
    out: Dict[str, object] = {"fractions": list(fractions), "reference_accuracy": reference}
    for mode in modes:
        keep = mode == "kar"
        table: Dict[str, list] = {}
        for name in maps_train:
            accs = []
            for frac in fractions:
                torch.manual_seed(seed)
                noise_gen = torch.Generator().manual_seed(seed)
                how = {"keep": keep, "fill": fill, "imputation": imputation, "noise": noise, "generator": noise_gen}
                xt = remove_pixels(x_train, maps_train[name], frac, **how)
                xe = remove_pixels(x_test, maps_test[name], frac, **how)
                accs.append(float(evaluate(train(make_model(), xt, y_train), xe, y_test)))
            table[name] = accs
        out[mode] = table
    return out
