"""Gradients of linear read-outs with respect to one layer's activation.

Everything in Building Blocks is "activation x gradient" (Olah et al. 2018), so this module has
one job: for one image, take ``n`` objectives that are *linear read-outs* of a target tensor
(the logits, or a deeper layer's activation): ``objective_i = <V_i, target>`` (a class logit,
the sum of an upper position's channels, a direction at a position, a group's weighted
direction), and return ``d objective_i / d a`` for each, where ``a`` is a chosen layer's output.

How: one forward pass (batch 1) in which a forward hook replaces the layer's output by a
*leaf* tensor (detached, ``requires_grad``); then the backward pass from the target to the
leaf is run for all ``V_i`` at once with ``autograd.grad(..., is_grads_batched=True)``
(vmap over the backward; a plain loop if an operation has no batching rule). The part of the
network below the layer is neither run again nor differentiated. The leaf also makes this work
for frozen models (no parameter needs ``requires_grad``) and is immune to in-place operations
after the layer (they act on a clone). Hooks go through :mod:`generator.engine.hooks`, so they
are removed even on error.
"""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass
from typing import Callable, Dict, Iterator, Optional, Tuple

import torch
from torch import nn

from generator.engine.hooks import capture_activations, forward_hook, hooks_removed_after, run_until_stopped
from generator.engine.layers import get_layer, model_device

# readout(idx, shape) -> (len(idx), *shape): the weights V_i of objectives ``idx`` over the
# target (logits or the upper layer's activation) of one image, ``shape`` = target.shape[1:].
Readout = Callable[[torch.Tensor, Tuple[int, ...]], torch.Tensor]


def check_eval(model: nn.Module) -> None:
    """Batch rows must be independent (BatchNorm running statistics, no dropout)."""
    training = [name or type(model).__name__ for name, m in model.named_modules() if m.training]
    if training:
        raise ValueError(
            "Building Blocks needs the model in eval mode (call model.eval()); modules in training mode: "
            + ", ".join(training[:5])
            + (" ..." if len(training) > 5 else "")
        )


def as_batch(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """One image as a (1, C, H, W) float tensor on ``device``."""
    if x.dim() == 3:
        x = x.unsqueeze(0)
    if x.dim() != 4 or x.shape[0] != 1:
        raise ValueError(f"expected one image of shape (C, H, W) or (1, C, H, W), got {tuple(x.shape)}")
    return x.detach().to(device=device, dtype=torch.float32)


@contextlib.contextmanager
def full_fp32() -> Iterator[None]:
    """Plain fp32 convolutions and matmuls on CUDA for the duration (no TF32).

    cuDNN uses TF32 for fp32 convolutions by default; through a deep network that moves
    activation x gradient by up to ~20% (measured on tf_efficientnet_lite0 with random weights,
    H100: gradient error 6.6e-4 on a scale of 3.4e-3 with TF32, 2e-5 without) at no measurable
    speed gain for one image. The previous flags are restored on exit (process-wide flags:
    not for concurrent threads that want TF32).
    """
    cudnn, matmul = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = cudnn, matmul


@contextlib.contextmanager
def leaf_at(module: nn.Module) -> Iterator[Dict[str, torch.Tensor]]:
    """Replace ``module``'s output by a leaf tensor (stored as ``store["a"]``) during forward passes.

    Only the module's first call in a forward pass is replaced (a module reused later in the
    network keeps its ordinary output there); ``store`` is cleared by the caller between passes.
    """
    store: Dict[str, torch.Tensor] = {}

    def hook(_module: nn.Module, _inputs, output):
        if "a" in store:
            return None
        out = output[0] if isinstance(output, (tuple, list)) else output
        leaf = out.detach().requires_grad_(True)
        store["a"] = leaf
        # The network continues from a clone, so an in-place op downstream cannot touch the leaf.
        new = leaf.clone()
        if isinstance(output, tuple):
            return (new,) + tuple(output[1:])
        if isinstance(output, list):
            return [new] + list(output[1:])
        return new

    with hooks_removed_after() as handles:
        handles.append(forward_hook(module, hook))
        yield store


@dataclass
class LayerGradients:
    """Activation of a layer (``act``: the layer's output for the image, without the batch
    dimension), ``grads`` (n x act.shape): the gradient of objective ``i`` with respect to it,
    and ``values`` (n,): the objectives at the activation."""

    act: torch.Tensor
    grads: torch.Tensor
    values: torch.Tensor


def _batched_backward(target: torch.Tensor, leaf: torch.Tensor, V: torch.Tensor) -> torch.Tensor:
    global _VMAP_OK
    if _VMAP_OK:
        try:
            with warnings.catch_warnings():
                # vmap falls back to a loop (with a warning) for ops without a batching rule;
                # the result is the same, only slower.
                warnings.filterwarnings("ignore", message=".*performance drop.*")
                (g,) = torch.autograd.grad(target, leaf, grad_outputs=V.unsqueeze(1), retain_graph=True,
                                           is_grads_batched=True)
            return g[:, 0]
        except (RuntimeError, NotImplementedError) as err:
            if isinstance(err, _OOM):
                raise
            if "not have been used in the graph" in str(err):
                raise ValueError("the objectives do not depend on the layer (is it below the other one?)") from err
            _VMAP_OK = False
    return torch.stack([torch.autograd.grad(target, leaf, grad_outputs=v.unsqueeze(0), retain_graph=True)[0][0]
                        for v in V])


_VMAP_OK = True  # cleared once vmap over the backward fails; later calls loop
_OOM = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)  # torch < 2.5 has only the CUDA one


