"""Settings of the ``features`` section: feature visualisation, dataset examples, DeepDream.

"Interpreting the model": what units of a network respond to (Olah, Mordvintsev & Schubert,
"Feature Visualization", Distill 2017), the dataset images that excite them most, class
visualisations (Simonyan et al. 2013), DeepDream (Mordvintsev, Olah & Tyka 2015), the first
layer's filters and deconvnet projections (Zeiler & Fergus 2014).

Everything left unset follows the ``profile``: ``quick`` (CPU: a few channels of two layers,
small images, few steps) or ``full`` (GPU: every channel of every stage, Lucid's full
recipe); ``auto`` picks ``full`` when the run's device is CUDA. Per-model settings are maps
from model id to a value; models not named get the default. This module imports no torch.
"""

from __future__ import annotations

from typing import Dict, List, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field

ClassRef = Union[int, str]


class FeaturesSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    enabled: bool = False
    profile: Literal["auto", "quick", "full"] = "auto"
    # model ids to visualise; None: every model of the report
    models: Optional[List[str]] = None
    # model id -> layers to show (shallow to deep); a model not named gets an even spread
    # of its stages (default_layers), ``layer_count`` of them
    layers: Dict[str, List[str]] = Field(default_factory=dict)
    layer_count: Optional[int] = Field(default=None, ge=1)  # None: quick 2, full every stage
    # channels per layer, spread evenly over the layer; "all" or None per the profile
    # (quick: a few, but every channel for models with inputs under 64 px, which are cheap)
    channels: Optional[Union[int, Literal["all"]]] = None
    steps: Optional[int] = Field(default=None, ge=1)  # optimisation steps (None: the profile's)
    size: Optional[int] = Field(default=None, ge=8)  # render size in px (None: the profile's)
    diversity: int = Field(default=4, ge=0)  # images per unit in its diversity set (0: none)
    negative: bool = True  # also render what each unit dislikes
    examples: Optional[int] = Field(default=None, ge=0)  # dataset examples per unit (0: none)
    # model id -> dataset id for dataset examples and DeepDream (default: the model's first)
    examples_dataset: Dict[str, str] = Field(default_factory=dict)
    # model id -> classes to visualise (names or indices); default: classes predicted for
    # the first ``outcome.images`` images of the model's dataset, at most ``max_classes``
    classes: Dict[str, List[ClassRef]] = Field(default_factory=dict)
    max_classes: int = Field(default=8, ge=0)
    # model id -> DeepDream layers (shallow to deep); default: a spread of three stages
    deepdream_layers: Dict[str, List[str]] = Field(default_factory=dict)
    deepdream_images: Optional[int] = Field(default=None, ge=0)  # None: outcome.images
    deepdream_size: Optional[int] = Field(default=None, ge=16)  # None: quick 160 px, full: input size
    deconvnet: bool = True  # project each shown unit's strongest dataset example to pixels
    filters: bool = True  # first-layer filter grid
    # Channels per unit of work of a layer's gallery: a layer with more chosen channels is
    # rendered in parts of this many (rounded up to whole render batches), each its own unit, so
    # the ranks of a torchrun job share a Microscope-sized layer; the parts are joined into the
    # same gallery as one render gives. None: one unit per layer.
    part_channels: Optional[int] = Field(default=None, ge=1)
