"""Class activation maps: Grad-CAM, Grad-CAM++, counterfactual and guided Grad-CAM, and the
threshold segmentation of a CAM into masks and bounding boxes."""

from __future__ import annotations

from typing import Dict, Sequence

import torch
import torch.nn.functional as F

from ...engine.batching import autocast_for, run_chunked
from ...engine.hooks import forward_hook, hooks_removed_after
from ...engine.layers import get_layer
from ...models.tokens import to_spatial
from .base import AttributionMethod, register
from .modified import guided_backprop_gradients


def layer_activation_and_gradient(method: AttributionMethod, layer_name: str, x, target):
    """Activations A of ``layer_name`` and d logit[target] / dA, both (B,K,h,w) float32.

    Only the part of the network above the layer is differentiated: the input does not
    require grad and parameters are frozen, so the forward below the layer builds no graph.
    A transformer's (B,N,C) tokens or (B,H,W,C) map become (B,C,h,w) through
    :func:`~generator.models.tokens.to_spatial` with the spec's token layout (inferred from the
    tensor's shape when the method has no spec); activations and gradients are mapped alike, so
    the special tokens (class, registers) take no part. A channels-first map passes unchanged.
    """
    layout = method.spec.tokens if method.spec is not None else None
    # A spec that records no token grid (a CNN): its (B,K,h,w) maps are used exactly as before.
    as_is = method.spec is not None and layout is None
    layer = get_layer(method.model, layer_name)
    acts, grads = [], []
    store: Dict[str, torch.Tensor] = {}

    def hook(_m, _inputs, output):
        out = output[0] if isinstance(output, (tuple, list)) else output
        if not out.requires_grad:
            out = out.detach().requires_grad_(True)
        store["a"] = out
        # a copy goes on, so an in-place op downstream cannot overwrite what we differentiate
        return out.clone() if not isinstance(output, (tuple, list)) else output

    with hooks_removed_after() as handles:
        handles.append(forward_hook(layer, hook))  # TorchScript: the one reason every hooked part shares

        def chunk(a: int, b: int) -> None:
            with torch.enable_grad():
                with autocast_for(x.device, method.precision):
                    logits = method.model(x[a:b])
                sel = logits.float().gather(1, target[a:b].view(-1, 1)).sum()
                act = store.pop("a")
                (g,) = torch.autograd.grad(sel, act)
            try:
                if not (as_is and act.dim() == 4):
                    act, g = to_spatial(act, layout, x.shape[-2:]), to_spatial(g, layout, x.shape[-2:])
            except ValueError as exc:
                raise ValueError(f"CAM layer {layer_name!r}: {exc}; a (B,K,h,w) feature map is needed") from None
            acts.append(act.detach().float())
            grads.append(g.float())

        run_chunked(x.shape[0], method.max_batch, chunk)
    return torch.cat(acts), torch.cat(grads)


def cam_from(kind: str, A: torch.Tensor, G: torch.Tensor) -> torch.Tensor:
    """(B,h,w) CAM of ``kind`` ('gradcam', 'gradcam_pp', 'counterfactual') before upsampling."""
    if kind == "gradcam":
        w = G.mean(dim=(2, 3), keepdim=True)
    elif kind == "counterfactual":
        w = (-G).mean(dim=(2, 3), keepdim=True)
    elif kind == "gradcam_pp":
        g2, g3 = G.pow(2), G.pow(3)
        denom = 2 * g2 + A.sum(dim=(2, 3), keepdim=True) * g3
        alpha = g2 / torch.where(denom != 0, denom, torch.ones_like(denom))
        alpha = torch.where(G != 0, alpha, torch.zeros_like(alpha))
        w = (alpha * G.clamp(min=0)).sum(dim=(2, 3), keepdim=True)
    else:
        raise ValueError(kind)
    return (w * A).sum(1).clamp(min=0)


def upsample(cam: torch.Tensor, size) -> torch.Tensor:
    return F.interpolate(cam.unsqueeze(1), size=tuple(size), mode="bilinear", align_corners=False).squeeze(1)


class _CamBase(AttributionMethod):
    signed = False
    reduction = "upsampled"
    kind = "gradcam"
    shares = "cam"

    @property
    def layer(self) -> str:
        name = self.params.get("layer") or self.layer_name or (self.spec.cam_layer if self.spec else None)
        if not name:
            raise ValueError(f"{self.name} needs a layer: pass a layer name or a ModelSpec with cam_layer")
        return name

    def _attribute(self, x, target):
        A, G = layer_activation_and_gradient(self, self.layer, x, target)
        return self.from_layer(x, target, A, G)

    def from_layer(self, x, target, A, G):
        cam = cam_from(self.kind, A, G)
        return self._result(upsample(cam, x.shape[-2:]), target, None, cam=cam, layer=self.layer)


