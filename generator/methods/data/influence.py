"""Influential training examples: TracIn (Pruthi et al., NeurIPS 2020) and influence functions
restricted to the last layer (Koh & Liang, ICML 2017).

TracIn
    ``TracInCP(z, z') = sum_k eta_k  grad_theta l(z; theta_k) . grad_theta l(z'; theta_k)``
    over saved checkpoints ``theta_k`` with their learning rates ``eta_k``. A positive score
    marks a *proponent* (a training example whose gradient steps lowered the test loss: it
    helped), a negative one an *opponent* (it hurt).

    * ``params="last"`` (default): ``theta`` is the weight and bias of one linear layer (the
      last ``nn.Linear`` unless named). With layer input ``h`` and ``g = dl/d(output)``, the
      per-example gradient is ``g h^T`` (and ``g`` for the bias), so the dot product of two
      examples' gradients is ``(g . g')(h . h' + 1)``: no per-example gradient is ever built,
      and ``M`` test x ``N`` train scores are two small matrix products per checkpoint.
      ``g`` comes from autograd through whatever follows the layer, so any loss works.
    * ``params="all"``: every trainable parameter; per-example gradients with
      ``torch.func.vmap(torch.func.grad(...))`` over chunks of training examples.

Influence functions (last layer)
    ``I_up,loss(z, z_test) = - grad l(z_test)^T  H^-1  grad l(z)`` with
    ``H = 1/n sum_i hess l(z_i) + lambda I`` over the last layer's ``theta`` (Koh & Liang eq. 2,
    ``lambda`` the damping). Because the layer's output is linear in ``theta``,
    ``hess l(z_i) = (d^2 l / d o^2) (x) (h~ h~^T)`` exactly (``h~ = [h, 1]``), so ``H`` is
    accumulated from per-example ``C x C`` output Hessians (``torch.func.hessian``) without
    ever forming a per-example parameter Hessian, then ``H v = grad l(z_test)`` is solved once
    per test example (Cholesky). ``I_up,loss`` is the change in test loss when ``z`` is
    up-weighted: **negative = helpful**, positive = harmful. Feasible while the layer has at
    most ``max_params`` parameters (10 classes x 129 inputs = 1,290 here).

Both assume per-example losses that depend on their own example only (the model is put in
``eval()`` mode, so BatchNorm uses running statistics).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from generator.engine.hooks import forward_hook
from generator.engine.layers import get_layer

__all__ = [
    "InfluenceResult",
    "last_linear_layer",
    "tracin",
    "last_layer_influence",
    "per_example_loss",
]

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Checkpoint = Tuple[Dict[str, torch.Tensor], float]


def per_example_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy per example (``reduction="none"``): the default loss."""
    return F.cross_entropy(logits, targets, reduction="none")


@dataclass
class InfluenceResult:
    """``scores[m, i]``: influence of training example ``i`` on test example ``m``.

    ``helpful[m]`` / ``harmful[m]``: the ``top_k`` training indices that most helped / hurt
    test example ``m``, best first, whatever the sign convention of ``method``:
    TracIn (positive = helpful) or influence functions (``I_up,loss``, negative = helpful).
    """

    method: str
    scores: np.ndarray
    helpful: np.ndarray
    harmful: np.ndarray
    helpful_scores: np.ndarray
    harmful_scores: np.ndarray
    params: str
    layer: Optional[str]
    extra: Dict[str, object] = field(default_factory=dict)

    def to_dict(self) -> Dict[str, object]:
        return {
            "method": self.method,
            "params": self.params,
            "layer": self.layer,
            "helpful": self.helpful.tolist(),
            "harmful": self.harmful.tolist(),
            "helpful_scores": self.helpful_scores.tolist(),
            "harmful_scores": self.harmful_scores.tolist(),
            **{k: v for k, v in self.extra.items() if isinstance(v, (int, float, str, bool, list))},
        }


def last_linear_layer(model: nn.Module) -> str:
    """The dotted name of the last ``nn.Linear`` in registration order (``""``: the model is
    itself a linear layer)."""
    name = None
    for n, m in model.named_modules():
        if isinstance(m, nn.Linear):
            name = n
    if name is None:
        raise ValueError("the model has no nn.Linear layer; name a linear layer with layer=...")
    return name


def _resolve_linear(model: nn.Module, layer: Optional[str]) -> Tuple[str, nn.Linear]:
    name = layer if layer is not None else last_linear_layer(model)
    lin = model if name == "" else get_layer(model, name)
    if not isinstance(lin, nn.Linear):
        raise ValueError(f"layer {name!r} is a {type(lin).__name__}, not nn.Linear")
    return name, lin


def _top(scores: torch.Tensor, k: int, largest: bool) -> Tuple[np.ndarray, np.ndarray]:
    k = min(k, scores.shape[1])
    v, i = torch.topk(scores, k, dim=1, largest=largest, sorted=True)
    return i.cpu().numpy(), v.cpu().double().numpy()


def _load(model_factory: Callable[[], nn.Module], state: Dict[str, torch.Tensor], device) -> nn.Module:
    model = model_factory()
    model.load_state_dict(state)
    return model.to(device).eval()


