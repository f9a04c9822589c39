"""Gradient-based methods: saliency, gradient x input, SmoothGrad family, interior and
integrated gradients. All of them run images x steps x samples through the network in large
chunks (``max_batch``) and accumulate on the device."""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

import numpy as np
import torch

from ...engine.batching import autocast_for, input_gradient, run_chunked, select_target
from .base import AttributionMethod, reduce_channels, register


def _gradients(method: AttributionMethod, x: torch.Tensor, target: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    grads = torch.empty_like(x, dtype=torch.float32)
    logits = []

    def chunk(a: int, b: int) -> None:
        g, lg = input_gradient(method.model, x[a:b], target[a:b], method.precision)
        grads[a:b] = g
        logits.append(lg)

    run_chunked(x.shape[0], method.max_batch, chunk)
    return grads, torch.cat(logits)


class _FromInputGradient(AttributionMethod):
    """Methods computed from one input gradient; ``attribute_many`` shares that gradient."""

    shares = "gradient"

    def _attribute(self, x, target):
        grads, logits = _gradients(self, x, target)
        return self.from_gradient(x, target, grads, logits)

    def from_gradient(self, x, target, grads, logits):
        raise NotImplementedError


@register
class Saliency(_FromInputGradient):
    """Saliency: the gradient of the class score with respect to the input pixels.

    Simonyan, Vedaldi & Zisserman 2014, "Deep Inside Convolutional Networks". The gradient is
    a local, first-order explanation: it says which pixels would change the score most if
    nudged, not which ones the score relies on, and it is visually noisy (shattered gradients).
    Map: maximum over channels of the absolute gradient.
    """

    name = "saliency"
    signed = False
    reduction = "max_abs"
    shares = "gradient"

    def from_gradient(self, x, target, grads, logits):
        return self._result(reduce_channels(grads, "max_abs"), target, grads)


@register
class GradientXInput(_FromInputGradient):
    """Gradient x input: the gradient multiplied elementwise by the model input.

    Shrikumar et al. 2016 ("Not Just a Black Box"). It equals a one-step integrated gradient
    from a zero model input (the dataset mean colour after normalisation) and inherits the
    noise of the gradient; for ReLU networks without biases it equals LRP-0.
    Map: sum over channels (signed).
    """

    name = "gradient_x_input"
    signed = True
    reduction = "sum"
    shares = "gradient"

    def from_gradient(self, x, target, grads, logits):
        raw = grads * x.float()
        return self._result(raw.sum(1), target, raw)


class _NoiseAveraged(AttributionMethod):
    """SmoothGrad family: statistics of gradients at noisy copies of the input."""

    statistic = "mean"

    def sample_noise(self, x: torch.Tensor, sample: int) -> torch.Tensor:
        """The noise added to the whole batch for noisy sample ``sample`` (deterministic in
        ``seed`` and ``sample``, independent of chunking): Gaussian with standard deviation
        ``noise_level`` times each image's value range."""
        g = torch.Generator(device=x.device).manual_seed(int(self.params["seed"]) * 1_000_003 + sample)
        noise = torch.randn(x.shape, generator=g, device=x.device, dtype=torch.float32)
        flat = x.float().flatten(1)
        span = (flat.amax(1) - flat.amin(1)).view(-1, 1, 1, 1)
        return noise * (float(self.params["noise_level"]) * span)

    shares = "noise"

    def noise_key(self) -> tuple:
        """Methods with equal keys see the same noisy inputs and can share their gradients."""
        return (int(self.params["n_samples"]), float(self.params["noise_level"]), int(self.params["seed"]))

    @property
    def needs_squares(self) -> bool:
        """Whether the statistic uses the sum of squared gradients (SmoothGrad's mean does not)."""
        return self.statistic != "mean"

    def noise_statistics(self, x, target, squares: bool = True):
        """Sum and sum of squares of the gradients over the noisy copies, (B,C,H,W) each
        (the squares only when ``squares``: plain SmoothGrad does not need them)."""
        B = x.shape[0]
        S = int(self.params["n_samples"])
        total = torch.zeros_like(x, dtype=torch.float32)
        total_sq = torch.zeros_like(x, dtype=torch.float32) if squares else None
        cache = {}

        def noise_for(s: int) -> torch.Tensor:
            if s not in cache:
                cache.clear()
                cache[s] = self.sample_noise(x, s)
            return cache[s]

        def chunk(a: int, b: int) -> None:
            idx = torch.arange(a, b, device=x.device)
            s_idx, b_idx = idx // B, idx % B
            parts = []
            for s in range(int(s_idx[0]), int(s_idx[-1]) + 1):
                sel = b_idx[s_idx == s]
                parts.append(x[sel].float() + noise_for(s)[sel])
            noisy = torch.cat(parts)
            g, _ = input_gradient(self.model, noisy.to(x.dtype), target[b_idx], self.precision)
            total.index_add_(0, b_idx, g)
            if total_sq is not None:
                total_sq.index_add_(0, b_idx, g * g)

        run_chunked(B * S, self.max_batch, chunk)
        return total, total_sq

    def _attribute(self, x, target):
        return self.from_statistics(x, target, *self.noise_statistics(x, target, squares=self.needs_squares))

    def from_statistics(self, x, target, total, total_sq):
        S = int(self.params["n_samples"])
        mean = total / S
        if self.statistic == "mean":
            raw = mean
        elif self.statistic == "mean_sq":
            raw = total_sq / S
        else:  # variance (population, as Captum's VarGrad)
            raw = (total_sq / S - mean * mean).clamp(min=0)
        return self._result(reduce_channels(raw, self.reduction), target, raw)


@register
class SmoothGrad(_NoiseAveraged):
    """SmoothGrad: the gradient averaged over noisy copies of the input.

    Smilkov et al. 2017, "SmoothGrad: removing noise by adding noise". Averaging suppresses
    the high-frequency noise of the raw gradient, but the result depends on the noise level
    and sample count, and sharper maps are not proof of higher faithfulness.
    Noise: Gaussian, std = ``noise_level`` x each image's value range. Map: max over channels of |mean gradient|.
    """

    name = "smoothgrad"
    signed = False
    reduction = "max_abs"
    statistic = "mean"


@register
class SmoothGradSquared(_NoiseAveraged):
    """SmoothGrad-squared: the mean of squared gradients over noisy copies of the input.

    Hooker et al. 2019 found this variant among the few that beat a random ranking in ROAR.
    It discards the sign and emphasises large gradients; it shares SmoothGrad's dependence on
    the noise level. Map: max over channels of the mean squared gradient.
    """

    name = "smoothgrad_sq"
    signed = False
    reduction = "max"
    statistic = "mean_sq"


@register
class VarGrad(_NoiseAveraged):
    """VarGrad: the variance of gradients over noisy copies of the input.

    Adebayo et al. 2018 ("Local explanation methods for deep neural networks lack
    sensitivity to parameter values"). Unsigned; the variance can be dominated by the
    noise model rather than the class evidence. Map: max over channels of the variance.
    """

    name = "vargrad"
    signed = False
    reduction = "max"
    statistic = "var"


def path_weights(steps: int, method: str) -> Tuple[np.ndarray, np.ndarray]:
    """Points alpha in [0,1] and quadrature weights for the path integral (as in Captum)."""
    if method == "gausslegendre":
        nodes, weights = np.polynomial.legendre.leggauss(steps)
        return (nodes + 1) / 2, weights / 2
    if method == "riemann_trapezoid":
        alphas = np.linspace(0, 1, steps)
        w = np.full(steps, 1.0 / (steps - 1))
        w[0] = w[-1] = 0.5 / (steps - 1)
        return alphas, w
    step = 1.0 / steps
    if method == "riemann_left":
        return np.arange(steps) * step, np.full(steps, step)
    if method == "riemann_right":
        return (np.arange(steps) + 1) * step, np.full(steps, step)
    if method == "riemann_middle":
        return (np.arange(steps) + 0.5) * step, np.full(steps, step)
    raise ValueError(f"unknown integration method {method!r}")


def _path_gradients(method: AttributionMethod, x, base, target, alphas: Sequence[float],
                    weights: Optional[Sequence[float]]):
    """Sum of ``weights[s] * grad(base + alphas[s] (x - base))`` per image, or (weights None)
    every step's gradient, shaped (S,B,C,H,W)."""
    B = x.shape[0]
    S = len(alphas)
    a_t = torch.as_tensor(np.asarray(alphas), dtype=torch.float32, device=x.device)
    diff = (x - base).float()
    if weights is None:
        out = torch.zeros((S,) + tuple(x.shape), dtype=torch.float32, device=x.device)
    else:
        w_t = torch.as_tensor(np.asarray(weights), dtype=torch.float32, device=x.device)
        out = torch.zeros_like(x, dtype=torch.float32)

    def chunk(a: int, b: int) -> None:
        idx = torch.arange(a, b, device=x.device)
        s_idx, b_idx = idx // B, idx % B
        inputs = base[b_idx].float() + a_t[s_idx].view(-1, 1, 1, 1) * diff[b_idx]
        g, _ = input_gradient(method.model, inputs.to(x.dtype), target[b_idx], method.precision)
        if weights is None:
            out[s_idx, b_idx] = g
        else:
            out.index_add_(0, b_idx, g * w_t[s_idx].view(-1, 1, 1, 1))

    run_chunked(B * S, method.max_batch, chunk)
    return out


def _logits(method: AttributionMethod, x: torch.Tensor) -> torch.Tensor:
    outs = []

    def chunk(a: int, b: int) -> None:
        with torch.no_grad(), autocast_for(x.device, method.precision):
            outs.append(method.model(x[a:b]).float())

    run_chunked(x.shape[0], method.max_batch, chunk)
    return torch.cat(outs)


#: Largest relative completeness gap of a map shown as integrated gradients. Beyond it the path
#: integral has not converged (a ReLU network's gradient jumps at every linear region the path
#: crosses) and the map is not the method's explanation.
COMPLETENESS_TOLERANCE = 0.05


def completeness_verdicts(relative: torch.Tensor, delta: torch.Tensor, steps: int):
    """Per image: whether the attributions add up to f(x) − f(baseline) within
    :data:`COMPLETENESS_TOLERANCE`, and if not, why, in words a reader can act on."""
    reliable, notes = [], []
    for gap, d in zip(relative.tolist(), delta.tolist()):
        ok = bool(gap == gap and gap <= COMPLETENESS_TOLERANCE)  # NaN is never reliable
        reliable.append(ok)
        if ok:
            notes.append("")
        elif abs(d) < 1e-3:
            notes.append(f"f(x) − f(baseline) is {d:.2g}, about zero: there is almost nothing to attribute, and "
                         f"the attributions miss it by {gap:.0%}")
        else:
            notes.append(f"the attributions add up to f(x) − f(baseline) only within {gap:.0%} (tolerance "
                         f"{COMPLETENESS_TOLERANCE:.0%}): the path integral has not converged at {steps} steps; "
                         f"raise outcome.params.integrated_gradients.steps")
    return reliable, notes


@register
class IntegratedGradients(AttributionMethod):
    """Integrated gradients: (x - baseline) times the gradient averaged along the straight path.

    Sundararajan, Taly & Yan 2017, "Axiomatic Attribution for Deep Networks". Completeness
    holds (attributions sum to f(x) - f(baseline); the gap is reported), but the result depends
    strongly on the baseline (a black baseline cannot credit black pixels) and the path.
    Map: sum over channels (signed). Baselines: black (pixel 0), zeros, blur, uniform.
    """

    name = "integrated_gradients"
    signed = True
    reduction = "sum"

    def _attribute(self, x, target):
        base = self.make_baseline(x, self.params["baseline"], seed=int(self.params["seed"]),
                                  blur_sigma=float(self.params["blur_sigma"]))
        alphas, weights = path_weights(int(self.params["steps"]), str(self.params["integration"]))
        avg_grad = _path_gradients(self, x, base, target, alphas, weights)
        raw = (x - base).float() * avg_grad
        ends = _logits(self, torch.cat([x, base]))
        B = x.shape[0]
        delta = select_target(ends[:B], target) - select_target(ends[B:], target)
        total = raw.flatten(1).sum(1)
        gap = (total - delta).abs()
        relative = gap / delta.abs().clamp(min=1e-6)
        reliable, notes = completeness_verdicts(relative, delta, int(self.params["steps"]))
        return self._result(raw.sum(1), target, raw, completeness_gap=relative,
                            completeness_gap_abs=gap, delta=delta, baseline=self.params["baseline"]
                            if isinstance(self.params["baseline"], str) else "tensor",
                            reliable=reliable, reliability_note=notes)


@register
class InteriorGradients(AttributionMethod):
    """Interior gradients: gradients at inputs scaled towards a baseline, for a sweep of alphas.

    Sundararajan, Taly & Yan 2016, "Gradients of Counterfactuals". Gradients at small alphas
    reveal features that saturate at the full image; each map is one counterfactual, not an
    explanation by itself, and the choice of alpha and baseline is arbitrary.
    Map at ``alpha`` (the sweep is in ``extras['sweep']``): sum over channels of
    (x - baseline) x gradient at baseline + alpha (x - baseline); their mean over a uniform
    alpha grid is a Riemann sum of integrated gradients.
    """

    name = "interior_gradients"
    signed = True
    reduction = "sum"

    def _attribute(self, x, target):
        base = self.make_baseline(x, self.params["baseline"], seed=int(self.params["seed"]),
                                  blur_sigma=float(self.params["blur_sigma"]))
        alphas = [float(a) for a in self.params["alphas"]]
        grads = _path_gradients(self, x, base, target, alphas, None)  # (A,B,C,H,W)
        sweep = ((x - base).float().unsqueeze(0) * grads).sum(2)
        pick = int(np.argmin([abs(a - float(self.params["alpha"])) for a in alphas]))
        raw = (x - base).float() * grads[pick]
        return self._result(sweep[pick], target, raw, sweep=sweep, alphas=alphas, alpha=alphas[pick])
