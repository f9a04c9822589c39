"""Settings of the ``concepts`` section: TCAV, regression concept vectors and network
dissection (:mod:`generator.pipeline.stages.concepts`). Torch-free.

Off unless enabled: a report turns it on with ``concepts: {enabled: true}`` and sizes it here.
Model ids are checked by :mod:`generator.validation`.
"""

from __future__ import annotations

from typing import Dict, List, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field

BUILTIN_CONCEPTS = ["stripes", "dots", "checkerboard", "zigzag", "red", "green", "blue", "yellow", "white", "black"]
MEASURE_NAMES = ["brightness", "contrast", "colourfulness", "texture_energy"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class TcavSettings(_Strict):
    """Concept activation vectors and TCAV scores (Kim et al. 2018)."""

    enabled: bool = True
    # Procedural concepts drawn offline (generator.methods.concepts.textures); [] for none.
    builtin: List[Literal["stripes", "dots", "checkerboard", "zigzag", "red", "green", "blue", "yellow", "white",
                          "black"]] = Field(default_factory=lambda: list(BUILTIN_CONCEPTS))
    # Concept name -> folder of its images (relative to the config file).
    folders: Dict[str, str] = Field(default_factory=dict)
    images: int = Field(default=20, ge=4)  # images per concept and per random set
    random_sets: int = Field(default=10, ge=3)  # J random sets: each concept is fitted against every one
    fit: Literal["logistic", "mean_difference"] = "logistic"
    l2: float = Field(default=0.01, gt=0)
    holdout: float = Field(default=0.3, ge=0, lt=0.9)
    alpha: float = Field(default=0.05, gt=0, lt=1)
    correction: Literal["holm", "bonferroni", "none"] = "holm"
    classes: int = Field(default=5, ge=1)  # at most this many classes (the most frequent in the data)
    class_images: int = Field(default=20, ge=1)  # at most this many images per class
    # A class with fewer images of its own than this is scored on every image of the dataset.
    min_class_images: int = Field(default=5, ge=1)


class RcvSettings(_Strict):
    """Regression concept vectors (Graziani et al. 2018)."""

    enabled: bool = True
    measures: List[Literal["brightness", "contrast", "colourfulness", "texture_energy"]] = Field(
        default_factory=lambda: list(MEASURE_NAMES))
    images: int = Field(default=300, ge=10)  # images the regressions are fitted on (dataset, then random crops)
    l2: float = Field(default=1e-3, gt=0)
    holdout: float = Field(default=0.3, gt=0, lt=0.9)


class DissectionSettings(_Strict):
    """Network dissection (Bau et al. 2017) and label-based dissection (Bykov et al. 2023)."""

    enabled: bool = True
    images: int = Field(default=1000, ge=10)  # at most this many dataset images are dissected
    # A dataset with fewer images is topped up with at most this many random crops of its images.
    topup: int = Field(default=200, ge=0)
    mask_side: int = Field(default=56, ge=8)  # masks and upsampled unit maps at most this many pixels a side
    # A Broden-format folder of per-pixel concept masks (generator.methods.concepts.dissection.load_broden).
    masks: Optional[str] = None
    quantile: float = Field(default=0.995, gt=0.5, lt=1)  # unit threshold: top 0.5 % of its values
    iou_threshold: float = Field(default=0.04, gt=0, le=1)
    auc_threshold: float = Field(default=0.75, gt=0.5, le=1)
    alpha: float = Field(default=0.05, gt=0, lt=1)
    max_samples: int = Field(default=200_000, ge=1000)  # sampled values per unit for the quantile
    textures: int = Field(default=10, ge=0)  # procedural texture images per texture concept added to the set
    pool: Literal["mean", "max"] = "mean"  # per-image unit score for the label AUC


class ConceptsSettings(_Strict):
    enabled: bool = False
    models: Optional[List[str]] = None  # None: every model
    # Model id -> layers; default the model's layers of interest.
    layers: Dict[str, List[str]] = Field(default_factory=dict)
    tcav: TcavSettings = Field(default_factory=TcavSettings)
    rcv: RcvSettings = Field(default_factory=RcvSettings)
    dissection: DissectionSettings = Field(default_factory=DissectionSettings)
    batch: int = Field(default=32, ge=1)
