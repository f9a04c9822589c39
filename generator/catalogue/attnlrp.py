"""Catalogue entry of LRP for transformers (rules for LayerNorm, softmax attention and GELU).
Torch-free; see :mod:`generator.catalogue.attribution` for the fields."""

from __future__ import annotations

from typing import Tuple

from generator.catalogue.types import MethodEntry

ENTRIES: Tuple[MethodEntry, ...] = ()
