"""Token grids of vision transformers, inferred from the model's structure and one traced input.

A vision transformer cuts the image into patches (Dosovitskiy et al. 2021, "An Image is Worth
16x16 Words"), embeds each as a token and may put special tokens in front: a class token, a
distillation token (Touvron et al. 2021, "Training data-efficient image transformers"), register
tokens (Darcet et al. 2024, "Vision Transformers Need Registers"). Hierarchical models (Liu et al.
2021, "Swin Transformer") keep the tokens as a channels-last (B,H,W,C) map instead.

:func:`infer_token_layout` finds the patch embedding, the grid, the special tokens and the layout
from structure and one traced input, with no class-name branches; :func:`to_spatial` turns any
layer output into the (B,K,h,w) map that Grad-CAM and friends need. The record travels in the
:class:`~generator.models.spec.ModelSpec` as JSON, so the renderer can describe it without torch.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import torch
from torch import nn

from ..engine.hooks import hooks_removed_after

KINDS = ("tokens", "channels_last")
#: Words for special tokens, by what their parameter's name contains (first match wins). A token
#: whose role cannot be read from its name is called "special".
_PREFIX_WORDS = (("dist", "distillation"), ("reg", "register"), ("cls", "class"), ("class", "class"))
_NORMS = (nn.LayerNorm, nn.GroupNorm, nn.BatchNorm1d, nn.BatchNorm2d, nn.RMSNorm)


@dataclass(frozen=True)
class TokenLayout:
    """How a model's activations map onto the input's patch grid.

    ``kind``: "tokens" for (B,N,C) sequences, "channels_last" for (B,H,W,C) maps (Swin).
    ``grid``: (rows, columns) of patches at the traced input size; ``patch``: (height, width) of
    a patch in input pixels; ``prefix``: how many special tokens precede the patch tokens, named
    in ``prefix_names`` ("class", "distillation", "register", or "special" when unknown);
    ``patch_layer``: the module that embeds the patches; ``traced_hw``: the input size traced.
    """

    kind: str
    grid: Tuple[int, int]
    patch: Tuple[int, int]
    prefix: int = 0
    prefix_names: Tuple[str, ...] = ()
    patch_layer: str = ""
    traced_hw: Tuple[int, int] = (0, 0)

    def grid_for(self, input_hw: Sequence[int]) -> Tuple[int, int]:
        """The patch grid at another input size (patches that do not fit are dropped)."""
        return int(input_hw[0]) // self.patch[0], int(input_hw[1]) // self.patch[1]

    def to_json(self) -> Dict[str, Any]:
        return {"kind": self.kind, "grid": list(self.grid), "patch": list(self.patch), "prefix": self.prefix,
                "prefix_names": list(self.prefix_names), "patch_layer": self.patch_layer,
                "traced_hw": list(self.traced_hw)}

    @classmethod
    def from_json(cls, data: Optional[Dict[str, Any]]) -> Optional["TokenLayout"]:
        if not data:
            return None
        return cls(kind=str(data["kind"]), grid=_pair(data["grid"]), patch=_pair(data["patch"]),
                   prefix=int(data.get("prefix", 0)), prefix_names=tuple(str(n) for n in data.get("prefix_names", ())),
                   patch_layer=str(data.get("patch_layer", "")), traced_hw=_pair(data.get("traced_hw", (0, 0))))


def _pair(v: Any) -> Tuple[int, int]:
    a, b = (int(x) for x in v)
    return a, b


def _as_layout(layout: "TokenLayout | Dict[str, Any] | None") -> Optional[TokenLayout]:
    return TokenLayout.from_json(layout) if isinstance(layout, dict) else layout


# ---------------------------------------------------------------------------------------------
# inference


@dataclass
class _Call:
    name: str
    module: nn.Module
    entered: int  # order of entry (pre-hook)
    exited: int = -1  # order of exit (forward hook)
    in_shape: Optional[Tuple[int, ...]] = None
    out_shape: Optional[Tuple[int, ...]] = None


def _first_tensor(value: Any) -> Optional[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (tuple, list)):
        for v in value:
            found = _first_tensor(v)
            if found is not None:
                return found
    return None


@contextlib.contextmanager
def _restored(model: nn.Module) -> Iterator[None]:
    """Eval mode for the trace; every module's train flag restored afterwards, even on error."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, flag in flags:
            m.training = flag


def _example(model: nn.Module, input_size: Sequence[int]) -> torch.Tensor:
    """One input of ``input_size`` on the model's device, from a private generator (the global
    random state is left alone)."""
    param = next(iter(model.parameters()), None)
    device = param.device if param is not None else torch.device("cpu")
    g = torch.Generator(device="cpu").manual_seed(0)
    return torch.randn((1, *(int(v) for v in input_size)), generator=g).to(device)


