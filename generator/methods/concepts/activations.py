"""Layer activations and per-image logit gradients at layers, batched, hooks always removed.

Every concept method reads a model at one or more layers: the activations of images there
(CAVs, RCVs, dissection) and the gradient of a class logit with respect to them (TCAV scores,
RCV sensitivities). Both go through :func:`generator.engine.hooks.capture_activations`, so no
hook outlives a call, and the model runs in eval mode with its training flags restored
(:func:`generator.engine.batching.eval_mode`). Forward passes stop after the deepest requested
layer when no logits are needed.
"""

from __future__ import annotations

from typing import Callable, Dict, Iterator, List, Optional, Sequence

import torch
from torch import nn

from generator.engine.batching import eval_mode
from generator.engine.hooks import capture_activations, run_until_stopped
from generator.engine.layers import get_layer

#: Turns a layer's raw output into the activation the methods read (e.g. token grids into maps).
Adapter = Callable[[torch.Tensor], torch.Tensor]


def _modules(model: nn.Module, layers: Sequence[str]) -> Dict[str, nn.Module]:
    return {name: get_layer(model, name) for name in layers}


def iter_activations(model: nn.Module, layers: Sequence[str], inputs: Sequence[torch.Tensor] | torch.Tensor,
                     *, batch: int = 64, device: Optional[torch.device] = None,
                     adapter: Optional[Adapter] = None) -> Iterator[Dict[str, torch.Tensor]]:
    """Yield ``layer -> activations`` (float32, on ``device``) batch by batch; ``inputs`` is a
    tensor ``N x C x H x W`` or an iterable of such batches. No gradients are kept."""
    device = device or next(model.parameters()).device
    chunks = ([inputs[i:i + batch] for i in range(0, len(inputs), batch)] if isinstance(inputs, torch.Tensor)
              else inputs)
    with eval_mode(model), torch.no_grad(), \
            capture_activations(model, _modules(model, layers), stop_after=list(layers)) as store:
        for x in chunks:
            store.clear()
            run_until_stopped(model, x.to(device))
            yield {name: (adapter(store[name]) if adapter else store[name]).float() for name in layers}


def layer_activations(model: nn.Module, layers: Sequence[str], x: torch.Tensor, *, batch: int = 64,
                      adapter: Optional[Adapter] = None) -> Dict[str, torch.Tensor]:
    """``layer -> N x ...`` activations of all of ``x`` (concatenated on the model's device)."""
    parts: Dict[str, List[torch.Tensor]] = {name: [] for name in layers}
    for acts in iter_activations(model, layers, x, batch=batch, adapter=adapter):
        for name in layers:
            parts[name].append(acts[name])
    return {name: torch.cat(v) for name, v in parts.items()}


def logit_gradients(model: nn.Module, layers: Sequence[str], x: torch.Tensor, classes: Sequence[int],
                    *, batch: int = 32, adapter: Optional[Adapter] = None) -> Dict[str, torch.Tensor]:
    """``layer -> K x N x D``: for every image of ``x`` and every class of ``classes``, the
    gradient of the class logit with respect to the layer's (flattened) activation.

    One forward pass per batch, then one backward pass per class with the graph kept, reading
    the gradients at every layer at once. The logit of image i depends on image i only (eval
    mode), so the gradient of the batch's summed logit is each image's own gradient.
    """
    device = next(model.parameters()).device
    out: Dict[str, List[List[torch.Tensor]]] = {name: [[] for _ in classes] for name in layers}
    with eval_mode(model), torch.enable_grad(), \
            capture_activations(model, _modules(model, layers), keep_graph=True) as store:
        for i in range(0, len(x), batch):
            store.clear()
            # the input needs a gradient: a model loaded with frozen parameters has no graph otherwise
            xb = x[i:i + batch].to(device).detach().requires_grad_(True)
            logits = model(xb).float()
            acts = [store[name] for name in layers]
            for k, c in enumerate(classes):
                grads = torch.autograd.grad(logits[:, int(c)].sum(), acts, retain_graph=k + 1 < len(classes))
                for name, g in zip(layers, grads):
                    g = adapter(g) if adapter else g
                    out[name][k].append(g.detach().float().reshape(len(xb), -1))
            del logits, acts
    return {name: torch.stack([torch.cat(parts) for parts in per_class]) for name, per_class in out.items()}
