"""Hooks that are always removed.

Every forward/backward hook the project installs goes through these context managers, so
that an exception inside a method can never leave a hook behind: the user's model behaves
exactly as before once the ``with`` block ends (tests check outputs are bit-identical).
"""

from __future__ import annotations

import contextlib
from typing import Callable, Dict, Iterator, List, Sequence

import torch
from torch import nn


@contextlib.contextmanager
def hooks_removed_after() -> Iterator[List[torch.utils.hooks.RemovableHandle]]:
    """Yield a list to append hook handles to; every handle is removed on exit."""
    handles: List[torch.utils.hooks.RemovableHandle] = []
    try:
        yield handles
    finally:
        for handle in handles:
            handle.remove()


class StopForward(Exception):
    """Raised by a hook to end a forward pass once the deepest needed layer has run."""


@contextlib.contextmanager
def capture_activations(
    model: nn.Module,
    layers: Dict[str, nn.Module],
    *,
    keep_graph: bool = False,
    stop_after: Sequence[str] = (),
) -> Iterator[Dict[str, torch.Tensor]]:
    """Record the outputs of ``layers`` (name -> module) during forward passes.

    ``keep_graph`` keeps the autograd graph (for gradients with respect to activations);
    otherwise activations are detached. ``stop_after`` names layers after which the forward
    pass is cut short with :class:`StopForward` once all of them have produced output, so a
    method that needs only early layers does not pay for the whole network; call the model
    through :func:`run_until_stopped` in that case.
    """
    store: Dict[str, torch.Tensor] = {}
    pending = set(stop_after)

    def make_hook(name: str) -> Callable:
        def hook(_module: nn.Module, _inputs, output):
            out = output[0] if isinstance(output, (tuple, list)) else output
            store[name] = out if keep_graph else out.detach()
            if pending:
                pending.discard(name)
                if not pending:
                    pending.update(stop_after)  # re-arm for the next forward pass
                    raise StopForward()

        return hook

    with hooks_removed_after() as handles:
        for name, module in layers.items():
            handles.append(module.register_forward_hook(make_hook(name)))
        yield store


def run_until_stopped(model: nn.Module, x: torch.Tensor) -> None:
    """Run ``model(x)`` and swallow the :class:`StopForward` that ends it early."""
    try:
        model(x)
    except StopForward:
        pass