def _trace(model: nn.Module, x: torch.Tensor) -> List[_Call]:
    """Every module call of one forward pass (no grad), in order of entry."""
    calls: List[_Call] = []
    open_calls: Dict[int, List[_Call]] = {}
    counter = [0]

    def pre(name: str) -> Callable[[nn.Module, Any], None]:
        def hook(module: nn.Module, inputs: Any) -> None:
            t = _first_tensor(inputs)
            call = _Call(name, module, counter[0], in_shape=tuple(t.shape) if t is not None else None)
            counter[0] += 1
            calls.append(call)
            open_calls.setdefault(id(module), []).append(call)
        return hook

    def post(_name: str) -> Callable[[nn.Module, Any, Any], None]:
        def hook(module: nn.Module, _inputs: Any, output: Any) -> None:
            stack = open_calls.get(id(module))
            if not stack:
                return
            call = stack.pop()
            t = _first_tensor(output)
            call.out_shape = tuple(t.shape) if t is not None else None
            call.exited = counter[0]
            counter[0] += 1
        return hook

    with hooks_removed_after() as handles, _restored(model), torch.no_grad():
        for name, module in model.named_modules():
            if name:
                handles.append(module.register_forward_pre_hook(pre(name)))
                handles.append(module.register_forward_hook(post(name)))
        model(x)
    return calls


def _patchify(module: nn.Module) -> bool:
    """A convolution that cuts its input into non-overlapping patches: stride equal to the
    kernel, larger than one, no padding."""
    if not isinstance(module, nn.Conv2d):
        return False
    k, s = tuple(module.kernel_size), tuple(module.stride)
    return k == s and max(k) > 1 and tuple(module.padding) in ((0, 0), "valid") and module.groups == 1


def _embedding_container(model: nn.Module, conv_name: str) -> str:
    """The outermost module around the patch convolution whose other parametrised layers are
    all normalisations (timm's ``PatchEmbed``, torchvision Swin's ``features.0``); the
    convolution itself when its parent holds more (torchvision ViT's ``conv_proj``)."""
    modules = dict(model.named_modules())
    chosen = conv_name
    parts = conv_name.split(".")
    for depth in range(len(parts) - 1, 0, -1):
        name = ".".join(parts[:depth])
        others = [m for n, m in modules[name].named_modules()
                  if n and f"{name}.{n}" != conv_name and next(iter(m.parameters(recurse=False)), None) is not None]
        if any(not isinstance(m, _NORMS) for m in others):
            break
        chosen = name
    return chosen


def _prefix_names(model: nn.Module, prefix: int, channels: int) -> Tuple[str, ...]:
    """Names of the ``prefix`` special tokens, read from the model's own token parameters
    ((1,k,C) tensors called ``cls_token``, ``dist_token``, ``reg_token`` ...), in the order they
    were registered (timm and torchvision concatenate them in that order). All "special" when the
    named parameters do not account for exactly ``prefix`` tokens."""
    if prefix == 0:
        return ()
    names: List[str] = []
    for pname, p in model.named_parameters():
        leaf = pname.rsplit(".", 1)[-1].lower()
        if p.dim() != 3 or p.shape[0] != 1 or p.shape[2] != channels or "token" not in leaf:
            continue
        word = next((w for key, w in _PREFIX_WORDS if key in leaf), None)
        if word is not None:
            names.extend([word] * int(p.shape[1]))
    return tuple(names) if len(names) == prefix else ("special",) * prefix


def infer_token_layout(model: nn.Module, input_size: Sequence[int]) -> Optional[TokenLayout]:
    """The token layout of ``model`` at ``input_size`` (C,H,W), or None for a CNN.

    The patch embedding is the first convolution called whose stride equals its kernel size
    (> 1, no padding): its stride is the patch, its output's spatial size the grid. The module
    that embeds the patches is the outermost one around it holding nothing else but
    normalisations. What the network does next decides the layout: the first module called after
    the embedding receives a (B,N,C) sequence with N >= h*w (``tokens``; the N - h*w tokens in
    front are the special tokens), a (B,h,w,C) map (``channels_last``), or a (B,C,h,w) map (a
    CNN with a patchify stem, like ConvNeXt: None). One traced input; the hooks are removed and
    the train flags restored even on error, and the weights are not touched.
    """
    if not any(_patchify(m) for m in model.modules()):
        return None  # no trace needed: ResNets, EfficientNets, VGGs ...
    H, W = int(input_size[1]), int(input_size[2])
    calls = _trace(model, _example(model, input_size))
    conv = next((c for c in calls if _patchify(c.module) and c.out_shape and len(c.out_shape) == 4), None)
    if conv is None or conv.out_shape is None:
        return None
    _, channels, h, w = conv.out_shape
    embed = _embedding_container(model, conv.name)
    embed_call = next(c for c in calls if c.name == embed)
    after = next((c for c in calls if c.entered > embed_call.exited and c.in_shape), None)
    if after is None or after.in_shape is None:
        return None
    shape = after.in_shape
    patch = _pair(conv.module.stride)
    if len(shape) == 3 and shape[2] == channels and h * w <= shape[1] < 2 * h * w:
        prefix = shape[1] - h * w
        return TokenLayout("tokens", (h, w), patch, prefix, _prefix_names(model, prefix, channels), embed, (H, W))
    if len(shape) == 4 and tuple(shape[1:]) == (h, w, channels):
        return TokenLayout("channels_last", (h, w), patch, 0, (), embed, (H, W))
    return None


