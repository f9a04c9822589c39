"""Catalogue entries of the attribution methods defined for transformers (attention rollout,
gradient-weighted attention, LRP with rules for attention and LayerNorm). Torch-free.

They are attribution methods like those in :mod:`generator.catalogue.attribution` (same family,
same common parameters and columns); they live apart because they apply to a different kind of
network.
"""

from __future__ import annotations

from typing import Any, Tuple

from generator.catalogue.attribution import COMMON, FAMILY
from generator.catalogue.types import MethodEntry, Param

START_LAYER = Param("start_layer", "int", 0,
                    "first attention layer composed (0: all); earlier layers are left out", minimum=0)
#: Where both methods apply, said once.
APPLIES = (" Defined for transformers with global self-attention over one token sequence whose patch tokens "
           "follow any class, distillation or register tokens (ViT, DeiT, torchvision's ViT); windowed attention "
           "(Swin), pooling or cross attention, TorchScript and networks without attention are listed as not "
           "applicable.")
READOUT = ("The row read is that of the readout tokens: those whose last-layer output the score depends on (the "
           "class token; class and distillation tokens of a distilled DeiT, averaged; every patch token of an "
           "average-pooled model).")


def _entry(**fields: Any) -> MethodEntry:
    return MethodEntry(family=FAMILY, common=COMMON, **fields)


ENTRIES: Tuple[MethodEntry, ...] = (
    _entry(
        name="attention_rollout", title="Attention rollout",
        summary="the product over layers of head-averaged attention plus identity; class token row (class-blind)",
        citation='Abnar & Zuidema 2020, "Quantifying Attention Flow in Transformers"',
        formula=r"\tilde A = \prod_{l=L}^{1} \hat A^{(l)},\ \hat A^{(l)} = \mathrm{rownorm}\left(\mathrm{fuse}_h "
                r"A^{(l)}_h + I\right),\ M = \tilde A_{\mathrm{cls},\,\mathrm{patches}}",
        read="Bright patches are those whose information reaches the class token most through the attention "
             "layers, counting the residual path as attention to oneself. It does not depend on the target class: "
             "every class gets the same map. " + READOUT,
        limits="Class-insensitive: it shows where attention routes information, not evidence for or against a "
               "class, and it ignores the values, MLPs and LayerNorms (attention weights are not contributions). "
               "Its resolution is the patch grid (a 14x14 grid for a ViT-B/16 at 224 px)." + APPLIES,
        params=(
            Param("head_fusion", "str", "mean", "how heads are combined in each layer (the paper: mean)",
                  choices=("mean", "max", "min")),
            Param("discard_ratio", "float", 0.0,
                  "fraction of the smallest fused attention weights of each layer set to zero before the identity "
                  "is added (0: none, as in the paper)", minimum=0, maximum=0.99),
            START_LAYER,
        ),
    ),
    _entry(
        name="attention_gradient", title="Gradient-weighted attention",
        summary="attention weighted by its gradient, positive part, accumulated over layers (class-specific)",
        citation='Chefer, Gur & Wolf 2021, "Generic Attention-model Explainability for Interpreting Bi-Modal and '
                 'Encoder-Decoder Transformers"',
        formula=r"\bar A^{(l)} = \mathbb{E}_h\left[\left(\nabla A^{(l)}_h \odot A^{(l)}_h\right)^+\right],\ "
                r"R \leftarrow R + \bar A^{(l)} R,\ R^{(0)} = I,\ M = R_{\mathrm{cls},\,\mathrm{patches}}",
        read="Bright patches are those the class token attends to, through all layers, with attention whose "
             "increase would raise the class score: a class-specific relevance. " + READOUT,
        limits="The gradient is a first-order, local weight and only its positive part is kept, so evidence "
               "against the class is not shown; values, MLPs and LayerNorms enter only through the gradient. "
               "Its resolution is the patch grid." + APPLIES,
        params=(START_LAYER,),
    ),
)
