"""Records of the Building Blocks dimension (:mod:`generator.pipeline.stages.blocks`).

The per-(image, layer) interface data (cells, groups, attributions, flow) is the artifact's
``summary.json`` file, a large free-form JSON the pages and the browser script read as is;
the record holds what identifies the artifact and what the page titles need.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from generator.records.base import Record, register


@register("blocks")
class BlocksRecord(Record):
    model: str
    dataset: str
    image: str
    title: str
    licence: Optional[str]
    layer: str
    upper: Optional[str]  # the next layer of the list (layer-to-layer attribution), if any
    grid: List[int]  # activation grid height, width
    top_classes: List[int]
    top_names: List[str]
    icons: Dict[str, Any]  # icon size, grid size, steps, lr as resolved for the device
    group_mode: str


@register("blocks-icons")
class BlocksIconsRecord(Record):
    """Channel icons of one layer, rendered once for every channel any page shows."""

    model: str
    layer: str
    channels: List[int]
    icons: Dict[str, Any]