# ---------------------------------------------------------------------------------------------
# layer outputs as spatial maps


def fits(h: int, w: int, input_hw: Sequence[int]) -> bool:
    """Whether an (h, w) grid is the input's (H, W) cut with one stride: some s with h and w
    each the floor or ceiling of H/s and W/s (patches dropped or padded at the border)."""
    H, W = float(input_hw[0]), float(input_hw[1])
    if not (0 < h <= H and 0 < w <= W):
        return False
    low = max(H / (h + 1), W / (w + 1))
    high = min(H / (h - 1) if h > 1 else math.inf, W / (w - 1) if w > 1 else math.inf)
    return low < high


def _grid_of(count: int, input_hw: Sequence[int]) -> Optional[Tuple[int, int]]:
    """The (h, w) with h*w == ``count`` that fits the input's aspect best, or None."""
    H, W = float(input_hw[0]), float(input_hw[1])
    best = None
    for h in range(1, count + 1):
        if count % h:
            continue
        w = count // h
        if fits(h, w, input_hw):
            off = abs(math.log((h / w) / (H / W)))
            if best is None or off < best[0]:
                best = (off, (h, w))
    return best[1] if best else None


def _token_grid(n: int, lay: Optional[TokenLayout], hw: Tuple[int, int]) -> Optional[Tuple[int, Tuple[int, int]]]:
    """(special tokens in front, (h, w)) of a sequence of ``n`` tokens, or None.

    With a layout: the special tokens then the patch grid at this input size; the patch grid
    alone (the patch embedding's output, before the special tokens are added); else the grid
    of the n - prefix (or n) tokens that fits the input's aspect best (a coarser Swin stage).
    Without one: the fewest leading tokens that leave a grid of exactly the input's aspect.
    """
    if lay is not None:
        prefix = lay.prefix if lay.kind == "tokens" else 0
        grid = lay.grid_for(hw)
        for p in dict.fromkeys((prefix, 0)):
            if n - p == grid[0] * grid[1]:
                return p, grid
        for p in dict.fromkeys((prefix, 0)):
            found = _grid_of(n - p, hw) if n > p else None
            if found is not None:
                return p, found
        return None
    for p in range(0, min(n, _MAX_GUESSED_PREFIX + 1)):
        found = _grid_of(n - p, hw)
        if found is not None and found[0] * hw[1] == found[1] * hw[0]:
            return p, found
    return None


#: Without a layout, how many leading tokens may be special (DINOv2 with registers has 5).
_MAX_GUESSED_PREFIX = 16


def to_spatial(t: torch.Tensor, layout: "TokenLayout | Dict[str, Any] | None",
               input_hw: Sequence[int]) -> torch.Tensor:
    """A layer output as a (B,K,h,w) map: a slice, view and permutation of ``t`` (so it is
    differentiable, and a gradient of the same shape maps the same way).

    * (B,C,h,w) channels-first: unchanged (a CNN's maps, torchvision ViT's ``conv_proj``).
    * (B,H,W,C) channels-last (Swin): permuted; recognised when the layout says so, or, without
      one, when only the middle two dimensions fit the input's grid.
    * (B,N,C) tokens: the special tokens in front dropped (``layout.prefix``; without a layout,
      the fewest leading tokens that leave a grid fitting the input), the rest reshaped row by
      row to an (h, w) grid following the input's aspect (a Swin stage has a coarser grid than
      the patches, derived from N).

    Raises ValueError naming the shape when no grid fits.
    """
    lay = _as_layout(layout)
    hw = (int(input_hw[0]), int(input_hw[1]))
    if t.dim() == 4:
        first, last = fits(t.shape[2], t.shape[3], hw), fits(t.shape[1], t.shape[2], hw)
        if lay is not None and lay.kind == "channels_last":
            if last:
                return t.permute(0, 3, 1, 2)
            if first:
                return t
        elif first or not last:
            # A channels-first map passes unchanged (bit-identical CNN behaviour), also when its
            # grid is unusual; only a map whose middle dimensions alone fit is taken for (B,H,W,C).
            return t
        else:
            return t.permute(0, 3, 1, 2)
        raise ValueError(f"layer output of shape {tuple(t.shape)} is no (B,H,W,C) map of a {hw[0]}x{hw[1]} input")
    if t.dim() == 3:
        n = int(t.shape[1])
        found = _token_grid(n, lay, hw)
        if found is not None:
            prefix, (h, w) = found
            b, _, c = t.shape
            return t[:, prefix:, :].reshape(b, h, w, c).permute(0, 3, 1, 2)
        said = f"{lay.prefix} special token(s)" if lay is not None else "any number of special tokens"
        raise ValueError(f"layer output of shape {tuple(t.shape)} is no token sequence of a {hw[0]}x{hw[1]} input "
                         f"({said} in front, then a grid of patches)")
    raise ValueError(f"layer output of shape {tuple(t.shape)} is not spatial: a (B,C,h,w) map, a (B,H,W,C) map or "
                     "a (B,N,C) token sequence is needed")


