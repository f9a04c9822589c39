"""Feature-visualisation objectives that compose with ``+ - *`` and describe themselves.

After Lucid's ``optvis.objectives`` (Olah et al., "Feature Visualization", Distill 2017).
An :class:`Objective` maps the activations of one forward pass to **one value per image**
(shape ``(N,)``); the render loop maximises their sum. Two kinds exist:

* *broadcast* objectives (``batch_size is None``) apply the same goal to every image;
* *batched* objectives (``batch_size == K``) give image ``i`` its own goal, e.g.
  ``channel("layer3", [0, 1, ..., 1023])`` is 1024 objectives evaluated by one gather, so a
  whole layer renders in a few large batches. ``slice(start, stop)`` cuts them into chunks.

Values are per image and summed (never averaged over the batch), so an image's gradient does
not depend on which other images share its batch; with per-image seeds this makes batched
and one-at-a-time renders agree.
"""

from __future__ import annotations

from typing import Callable, Dict, FrozenSet, Optional, Sequence, Union

import torch

OUTPUT = "<output>"  # pseudo-layer name: the model's output (logits)

Acts = Dict[str, torch.Tensor]
Number = Union[int, float]


def _fmt(x: Number) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


def _fmt_list(values: Sequence) -> str:
    vals = list(values)
    if len(vals) > 2 and all(isinstance(v, int) for v in vals) and vals == list(range(vals[0], vals[0] + len(vals))):
        return f"{vals[0]}…{vals[-1]}"
    if len(vals) <= 6:
        return ", ".join(str(v) for v in vals)
    return ", ".join(str(v) for v in vals[:3]) + ", …, " + str(vals[-1])


def _layer_label(layer: str) -> str:
    return "output" if layer == OUTPUT else layer


class Objective:
    """A goal to maximise: ``fn(acts) -> (N,)`` plus the layers it reads and a description.

    ``describe(i)`` is the readable goal of image ``i`` (what the site shows under it);
    ``description`` is the goal of the whole objective.
    """

    def __init__(
        self,
        fn: Callable[[Acts], torch.Tensor],
        layers: Sequence[str],
        description: str,
        *,
        batch_size: Optional[int] = None,
        slicer: Optional[Callable[[int, int], "Objective"]] = None,
        describe: Optional[Callable[[int], str]] = None,
        group_size: int = 1,
        prec: int = 3,
    ):
        self.fn = fn
        self.layers: FrozenSet[str] = frozenset(layers)
        self.description = description
        self.batch_size = batch_size
        self._slicer = slicer
        self._describe = describe
        self.group_size = group_size
        self._prec = prec  # 1: sum, 2: product, 3: atom (for parentheses in descriptions)

    # -- evaluation -------------------------------------------------------------------
    def __call__(self, acts: Acts) -> torch.Tensor:
        return self.fn(acts)

    def slice(self, start: int, stop: int) -> "Objective":
        """The objective of images ``start:stop`` (a broadcast objective is its own slice)."""
        if self.batch_size is None:
            return self
        if self._slicer is None:  # pragma: no cover - every batched constructor sets one
            raise TypeError(f"objective {self.description!r} cannot be sliced")
        return self._slicer(start, stop)

    def describe(self, i: int) -> str:
        return self._describe(i) if self._describe is not None else self.description

    def __repr__(self) -> str:
        size = "" if self.batch_size is None else f", {self.batch_size} images"
        return f"Objective({self.description!r}{size})"


    # -- algebra ----------------------------------------------------------------------
    def __add__(self, other: "Objective | Number") -> "Objective":
        return _combine(self, other, lambda a, b: a + b, "+")

    def __radd__(self, other: Number) -> "Objective":
        if other == 0:  # sum([...]) starts from 0
            return self
        return _combine(other, self, lambda a, b: a + b, "+")

    def __sub__(self, other: "Objective | Number") -> "Objective":
        return _combine(self, other, lambda a, b: a - b, "-")

    def __rsub__(self, other: Number) -> "Objective":
        return _combine(other, self, lambda a, b: a - b, "-")

    def __mul__(self, other: "Objective | Number") -> "Objective":
        return _combine(self, other, lambda a, b: a * b, "×")

    def __rmul__(self, other: Number) -> "Objective":
        return _combine(other, self, lambda a, b: a * b, "×")

    def __truediv__(self, other: Number) -> "Objective":
        if isinstance(other, Objective):
            raise TypeError("an objective can only be divided by a number")
        return _combine(self, 1.0 / other, lambda a, b: a * b, "×")

    def __neg__(self) -> "Objective":
        return Objective(
            lambda acts: -self.fn(acts),
            self.layers,
            f"−{_wrap(self.description, self._prec < 3)}",
            batch_size=self.batch_size,
            slicer=None if self.batch_size is None else (lambda s, e: -self.slice(s, e)),
            describe=lambda i: f"−{_wrap(self.describe(i), self._prec < 3)}",
            group_size=self.group_size,
            prec=2,
        )