def layer_gradients(
    model: nn.Module,
    x: torch.Tensor,
    layer: str,
    readout: Readout,
    n: int,
    *,
    upper_layer: Optional[str] = None,
    batch_size: int = 64,
) -> LayerGradients:
    """Gradients of ``n`` linear read-outs with respect to the output of ``layer`` for one image.

    With ``upper_layer`` the read-outs weigh that layer's activation and the forward pass stops
    there; otherwise they weigh the model's output (logits). ``batch_size`` read-outs share one
    batched backward pass.
    """
    if n < 1:
        raise ValueError("need at least one objective")
    check_eval(model)
    device = model_device(model)
    x = as_batch(x, device)
    lower_mod = get_layer(model, layer)
    upper_mod = get_layer(model, upper_layer) if upper_layer is not None else None
    if upper_mod is lower_mod:
        raise ValueError(f"upper layer {upper_layer!r} is the lower layer itself")
    upper_ctx = (
        capture_activations(model, {"upper": upper_mod}, keep_graph=True, stop_after=["upper"])
        if upper_mod is not None
        else contextlib.nullcontext({})
    )
    where = f"layer {upper_layer!r}" if upper_layer else "the output"
    with full_fp32(), leaf_at(lower_mod) as leaf_store, upper_ctx as upper_store, torch.enable_grad():
        if upper_mod is not None:
            run_until_stopped(model, x)
            if "upper" not in upper_store:
                raise RuntimeError(f"layer {upper_layer!r} did not run in the forward pass")
            target = upper_store["upper"]
        else:
            target = model(x)
        if "a" not in leaf_store:
            raise ValueError(f"layer {layer!r} did not run before {where} (is it above it?)")
        leaf = leaf_store["a"]
        if not isinstance(target, torch.Tensor) or target.shape[0] != 1:
            raise ValueError(f"{where} is not a tensor with a batch dimension")
        if target.grad_fn is None:
            raise ValueError(f"{where} does not depend on layer {layer!r} (is it below it?)")
        shape = tuple(target.shape[1:])
        grads, values = [], []
        for start in range(0, n, max(1, batch_size)):
            idx = torch.arange(start, min(n, start + batch_size), device=device)
            V = readout(idx, shape).to(device=device, dtype=target.dtype)
            if V.shape != (len(idx),) + shape:
                raise ValueError(f"readout gave shape {tuple(V.shape)}, expected {(len(idx),) + shape}")
            values.append((V.float() * target.detach().float()).flatten(1).sum(1))
            grads.append(_batched_backward(target, leaf, V).detach())
    return LayerGradients(act=leaf[0].detach(), grads=torch.cat(grads), values=torch.cat(values))
