"""Batching and precision shared by every attribution method.

Work is a flat list of items (image x step x noise sample ...); :func:`run_chunked` feeds it
through the network in chunks of at most ``max_batch`` items and halves the chunk size when
the GPU runs out of memory, so a method never fails for lack of memory, only slows down.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator, Optional, Tuple

import torch
from torch import nn

PRECISIONS = ("fp32", "bf16")

#: Forward-only CUDA batches (occlusion, deletion/insertion curves) go through the network in
#: channels-last layout: cuDNN's tensor-core convolutions are NHWC-native, and on an H100 a
#: bf16 ResNet-50 forward ran 9,500 img/s from NCHW input and 13,100 from channels-last.
#: Backward passes keep NCHW: there channels-last was slower (4,200 -> 3,250 img/s), so
#: :func:`input_gradient` does not use it. Only the input's strides change, never the user's
#: model. Benchmarks switch it off to measure the difference.
CHANNELS_LAST_ON_CUDA = True


def fast_layout(x: torch.Tensor) -> torch.Tensor:
    """``x`` in the layout a forward-only pass runs fastest in (channels-last on CUDA)."""
    if CHANNELS_LAST_ON_CUDA and x.is_cuda and x.dim() == 4:
        return x.contiguous(memory_format=torch.channels_last)
    return x


def autocast_for(device: torch.device, precision: str):
    """The autocast context for ``precision`` ('fp32': none; 'bf16': bfloat16 autocast)."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {PRECISIONS}")
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)


def _is_oom(exc: BaseException) -> bool:
    if isinstance(exc, getattr(torch.cuda, "OutOfMemoryError", ())):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc)


def run_chunked(n: int, max_batch: int, fn: Callable[[int, int], None], *, min_batch: int = 1) -> int:
    """Call ``fn(start, stop)`` over ``range(n)`` in chunks; on out-of-memory halve the chunk.

    Returns the chunk size that worked last (callers may keep it for the next call).
    """
    size = max(1, int(max_batch))
    start = 0
    while start < n:
        stop = min(n, start + size)
        try:
            fn(start, stop)
        except Exception as exc:  # noqa: BLE001 - only OOM is handled, everything else re-raised
            if not _is_oom(exc) or size <= min_batch:
                raise
            del exc
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            size = max(min_batch, size // 2)
            continue
        start = stop
    return size


def select_target(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``logits[i, target[i]]`` for every row (float32)."""
    return logits.float().gather(1, target.view(-1, 1).long()).squeeze(1)


def as_target_tensor(target, batch: int, device: torch.device) -> torch.Tensor:
    """A (B,) long tensor from an int, a sequence or a tensor (one target per image)."""
    if isinstance(target, torch.Tensor):
        t = target.to(device=device, dtype=torch.long).view(-1)
    elif isinstance(target, int):
        t = torch.full((batch,), int(target), dtype=torch.long, device=device)
    else:
        t = torch.as_tensor(list(target), dtype=torch.long, device=device).view(-1)
    if t.numel() == 1 and batch != 1:
        t = t.expand(batch).clone()
    if t.numel() != batch:
        raise ValueError(f"got {t.numel()} targets for a batch of {batch} images")
    return t


def input_gradient(
    model: nn.Module,
    x: torch.Tensor,
    target: torch.Tensor,
    precision: str = "fp32",
    grad_seed: Optional[Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = None,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Gradient of the target logit of every row with respect to its input; also the logits.

    ``grad_seed(logits, target)`` may replace the one-hot seed of the backward pass (LRP seeds
    it with the target logit). Gradients come back in float32.
    """
    xg = x.detach().requires_grad_(True)
    with torch.enable_grad():
        with autocast_for(x.device, precision):
            logits = model(xg)
        logits = logits.float()
        if grad_seed is None:
            seed = torch.zeros_like(logits)
            seed.scatter_(1, target.view(-1, 1), 1.0)
        else:
            seed = grad_seed(logits.detach(), target)
        (grad,) = torch.autograd.grad(logits, xg, seed)
    return grad.float(), logits.detach()


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """The model in eval mode for the block; the training flags of all modules restored."""
    flags = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        yield
    finally:
        for m, flag in flags:
            m.training = flag