# ---------------------------------------------------------------------------------------------
# the default CAM layer of a token model


def token_cam_layer(model: nn.Module, layout: "TokenLayout | Dict[str, Any]", input_size: Sequence[int],
                    stages: Sequence[str], readout: Optional[str] = None) -> Optional[str]:
    """The default Grad-CAM layer of a model with a token grid, checked on one traced input.

    Grad-CAM needs a layer whose patch positions receive gradient from the class score. The
    deepest stage output (``stages[-1]``) is used when they do: average-pooled models (Swin, a
    ViT with ``global_pool='avg'``). A class-token-pooled ViT reads only the class token after
    its last block, and what follows the last attention (the MLP, the final norm) works token
    by token, so the patch tokens of the last block's output get exactly zero gradient and
    Grad-CAM there is empty. The last place where patch tokens still reach the class token is the
    input of the last attention: the deepest normalisation whose patch positions receive gradient
    is chosen then (the last block's first norm). None when neither exists.

    "Receives gradient" is judged from a fixed random projection of the input of ``readout``
    (the classifier layer) rather than from the logits: a freshly built torchvision ViT has a
    zero-initialised head, whose logits send no gradient anywhere. Hooks are removed and train
    flags restored even on error; parameters' gradients are not touched.
    """
    lay = _as_layout(layout)
    hw = (int(input_size[1]), int(input_size[2]))
    modules = dict(model.named_modules())
    wanted = [s for s in stages[-1:] if s in modules]
    wanted += [n for n, m in modules.items() if n and isinstance(m, _NORMS)]
    outputs: Dict[str, torch.Tensor] = {}

    def keep(name: str) -> Callable[[nn.Module, Any, Any], None]:
        def hook(_m: nn.Module, _inputs: Any, output: Any) -> None:
            t = _first_tensor(output)
            if t is not None and t.requires_grad:
                outputs[name] = t  # the last call wins: a module used twice is read at its last use
        return hook

    read: Dict[str, torch.Tensor] = {}

    def features(_m: nn.Module, inputs: Any) -> None:
        t = _first_tensor(inputs)
        if t is not None:
            read["x"] = t

    x = _example(model, input_size).requires_grad_(True)
    with hooks_removed_after() as handles, _restored(model), torch.enable_grad():
        for name in dict.fromkeys(wanted):
            handles.append(modules[name].register_forward_hook(keep(name)))
        if readout in modules:
            handles.append(modules[readout].register_forward_pre_hook(features))
        out = _first_tensor(model(x))
        out = read.get("x", out)
        if out is None or not outputs:
            return None
        # A random projection, not a plain sum: a LayerNorm's output sums to its bias whatever
        # its input, so a sum would hide the gradient the projection reveals.
        seeded = torch.Generator(device="cpu").manual_seed(1)
        weights = torch.randn(tuple(out.shape[1:]), generator=seeded).to(out.device)
        names = list(outputs)
        grads = torch.autograd.grad((out.float() * weights).sum(), [outputs[n] for n in names], allow_unused=True)
    reached = {}
    for name, g in zip(names, grads):
        try:
            spatial = to_spatial(g, lay, hw) if g is not None else None
        except ValueError:
            continue
        reached[name] = spatial is not None and bool(spatial.abs().sum() > 0)
    if wanted[:1] and reached.get(wanted[0]):
        return wanted[0]
    order = [n for n in modules if n in reached]  # registration order: shallow to deep
    deepest = [n for n in order if reached[n] and isinstance(modules[n], _NORMS)]
    return deepest[-1] if deepest else None
