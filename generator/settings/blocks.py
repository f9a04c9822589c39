"""Settings of the ``blocks`` section: Building Blocks interfaces (Olah et al. 2018, Distill).

For each chosen model, image and layer: semantic dictionary, activation grid, spatial and
channel attribution, neuron groups and, between consecutive layers of ``layers``, the
layer-to-layer attribution and the group flow. Feature-visualisation icons are small and few
steps on the CPU (the default report must build in minutes on two cores) and larger on CUDA.
"""

from __future__ import annotations

from typing import List, Optional, Union

from pydantic import BaseModel, ConfigDict, Field

# (CPU, CUDA) defaults of the icon settings; ``None`` in the config means "pick by device".
ICON_SIZE = (48, 96)  # channel and group icons, px
GRID_ICON_SIZE = (32, 64)  # one icon per activation-grid cell, px
ICON_STEPS = (24, 256)


class BlocksSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)
    enabled: bool = False
    # Model ids to explain; None: every model of the report.
    models: Optional[List[str]] = None
    # Image ids (dataset item ids) to explain; empty: the first ``max_images`` of each dataset.
    images: List[str] = Field(default_factory=list)
    max_images: int = Field(default=2, ge=1, le=16)
    # Layers, lower first; each layer is linked to the next one by layer-to-layer attribution
    # and the group flow. Empty: the last two of the model's spec layers.
    layers: List[str] = Field(default_factory=list)
    top_k: int = Field(default=5, ge=2, le=20)  # classes attributed (the top predictions)
    classes: List[Union[int, str]] = Field(default_factory=list)  # extra classes, by index or name
    n_channels: int = Field(default=6, ge=1, le=32)  # channels per position / per ranking
    n_groups: int = Field(default=6, ge=1, le=16)  # NMF neuron groups per layer
    icon_size: Optional[int] = Field(default=None, ge=16, le=256)
    grid_icon_size: Optional[int] = Field(default=None, ge=8, le=256)
    icon_steps: Optional[int] = Field(default=None, ge=1, le=4096)
    icon_lr: float = Field(default=0.1, gt=0)  # 0.1 gives contrast within few steps

    def icons_for(self, device_type: str) -> dict:
        """Icon size, grid icon size and steps, the device's defaults where not set."""
        gpu = 1 if device_type == "cuda" else 0
        return {
            "size": self.icon_size or ICON_SIZE[gpu],
            "grid_size": self.grid_icon_size or GRID_ICON_SIZE[gpu],
            "steps": self.icon_steps or ICON_STEPS[gpu],
            "lr": self.icon_lr,
        }
