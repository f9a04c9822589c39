"""Canonizers: reversible rewrites that put a model into the form modified-backprop rules need.

* :class:`BatchNormFolder` folds every eval-mode BatchNorm into the convolution or linear layer
  that feeds it (found by running one example through the model and matching tensors, so no
  architecture is named), and makes the BatchNorm an identity (keeping any activation that
  timm's ``BatchNormAct2d`` applies after the normalisation).
* :class:`ResidualCanonizer` rewrites the forward of known residual blocks so that the skip
  connection goes through an explicit :class:`ResidualAdd` module, to which a rule can attach
  (LRP splits relevance between the two summands in proportion to their contribution).

Both keep the original parameter objects and restore them, so after :func:`canonized` the
model's parameters, buffers and outputs are bit-identical to before, even after an exception.
"""

from __future__ import annotations

import contextlib
import types
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Type

import torch
from torch import nn

from .hooks import hooks_removed_after

_BN = nn.modules.batchnorm._BatchNorm
_FOLD_INTO = (nn.modules.conv._ConvNd, nn.Linear)


class Canonizer:
    def apply(self, model: nn.Module, example: Optional[torch.Tensor]) -> None:
        raise NotImplementedError

    def remove(self) -> None:
        raise NotImplementedError


class ResidualAdd(nn.Module):
    """``a + b`` as a module, so a rule can be attached to the skip connection's sum."""

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a + b


def _identity_forward(self, x):
    return x


def _act_only_forward(self, x):
    # timm's BatchNormAct2d: normalisation, then drop, then act; only the latter two remain.
    drop = getattr(self, "drop", None)
    if drop is not None:
        x = drop(x)
    return self.act(x)


class BatchNormFolder(Canonizer):
    """Fold eval-mode BatchNorm layers into the preceding conv/linear layer, reversibly."""

    def __init__(self) -> None:
        self._params: List[Tuple[nn.Module, str, Optional[nn.Parameter]]] = []
        self._norms: List[nn.Module] = []
        self.pairs: List[Tuple[nn.Module, nn.Module]] = []

    @staticmethod
    def find_pairs(model: nn.Module, example: torch.Tensor) -> List[Tuple[nn.Module, nn.Module]]:
        """(layer, norm) pairs where ``norm`` directly consumes the output of ``layer``."""
        produced: Dict[int, Tuple[nn.Module, torch.Tensor]] = {}
        pairs: List[Tuple[nn.Module, nn.Module]] = []
        seen = set()

        def out_hook(module, _inputs, output):
            if isinstance(output, torch.Tensor):
                produced[id(output)] = (module, output)  # keep the tensor alive: ids stay unique

        def norm_pre_hook(module, inputs):
            if not inputs:
                return
            hit = produced.get(id(inputs[0]))
            if hit is not None and hit[1] is inputs[0] and id(module) not in seen:
                seen.add(id(module))
                pairs.append((hit[0], module))

        with hooks_removed_after() as handles:
            for module in model.modules():
                if isinstance(module, _FOLD_INTO):
                    handles.append(module.register_forward_hook(out_hook))
                elif isinstance(module, _BN):
                    handles.append(module.register_forward_pre_hook(norm_pre_hook))
            with torch.no_grad():
                model(example)
        # A layer feeding two norms, or a norm fed by two layers, cannot be folded.
        layer_count: Dict[int, int] = {}
        for layer, _ in pairs:
            layer_count[id(layer)] = layer_count.get(id(layer), 0) + 1
        return [(l, n) for l, n in pairs if layer_count[id(l)] == 1]

    def apply(self, model: nn.Module, example: Optional[torch.Tensor]) -> None:
        if example is None:
            raise ValueError("BatchNormFolder needs an example input to find conv -> norm pairs")
        self.pairs = self.find_pairs(model, example[:1])
        try:
            for layer, norm in self.pairs:
                if norm.training:
                    raise RuntimeError("BatchNorm folding needs the model in eval mode (call model.eval())")
                if not norm.track_running_stats or norm.running_var is None:
                    continue
                self._fold(layer, norm)
        except Exception:
            self.remove()
            raise

    def _fold(self, layer: nn.Module, norm: nn.Module) -> None:
        with torch.no_grad():
            w = layer.weight
            scale = torch.rsqrt(norm.running_var.double() + norm.eps)
            gamma = norm.weight.double() if norm.weight is not None else torch.ones_like(scale)
            beta = norm.bias.double() if norm.bias is not None else torch.zeros_like(scale)
            factor = gamma * scale
            shape = (-1,) + (1,) * (w.dim() - 1)
            if isinstance(layer, nn.modules.conv._ConvTransposeNd):
                return  # output channels sit on dim 1 there; not folded
            new_w = (w.double() * factor.view(shape)).to(w.dtype)
            b = layer.bias.double() if layer.bias is not None else torch.zeros_like(scale)
            new_b = ((b - norm.running_mean.double()) * factor + beta).to(w.dtype)
        self._params.append((layer, "weight", layer._parameters["weight"]))
        self._params.append((layer, "bias", layer._parameters.get("bias")))
        layer._parameters["weight"] = nn.Parameter(new_w, requires_grad=False)
        layer._parameters["bias"] = nn.Parameter(new_b, requires_grad=False)
        forward = _act_only_forward if hasattr(norm, "act") else _identity_forward
        norm.forward = types.MethodType(forward, norm)
        self._norms.append(norm)

    @property
    def folded(self) -> List[nn.Module]:
        """The norms currently folded away."""
        return list(self._norms)

    def remove(self) -> None:
        for module, name, param in reversed(self._params):
            module._parameters[name] = param
        self._params.clear()
        for norm in self._norms:
            norm.__dict__.pop("forward", None)
        self._norms.clear()