@register
class GradCAM(_CamBase):
    """Grad-CAM: the layer's feature maps weighted by their spatially averaged gradients, ReLU.

    Selvaraju et al. 2017, "Grad-CAM: Visual Explanations from Deep Networks via
    Gradient-based Localization". Its resolution is that of the chosen layer (7x7 for ResNets
    at 224 px), so it localises coarsely, and averaging gradients can under-weight small or
    repeated objects. Map: the CAM bilinearly upsampled to the input size.
    """

    name = "gradcam"
    kind = "gradcam"


@register
class GradCAMPlusPlus(_CamBase):
    """Grad-CAM++: feature maps weighted by positive gradients with pixel-wise coefficients.

    Chattopadhyay et al. 2018, "Grad-CAM++: Improved Visual Explanations for Deep
    Convolutional Networks". The closed-form weights assume an exponential of the score
    (higher derivatives from powers of the gradient); they cover several instances better than
    Grad-CAM but inherit its coarse resolution.
    """

    name = "gradcam_pp"
    kind = "gradcam_pp"


@register
class CounterfactualGradCAM(_CamBase):
    """Counterfactual Grad-CAM: Grad-CAM with negated gradients, showing what argues against
    the class (regions whose removal would raise its score).

    Selvaraju et al. 2017, section on counterfactual explanations. It is a first-order
    statement about the layer's features, so "removal" is only an approximation; it shares
    Grad-CAM's coarse resolution.
    """

    name = "counterfactual_gradcam"
    kind = "counterfactual"


@register
class GuidedGradCAM(_CamBase):
    """Guided Grad-CAM: guided backpropagation multiplied by the upsampled Grad-CAM.

    Selvaraju et al. 2017. It combines Grad-CAM's class-discriminative localisation with
    guided backprop's pixel detail, and inherits the latter's insensitivity to the model's
    weights (Adebayo et al. 2018). Map: max over channels of |guided backprop| times the CAM.
    """

    name = "guided_gradcam"
    kind = "gradcam"
    reduction = "max_abs"

    def _attribute(self, x, target):
        A, G = layer_activation_and_gradient(self, self.layer, x, target)
        cam = cam_from("gradcam", A, G)
        up = upsample(cam, x.shape[-2:])
        gb = guided_backprop_gradients(self, x, target)
        raw = gb * up.unsqueeze(1)
        return self._result(gb.abs().amax(1) * up, target, raw, cam=cam, layer=self.layer)

    from_layer = None  # needs a second (guided) backward pass


def cam_segmentation(cams: torch.Tensor, thresholds: Sequence[float] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9),
                     largest_component: bool = False) -> Dict[str, torch.Tensor]:
    """Threshold CAMs (B,H,W) at fractions of each map's maximum.

    Returns ``masks`` (T,B,H,W) bool, ``boxes`` (T,B,4) as (x0, y0, x1, y1) inclusive pixel
    coordinates (-1 where the mask is empty), ``area`` (T,B) mask area fractions and
    ``thresholds`` (T,). With ``largest_component`` the box (and mask) keep only the largest
    4-connected component, as in Grad-CAM's weakly supervised localisation.
    """
    cams = cams.float()
    t = torch.as_tensor(list(thresholds), dtype=torch.float32, device=cams.device)
    peak = cams.flatten(1).amax(1).clamp(min=1e-12).view(1, -1, 1, 1)
    masks = cams.unsqueeze(0) >= t.view(-1, 1, 1, 1) * peak
    masks &= (cams.unsqueeze(0) > 0)
    if largest_component:
        masks = _largest_component(masks)
    rows = masks.any(dim=3)  # (T,B,H)
    cols = masks.any(dim=2)  # (T,B,W)
    H, W = cams.shape[-2:]
    ar_h = torch.arange(H, device=cams.device)
    ar_w = torch.arange(W, device=cams.device)
    big = 1 << 30
    y0 = torch.where(rows, ar_h, big).amin(-1)
    y1 = torch.where(rows, ar_h, -1).amax(-1)
    x0 = torch.where(cols, ar_w, big).amin(-1)
    x1 = torch.where(cols, ar_w, -1).amax(-1)
    empty = ~rows.any(-1)
    boxes = torch.stack([x0, y0, x1, y1], -1)
    boxes[empty] = -1
    return {"masks": masks, "boxes": boxes, "area": masks.float().mean(dim=(2, 3)), "thresholds": t}


def _largest_component(masks: torch.Tensor) -> torch.Tensor:
    from scipy import ndimage  # scikit-learn's dependency; only needed for this option

    arr = masks.cpu().numpy()
    out = arr.copy()
    for idx in ((i, j) for i in range(arr.shape[0]) for j in range(arr.shape[1])):
        labels, n = ndimage.label(arr[idx])
        if n > 1:
            sizes = ndimage.sum(arr[idx], labels, range(1, n + 1))
            out[idx] = labels == (1 + int(sizes.argmax()))
    return torch.from_numpy(out).to(masks.device)