def _wrap(text: str, compound: bool) -> str:
    return f"({text})" if compound else text


def _combine(a: "Objective | Number", b: "Objective | Number", op, symbol: str) -> Objective:
    objs = [o for o in (a, b) if isinstance(o, Objective)]
    if not objs:
        raise TypeError("at least one operand must be an Objective")
    sizes = {o.batch_size for o in objs if o.batch_size is not None}
    if len(sizes) > 1:
        raise ValueError(f"cannot combine batched objectives of different sizes {sorted(sizes)}")
    size = sizes.pop() if sizes else None

    def value(x, acts):
        return x.fn(acts) if isinstance(x, Objective) else x

    prec = 2 if symbol == "×" else 1

    def text(x, i=None, right=False) -> str:
        if isinstance(x, Objective):
            # a - (b + c) and a × (b + c) need parentheses; a + b × c does not
            need = x._prec < prec or (right and symbol == "-" and x._prec == prec)
            return _wrap(x.description if i is None else x.describe(i), need)
        return _fmt(x)

    # "0.5 × channel" reads better than "channel × 0.5"; keep the user's order otherwise.
    swap = symbol == "×" and isinstance(a, Objective) and not isinstance(b, Objective)
    left, right = (b, a) if swap else (a, b)
    layers = frozenset().union(*(o.layers for o in objs))

    def slicer(s, e):
        sa = a.slice(s, e) if isinstance(a, Objective) else a
        sb = b.slice(s, e) if isinstance(b, Objective) else b
        return _combine(sa, sb, op, symbol)

    return Objective(
        lambda acts: op(value(a, acts), value(b, acts)),
        layers,
        f"{text(left)} {symbol} {text(right, right=True)}",
        batch_size=size,
        slicer=slicer if size is not None else None,
        describe=lambda i: f"{text(left, i)} {symbol} {text(right, i, right=True)}",
        group_size=max(o.group_size for o in objs),
        prec=prec,
    )


# ---------------------------------------------------------------------------------------
# helpers on activations


def _per_image_channel(act: torch.Tensor, channels: "int | torch.Tensor") -> torch.Tensor:
    """Channel ``channels`` (an int, or one index per image) of ``act`` (N, C, ...)."""
    act = act.float()
    if isinstance(channels, int):
        return act[:, channels]
    idx = channels.to(act.device)
    if idx.numel() != act.shape[0]:
        raise ValueError(f"batched objective has {idx.numel()} images but the batch has {act.shape[0]}")
    return act[torch.arange(act.shape[0], device=act.device), idx]


