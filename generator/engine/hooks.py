"""Hooks that are always removed.

Every forward/backward hook the project installs goes through these context managers, so
that an exception inside a method can never leave a hook behind: the user's model behaves
exactly as before once the ``with`` block ends (tests check outputs are bit-identical).

A TorchScript module runs its own interpreter and refuses hooks. :func:`forward_hook` (and
:func:`capture_activations`, which uses it) raise :class:`~generator.capability.Unsupported`
with one clear reason instead, before any hook is attached, so the run lists such work as not
applicable rather than as a failure per unit; :func:`script_hook_refusal` turns torch's own
refusal (raised by code that attaches hooks directly) into the same reason.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence

import torch
from torch import nn

from generator.capability import Unsupported

#: What needs hooks, named in the reason when the caller does not say more.
HOOKED_WORK = ("the methods that read or change a layer's activations (CAM methods, feature visualisation, "
               "Building Blocks, dataset examples, data embeddings)")


def torchscript_reason(what: str = HOOKED_WORK) -> str:
    """The one-line reason work that needs hooks is not applicable to a TorchScript module."""
    return (f"hooks cannot be attached inside a TorchScript module; load the model from its Python code "
            f"(a `python:` source) to get {what}")


def refuse_script(module: nn.Module, what: str = HOOKED_WORK) -> None:
    """Raise :class:`Unsupported` when ``module`` is (inside) TorchScript, where hooks cannot go."""
    if isinstance(module, torch.jit.ScriptModule):
        raise Unsupported(torchscript_reason(what))


def forward_hook(module: nn.Module, hook: Callable[..., Any], *, what: str = HOOKED_WORK,
                 **kwargs: Any) -> torch.utils.hooks.RemovableHandle:
    """``module.register_forward_hook(hook, **kwargs)``, or :class:`Unsupported` on TorchScript."""
    refuse_script(module, what)
    return module.register_forward_hook(hook, **kwargs)


def script_hook_refusal(exc: BaseException) -> Optional[Unsupported]:
    """:class:`Unsupported` with :func:`torchscript_reason` when ``exc`` is torch refusing a hook
    on a ScriptModule (``register_forward_hook is not supported on ScriptModules``), else None."""
    if isinstance(exc, RuntimeError):
        text = str(exc)
        if text.startswith("register_") and "hook" in text.split(" ", 1)[0] \
                and text.endswith(" is not supported on ScriptModules"):
            return Unsupported(torchscript_reason())
    return None


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
    through :func:`run_until_stopped` in that case. A TorchScript layer raises
    :class:`Unsupported` before any hook is attached.
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

    for module in layers.values():
        refuse_script(module)  # all checked first: nothing is attached when one layer refuses
    with hooks_removed_after() as handles:
        for name, module in layers.items():
            handles.append(forward_hook(module, make_hook(name)))
        yield store


def run_until_stopped(model: nn.Module, x: torch.Tensor) -> None:
    """Run ``model(x)`` and swallow the :class:`StopForward` that ends it early."""
    try:
        model(x)
    except StopForward:
        pass
