"""How far attribution methods can be trusted: selectivity (deletion / insertion), class
sensitivity, the cascading model-randomisation sanity check, ROAR / KAR and localisation."""

from .localisation import boxes_to_masks, energy_in_mask, pointing_game
from .roar import remove_pixels, roar_kar
from .sanity import cascading_randomization, ssim
from .selectivity import auc, deletion_insertion
from .sensitivity import class_sensitivity, pearson, spearman

__all__ = [
    "auc", "boxes_to_masks", "cascading_randomization", "class_sensitivity", "deletion_insertion",
    "energy_in_mask", "pearson", "pointing_game", "remove_pixels", "roar_kar", "spearman", "ssim",
]