def _mean_rest(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(t.shape[0], -1).mean(dim=1)


def _position(act: torch.Tensor, x: Optional[int], y: Optional[int]):
    h, w = act.shape[-2], act.shape[-1]
    return (h // 2 if y is None else y), (w // 2 if x is None else x)


def _is_seq(c) -> bool:
    return isinstance(c, (list, tuple, range)) or (isinstance(c, torch.Tensor) and c.dim() == 1)


def _batched(
    make: Callable[[Sequence[int]], Objective],
    values: Sequence[int],
    name: str,
    layer: str,
    extra: str = "",
    label: Optional[Callable[[int], str]] = None,
) -> Objective:
    """Wrap a per-image-index objective with slicing and per-image descriptions."""
    values = [int(v) for v in values]
    obj = make(values)
    obj.batch_size = len(values)
    obj._slicer = lambda s, e: _batched(make, values[s:e], name, layer, extra, label)
    if label is None:
        obj._describe = lambda i: f"{name}({_layer_label(layer)}, {values[i]}{extra})"
        obj.description = f"{name}({_layer_label(layer)}, c{extra}) for c in [{_fmt_list(values)}]"
    else:
        obj._describe = lambda i: f"{name}({label(values[i])})"
        obj.description = f"{name}(c) for c in [{_fmt_list(values)}]"
    return obj


# ---------------------------------------------------------------------------------------
# constructors


def channel(layer: str, n: "int | Sequence[int]") -> Objective:
    """Mean activation of channel ``n`` over all positions of ``layer``.

    ``n`` may be a list: image ``i`` then maximises channel ``n[i]`` (one gather for all).
    """
    if _is_seq(n):
        def make(vals):
            idx = torch.tensor(vals, dtype=torch.long)
            return Objective(lambda acts: _mean_rest(_per_image_channel(acts[layer], idx)), [layer], "")

        return _batched(make, list(n), "channel", layer)
    n = int(n)
    return Objective(lambda acts: _mean_rest(_per_image_channel(acts[layer], n)), [layer], f"channel({layer}, {n})")


def neuron(layer: str, n: "int | Sequence[int]", x: Optional[int] = None, y: Optional[int] = None) -> Objective:
    """Activation of channel ``n`` at one spatial position (default: the centre)."""
    where = "" if x is None and y is None else f" @ x={x}, y={y}"

    def value(acts, idx):
        act = acts[layer]
        maps = _per_image_channel(act, idx)
        if maps.dim() == 1:
            return maps
        yy, xx = _position(act, x, y)
        return maps[:, yy, xx]

    if _is_seq(n):
        def make(vals):
            idx = torch.tensor(vals, dtype=torch.long)
            return Objective(lambda acts: value(acts, idx), [layer], "")

        return _batched(make, list(n), "neuron", layer, where)
    n = int(n)
    return Objective(lambda acts: value(acts, n), [layer], f"neuron({layer}, {n}{where})")


def direction(
    layer: str, vector: "Sequence[float] | torch.Tensor", x: Optional[int] = None, y: Optional[int] = None
) -> Objective:
    """Dot product of the activation vector with a unit ``vector`` in channel space,
    averaged over positions (or at one position when ``x``/``y`` are given).

    A (K, C) matrix gives a batched objective: image ``i`` follows row ``i``.
    """
    vec = torch.as_tensor(vector, dtype=torch.float32)
    vec = vec / vec.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    at = "" if x is None and y is None else f" @ x={x}, y={y}"

    def value(acts, v):
        act = acts[layer].float()
        v = v.to(act.device)
        if v.dim() == 1:
            v = v.expand(act.shape[0], -1)
        if v.shape[0] != act.shape[0]:
            raise ValueError(f"direction objective has {v.shape[0]} rows but the batch has {act.shape[0]} images")
        dots = torch.einsum("nc...,nc->n...", act, v)
        if dots.dim() == 1:
            return dots
        if x is not None or y is not None:
            yy, xx = _position(act, x, y)
            return dots[:, yy, xx]
        return _mean_rest(dots)

    if vec.dim() == 2:
        def make_rows(rows: torch.Tensor) -> Objective:
            obj = Objective(lambda acts: value(acts, rows), [layer],
                            f"direction({layer}, vector_i{at}) for {rows.shape[0]} vectors")
            obj.batch_size = rows.shape[0]
            obj._slicer = lambda s, e: make_rows(rows[s:e])
            obj._describe = lambda i: f"direction({layer}, vector #{i}{at})"
            return obj

        return make_rows(vec)
    return Objective(lambda acts: value(acts, vec), [layer], f"direction({layer}, {vec.numel()}-d vector{at})")


def layer(name: str) -> Objective:
    """DeepDream: the mean squared activation of the whole layer (Mordvintsev et al. 2015)."""
    return Objective(lambda acts: _mean_rest(acts[name].float() ** 2), [name], f"deepdream({name})")


def class_logit(k: "int | Sequence[int]", names: Optional[Sequence[str]] = None) -> Objective:
    """The pre-softmax logit of class ``k`` (a list: one class per image)."""
    label = (lambda c: f"{c} “{names[c]}”") if names is not None else str

    def value(acts, idx):
        out = acts[OUTPUT].float()
        if isinstance(idx, int):
            return out[:, idx]
        return out[torch.arange(out.shape[0], device=out.device), idx.to(out.device)]

    if _is_seq(k):
        def make(vals):
            idx = torch.tensor(vals, dtype=torch.long)
            return Objective(lambda acts: value(acts, idx), [OUTPUT], "")

        return _batched(make, list(k), "logit", OUTPUT, label=label)
    k = int(k)
    return Objective(lambda acts: value(acts, k), [OUTPUT], f"logit({label(k)})")


def diversity(layer: str, group_size: Optional[int] = None) -> Objective:
    """Diversity (Olah et al. 2017): minus the mean cosine similarity of an image's Gram
    matrix (channel correlations at ``layer``, i.e. its "style") to those of the other images
    of its group. Higher is more diverse; add it with a weight, e.g.
    ``channel(l, [c]*4) + 100 * diversity(l, 4)``.

    ``group_size`` splits the batch into consecutive groups that are compared only among
    themselves (several diversity sets in one batch); None compares the whole batch.
    """

    def value(acts):
        act = acts[layer].float()
        n = act.shape[0]
        flat = act.reshape(n, act.shape[1], -1)
        grams = torch.bmm(flat, flat.transpose(1, 2)).reshape(n, -1)
        grams = grams / grams.norm(dim=1, keepdim=True).clamp_min(1e-10)
        sims = grams @ grams.T
        g = n if group_size is None else group_size
        group = torch.arange(n, device=act.device) // g
        mask = (group[:, None] == group[None, :]) & ~torch.eye(n, dtype=torch.bool, device=act.device)
        others = mask.sum(dim=1).clamp_min(1)
        return -(sims * mask).sum(dim=1) / others

    label = "" if group_size is None else f", groups of {group_size}"
    return Objective(value, [layer], f"diversity({layer}{label})", group_size=group_size or 1)


def negative(objective: Objective) -> Objective:
    """What a unit dislikes: maximise minus the objective."""
    return -objective


def stack(objectives: Sequence[Objective]) -> Objective:
    """A batched objective from a list: image ``i`` maximises ``objectives[i]``.

    Generic (one evaluation per image); prefer the list forms of ``channel``/``neuron``/
    ``class_logit``, which evaluate all images with one gather.
    """
    objs = list(objectives)
    if not objs:
        raise ValueError("stack() needs at least one objective")
    if any(o.batch_size not in (None, 1) for o in objs):
        raise ValueError("stack() takes objectives of one image each")

    def value(acts):
        vals = [o.fn({k: v[i : i + 1] for k, v in acts.items()}) for i, o in enumerate(objs)]
        return torch.cat([v.reshape(1) for v in vals])

    return Objective(
        value,
        frozenset().union(*(o.layers for o in objs)),
        f"[{'; '.join(o.description for o in objs[:3])}{'; …' if len(objs) > 3 else ''}]",
        batch_size=len(objs),
        slicer=lambda s, e: stack(objs[s:e]),
        describe=lambda i: objs[i].description,
    )


def as_objective(spec: "Objective | Sequence[Objective]") -> Objective:
    if isinstance(spec, Objective):
        return spec
    return stack(spec)


__all__ = [
    "OUTPUT",
    "Objective",
    "channel",
    "neuron",
    "direction",
    "layer",
    "class_logit",
    "diversity",
    "negative",
    "stack",
    "as_objective",
]
