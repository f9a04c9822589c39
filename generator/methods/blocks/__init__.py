"""Building Blocks of interpretability (Olah et al. 2018, Distill), compute side.

For one image and one layer: activations, semantic dictionary, activation grid, spatial and
channel attribution (activation x gradient), competing classes, layer-to-layer attribution,
NMF neuron groups (torch, GPU-capable) with their attribution and the group flow between two
layers, and a JSON summary for the pages. Rendering and feature visualisation live elsewhere;
this package returns the channel indices and direction vectors they need.
"""

from .activations import (
    ActivationGrid,
    LayerActivations,
    SemanticDictionary,
    activation_grid,
    layer_activations,
    semantic_dictionary,
)
from .attribution import (
    ChannelRanking,
    ClassAttribution,
    CompetingClasses,
    LayerToLayer,
    channel_ranking,
    class_attribution,
    competing_classes,
    layer_to_layer,
)
from .groups import GroupAttribution, GroupFlow, NeuronGroups, group_attribution, group_flow, neuron_groups
from .nmf import NMFResult, nmf
from .summary import BuildingBlocks, building_blocks, summary_json

__all__ = [
    "ActivationGrid", "LayerActivations", "SemanticDictionary", "activation_grid", "layer_activations",
    "semantic_dictionary", "ChannelRanking", "ClassAttribution", "CompetingClasses", "LayerToLayer",
    "channel_ranking", "class_attribution", "competing_classes", "layer_to_layer", "GroupAttribution",
    "GroupFlow", "NeuronGroups", "group_attribution", "group_flow", "neuron_groups", "NMFResult", "nmf",
    "BuildingBlocks", "building_blocks", "summary_json",
]