# --------------------------------------------------------------------------- residual blocks

def _tv_basic_forward(self, x):
    identity = x
    out = self.relu(self.bn1(self.conv1(x)))
    out = self.bn2(self.conv2(out))
    if self.downsample is not None:
        identity = self.downsample(x)
    out = self.mc_residual_add(out, identity)
    return self.relu(out)


def _tv_bottleneck_forward(self, x):
    identity = x
    out = self.relu(self.bn1(self.conv1(x)))
    out = self.relu(self.bn2(self.conv2(out)))
    out = self.bn3(self.conv3(out))
    if self.downsample is not None:
        identity = self.downsample(x)
    out = self.mc_residual_add(out, identity)
    return self.relu(out)


def _opt(self, name):
    return getattr(self, name, None)


def _timm_ds_forward(self, x):
    shortcut = x
    if _opt(self, "conv_s2d") is not None:
        x = self.bn_s2d(self.conv_s2d(x))
    x = self.bn1(self.conv_dw(x))
    for name in ("aa", "se"):
        if _opt(self, name) is not None:
            x = getattr(self, name)(x)
    x = self.bn2(self.conv_pw(x))
    if self.has_skip:
        x = self.mc_residual_add(self.drop_path(x), shortcut)
    return x


def _timm_ir_forward(self, x):
    shortcut = x
    if _opt(self, "conv_s2d") is not None:
        x = self.bn_s2d(self.conv_s2d(x))
    x = self.bn1(self.conv_pw(x))
    x = self.bn2(self.conv_dw(x))
    for name in ("aa", "se"):
        if _opt(self, name) is not None:
            x = getattr(self, name)(x)
    x = self.bn3(self.conv_pwl(x))
    if self.has_skip:
        x = self.mc_residual_add(self.drop_path(x), shortcut)
    return x


def _known_residual_blocks() -> Dict[Type[nn.Module], Callable]:
    table: Dict[Type[nn.Module], Callable] = {}
    try:
        from torchvision.models import resnet

        table[resnet.BasicBlock] = _tv_basic_forward
        table[resnet.Bottleneck] = _tv_bottleneck_forward
    except Exception:  # pragma: no cover - torchvision is a dependency
        pass
    try:
        from timm.models import _efficientnet_blocks as eb

        table[eb.DepthwiseSeparableConv] = _timm_ds_forward
        table[eb.InvertedResidual] = _timm_ir_forward
    except Exception:  # pragma: no cover - older/newer timm layout
        pass
    return table


#: Block type -> forward that routes the skip connection through ``self.mc_residual_add``.
#: Extend it for other architectures; subclasses are not matched (their forward may differ).
RESIDUAL_BLOCKS: Dict[Type[nn.Module], Callable] = _known_residual_blocks()


class ResidualCanonizer(Canonizer):
    """Route the skip connections of known residual blocks through :class:`ResidualAdd`."""

    def __init__(self, blocks: Optional[Dict[Type[nn.Module], Callable]] = None) -> None:
        self.blocks = RESIDUAL_BLOCKS if blocks is None else blocks
        self._patched: List[nn.Module] = []

    def apply(self, model: nn.Module, example: Optional[torch.Tensor]) -> None:
        for module in model.modules():
            forward = self.blocks.get(type(module))
            if forward is None:
                continue
            module.add_module("mc_residual_add", ResidualAdd())
            module.forward = types.MethodType(forward, module)
            self._patched.append(module)

    def remove(self) -> None:
        for module in self._patched:
            module.__dict__.pop("forward", None)
            module._modules.pop("mc_residual_add", None)
        self._patched.clear()


@contextlib.contextmanager
def canonized(
    model: nn.Module, canonizers: Sequence[Canonizer], example: Optional[torch.Tensor] = None
) -> Iterator[nn.Module]:
    """Apply ``canonizers`` in order for the duration of the block; undone in reverse order."""
    applied: List[Canonizer] = []
    try:
        for canonizer in canonizers:
            applied.append(canonizer)  # before apply: a half-applied canonizer is undone too
            canonizer.apply(model, example)
        yield model
    finally:
        for canonizer in reversed(applied):
            canonizer.remove()
