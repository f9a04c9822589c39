"""Catalogue entries of the attribution methods defined for transformers (attention rollout,
gradient-weighted attention, LRP with rules for attention and LayerNorm). Torch-free.

They are attribution methods like those in :mod:`generator.catalogue.attribution` (same family,
same common parameters and columns); they live apart because they apply to a different kind of
network.
"""

from __future__ import annotations

from typing import Tuple

from generator.catalogue.types import MethodEntry

ENTRIES: Tuple[MethodEntry, ...] = ()
