"""Catalogue entry of LRP for transformers (rules for LayerNorm, softmax attention and GELU).
Torch-free; see :mod:`generator.catalogue.attribution` for the fields."""

from __future__ import annotations

from typing import Tuple

from generator.catalogue.attribution import COMMON, FAMILY
from generator.catalogue.types import MethodEntry, Param

ENTRIES: Tuple[MethodEntry, ...] = (
    MethodEntry(
        family=FAMILY, common=COMMON,
        name="lrp_transformer", version="1", title="AttnLRP",
        summary="LRP for vision transformers: rules for LayerNorm, softmax attention and GELU",
        citation='Achtibat et al. 2024, "AttnLRP: Attention-Aware Layer-Wise Relevance Propagation for '
                 'Transformers" (ICML)',
        formula=r"R_{x_i} = x_i \left( R_{s_i} - s_i \sum_j R_{s_j} \right) \text{ (softmax)}, \quad "
                r"R_a = R_b = \tfrac{1}{2} R_{ab} \text{ (} q k^\top, A v \text{)}, \quad "
                r"R_{x} = R_{y} \text{ (LayerNorm, GELU)}, \quad "
                r"R_i = \sum_j \frac{x_i w_{ij}}{z_j + \epsilon} R_j \text{ (linear)}",
        read="Relevance of each pixel for the class score, propagated through the transformer with rules "
             "for attention, LayerNorm and GELU; red supports, blue opposes. Computed as input times a "
             "modified gradient in one backward pass. Biases, position embeddings and the class token absorb "
             "part of the relevance, and so does the softmax rule by design (the bias term of its Taylor "
             "expansion): the conservation column shows what reaches the pixels.",
        limits="On models whose attention scores are small (early training, random weights) the softmax rule "
               "absorbs up to half of the relevance, so the map carries less of the score. A map whose relevance "
               "plus what biases and the softmax rule absorb leaves 0.9-1.1 of the logit, or that holds a NaN, is "
               "marked unreliable with the reason; a network with operations no rule covers, a TorchScript "
               "module, or a CNN without attention or LayerNorm (LRP-epsilon covers those) is listed as not "
               "applicable.",
        params=(Param("epsilon", "float", 1e-6, "stabiliser added to the denominators of linear layers",
                      minimum=0),),
        columns=("target_logit", "relevance_sum", "conservation"),
    ),
)