def _layer_io_and_grad(
    model: nn.Module,
    layer: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    loss_fn: LossFn,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Input ``h`` of the linear layer, its output ``o``, ``g = dl_i/do_i`` per example, and
    the model's output, for one batch."""
    store: Dict[str, torch.Tensor] = {}

    def hook(_m, inputs, output):
        store["h"] = inputs[0].detach()
        store["o"] = output

    handle = forward_hook(layer, hook)
    try:
        with torch.enable_grad():
            out = model(x)
            losses = loss_fn(out, y)
            if losses.dim() != 1 or losses.shape[0] != x.shape[0]:
                raise ValueError("loss_fn must return one loss per example (reduction='none')")
            (g,) = torch.autograd.grad(losses.sum(), store["o"])
    finally:
        handle.remove()
    return store["h"], store["o"].detach(), g.detach(), out.detach()


def _flat_h(h: torch.Tensor, g: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    if h.dim() != 2 or g.dim() != 2:
        raise ValueError(
            "last-layer scores need a linear layer applied to (batch, features) inputs; "
            f"got input {tuple(h.shape)}; use params='all' or name another layer"
        )
    return h, g


def _batches(n: int, size: int):
    for s in range(0, n, size):
        yield slice(s, min(n, s + size))


def tracin(
    model_factory: Callable[[], nn.Module],
    checkpoints: Sequence[Checkpoint],
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    *,
    params: str = "last",
    layer: Optional[str] = None,
    loss_fn: LossFn = per_example_loss,
    top_k: int = 10,
    batch_size: int = 512,
    device: Optional[Union[str, torch.device]] = None,
) -> InfluenceResult:
    """TracInCP scores of every training example for every test example (Pruthi et al. 2020).

    ``checkpoints``: ``(state_dict, learning_rate)`` pairs saved during training.
    ``test_y``: the targets to explain (the predicted class to explain a prediction, the true
    label to explain a loss). ``params``: ``"last"`` (default; one linear layer, ``layer`` or
    the last ``nn.Linear``) or ``"all"`` (every parameter with ``requires_grad``).
    Returns the full ``M x N`` score matrix (float32; ``M * N * 4`` bytes) and the top ``top_k``
    helpful (largest score) and harmful (smallest score) training examples per test example.
    """
    if params not in ("last", "all"):
        raise ValueError(f"params must be 'last' or 'all', got {params!r}")
    if not checkpoints:
        raise ValueError("TracIn needs at least one checkpoint")
    dev = torch.device(device) if device is not None else train_x.device
    n, m = train_x.shape[0], test_x.shape[0]
    scores = torch.zeros((m, n), dtype=torch.float32, device=dev)
    layer_name = None
    test_x, test_y = test_x.to(dev), test_y.to(dev)

    for state, lr in checkpoints:
        model = _load(model_factory, state, dev)
        if params == "last":
            layer_name, lin = _resolve_linear(model, layer)
            bias = 1.0 if lin.bias is not None else 0.0
            h_t, _o, g_t, _ = _layer_io_and_grad(model, lin, test_x, test_y, loss_fn)
            h_t, g_t = _flat_h(h_t, g_t)
            for sl in _batches(n, batch_size):
                h, _o, g, _ = _layer_io_and_grad(model, lin, train_x[sl].to(dev), train_y[sl].to(dev), loss_fn)
                h, g = _flat_h(h, g)
                scores[:, sl] += float(lr) * ((g_t @ g.T) * (h_t @ h.T + bias))
        else:
            gt = _per_example_grads(model, test_x, test_y, loss_fn, batch_size)
            for sl in _batches(n, batch_size):
                g = _per_example_grads(model, train_x[sl].to(dev), train_y[sl].to(dev), loss_fn, batch_size)
                scores[:, sl] += float(lr) * (gt @ g.T)
        del model

    hi, hv = _top(scores, top_k, largest=True)
    lo, lv = _top(scores, top_k, largest=False)
    return InfluenceResult(
        method="tracin",
        scores=scores.cpu().numpy(),
        helpful=hi,
        harmful=lo,
        helpful_scores=hv,
        harmful_scores=lv,
        params=params,
        layer=layer_name,
        extra={"checkpoints": len(checkpoints), "learning_rates": [float(lr) for _, lr in checkpoints]},
    )


def _per_example_grads(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn: LossFn, batch_size: int
) -> torch.Tensor:
    """Flattened per-example gradients of every trainable parameter, ``(B, P)``."""
    from torch.func import functional_call, grad, vmap

    names = [k for k, p in model.named_parameters() if p.requires_grad]
    p_vals = {k: p.detach() for k, p in model.named_parameters() if p.requires_grad}
    frozen = {k: p.detach() for k, p in model.named_parameters() if not p.requires_grad}
    buffers = {k: b for k, b in model.named_buffers()}

    def loss_one(pv, xi, yi):
        out = functional_call(model, {**pv, **frozen, **buffers}, (xi[None],))
        return loss_fn(out, yi[None]).sum()

    g_fn = vmap(grad(loss_one), in_dims=(None, 0, 0))
    out = []
    for sl in _batches(x.shape[0], batch_size):
        gd = g_fn(p_vals, x[sl], y[sl])
        out.append(torch.cat([gd[k].reshape(gd[k].shape[0], -1) for k in names], dim=1))
    return torch.cat(out, dim=0)


def last_layer_influence(
    model: nn.Module,
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    *,
    layer: Optional[str] = None,
    loss_fn: LossFn = per_example_loss,
    damping: float = 1e-3,
    top_k: int = 10,
    batch_size: int = 1024,
    max_params: int = 20000,
    device: Optional[Union[str, torch.device]] = None,
    dtype: torch.dtype = torch.float64,
) -> InfluenceResult:
    """Influence functions over the last linear layer (Koh & Liang 2017), exact Hessian.

    ``scores[m, i] = I_up,loss(z_i, z_test_m) = -grad_test^T (H + damping I)^-1 grad_train``
    with ``H`` the Hessian of the *mean* training loss over the layer's weight and bias
    (flattened weight first, row-major, then bias). Negative = helpful. The layer's output
    must be the model's output (the loss is applied to it directly) so that the Hessian is
    exact; ``model`` is used as is (put in ``eval()`` here).
    """
    dev = torch.device(device) if device is not None else train_x.device
    model = model.to(dev).eval()
    layer_name, lin = _resolve_linear(model, layer)
    C, Fin = lin.out_features, lin.in_features
    has_b = lin.bias is not None
    Fb = Fin + (1 if has_b else 0)
    P = C * Fb
    if P > max_params:
        raise ValueError(
            f"last-layer Hessian would be {P} x {P} ({P} parameters > max_params={max_params}); "
            "use TracIn for this model"
        )
    from torch.func import hessian, vmap

    def loss_one(o, y):
        return loss_fn(o[None], y[None]).sum()

    out_hess = vmap(hessian(loss_one), in_dims=(0, 0))

    def aug(h: torch.Tensor) -> torch.Tensor:
        h = h.to(dtype)
        return torch.cat([h, torch.ones_like(h[:, :1])], 1) if has_b else h

    n = train_x.shape[0]
    H = torch.zeros((C, Fb, C, Fb), dtype=dtype, device=dev)
    for sl in _batches(n, batch_size):
        x, y = train_x[sl].to(dev), train_y[sl].to(dev)
        h, o, _g, out = _layer_io_and_grad(model, lin, x, y, loss_fn)
        if not torch.equal(o, out):
            raise ValueError(f"the output of {layer_name!r} is not the model's output; the exact "
                             "last-layer Hessian needs the loss applied to that layer's output")
        h, _ = _flat_h(h, _g)
        A = out_hess(o.to(dtype), y)  # (B, C, C): d^2 l / d o^2
        ha = aug(h)
        # H[c, f, d, e] += sum_b A[b, c, d] h[b, f] h[b, e], as one (C*C) x (Fb*Fb) matmul
        hh = (ha[:, :, None] * ha[:, None, :]).reshape(len(ha), -1)
        H += (A.reshape(len(A), -1).T @ hh).reshape(C, C, Fb, Fb).permute(0, 2, 1, 3)
    H = H.reshape(P, P) / n
    H = 0.5 * (H + H.T) + damping * torch.eye(P, dtype=dtype, device=dev)

    h_t, o_t, g_t, _ = _layer_io_and_grad(model, lin, test_x.to(dev), test_y.to(dev), loss_fn)
    h_t, g_t = _flat_h(h_t, g_t)
    grad_test = (g_t.to(dtype)[:, :, None] * aug(h_t)[:, None, :]).reshape(len(g_t), P)  # (M, P)
    try:
        L = torch.linalg.cholesky(H)
        V = torch.cholesky_solve(grad_test.T, L)  # (P, M) = H^-1 grad_test
    except RuntimeError:  # not positive definite (non-convex loss, tiny damping): plain solve
        V = torch.linalg.solve(H, grad_test.T)
    Vr = V.T.reshape(len(g_t), C, Fb)  # (M, C, Fb)

    scores = torch.zeros((len(g_t), n), dtype=dtype, device=dev)
    for sl in _batches(n, batch_size):
        h, _o, g, _ = _layer_io_and_grad(model, lin, train_x[sl].to(dev), train_y[sl].to(dev), loss_fn)
        h, g = _flat_h(h, g)
        # grad_train_i . V_m = g_i^T V_m h~_i, without building grad_train
        scores[:, sl] = -torch.einsum("bc,mcf,bf->mb", g.to(dtype), Vr, aug(h))

    hi, hv = _top(scores, top_k, largest=False)  # most negative I_up,loss = most helpful
    lo, lv = _top(scores, top_k, largest=True)
    eig_min = float(torch.linalg.eigvalsh(H)[0]) if P <= 4096 else None
    return InfluenceResult(
        method="influence_last_layer",
        scores=scores.float().cpu().numpy(),
        helpful=hi,
        harmful=lo,
        helpful_scores=hv,
        harmful_scores=lv,
        params="last",
        layer=layer_name,
        extra={"damping": float(damping), "n_params": int(P), "hessian_min_eig": eig_min},
    )
