"""How far attribution methods can be trusted: selectivity (deletion / insertion), class
sensitivity, the cascading model-randomisation sanity check, ROAR / KAR and localisation."""

from .selectivity import deletion_insertion, auc
from .sensitivity import class_sensitivity, spearman, pearson
from .sanity import cascading_randomization, ssim
from .roar import roar_kar, remove_pixels
from .localisation import pointing_game, energy_in_mask, boxes_to_masks

__all__ = [
    "auc", "boxes_to_masks", "cascading_randomization", "class_sensitivity", "deletion_insertion",
    "energy_in_mask", "pearson", "pointing_game", "remove_pixels", "roar_kar", "spearman", "ssim",
]
