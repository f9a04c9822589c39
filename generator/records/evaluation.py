"""Records of the evaluation dimension: selectivity, class sensitivity, the randomisation
sanity check and ROAR / KAR (:mod:`generator.pipeline.stages.evaluation`, ``evaluation_roar``).

Per-method maps (method -> numbers) are typed dicts keyed by method name: the methods of a
report are data, not fields.

Records hold what was measured; how firm a finding is (spread, bootstrap interval, whether an
order is a ranking, whether ROAR's mask leaks the class) is judged by the pages from these
numbers under the current settings (:mod:`generator.evaluation.statistics`, torch-free), so
changing a threshold re-renders instead of recomputing. The facts that need the maps
(degenerate maps, identical maps) were added as optional fields: a record written before them
still parses, and its page says these checks did not run.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from pydantic import Field

from generator.records.base import Number, Part, Record, register


class DegenerateMap(Part):
    """A map whose deletion order is arbitrary (all zero, constant or not finite)."""

    index: int  # position among the record's images
    image: str
    problem: str  # "all zero" | "constant" | "non-finite values"


class IdenticalPair(Part):
    """Two methods whose maps are the same explanation on every usable image."""

    methods: List[str]
    images: int
    min_correlation: Number
    max_relative_difference: Number


@register("evaluation_selectivity")
class SelectivityRecord(Record):
    """Deletion / insertion curves (``curves.npz``) and their areas (Petsiuk et al. 2018)."""

    model: str
    dataset: str
    methods: List[str]
    images: List[str]
    steps: int
    patch: int  # pixels per side of a removed cell
    deletion_baseline: str
    insertion_baseline: str
    output: str  # probability | logit
    auc: Dict[str, Dict[str, List[Number]]]  # mode -> method -> per-image AUC (every image)
    mean_auc: Dict[str, Dict[str, Number]]  # mode -> method -> mean AUC (usable images; all when none is)
    score: Dict[str, Number]  # method -> insertion minus deletion mean AUC
    ranking: List[str]  # methods, best score first; the ``excluded`` ones are left out
    # method -> "image: reason" for maps the method itself flagged unreliable (absent: none)
    unreliable: Dict[str, List[str]] = Field(default_factory=dict)
    aligned: Optional[str] = None  # how the cells follow the model's patches (vision transformers)
    # --- self-checks (absent in records written before them: None) ---
    degenerate: Optional[Dict[str, List[DegenerateMap]]] = None  # method -> its degenerate maps
    excluded: List[str] = Field(default_factory=list)  # methods not ranked: most maps degenerate
    identical: Optional[List[IdenticalPair]] = None
    constant_tolerance: Optional[Number] = None
    identical_correlation: Optional[Number] = None


class SensitivityScores(Part):
    spearman_top2: List[Number]
    spearman_random: List[Number]
    pearson_top2: List[Number]
    pearson_random: List[Number]
    class_insensitive: bool
    mean_spearman_top2: Number
    mean_spearman_random: Number
    mean_pearson_top2: Number
    mean_pearson_random: Number


@register("evaluation_sensitivity")
class SensitivityRecord(Record):
    """Maps for the top-1, runner-up and a random class compared per image."""

    model: str
    dataset: str
    methods: List[str]
    threshold: Number
    images: List[str]
    classes: Dict[str, List[str]]  # top1 | top2 | random -> class name per image
    per_method: Dict[str, SensitivityScores]


class SanityScores(Part):
    spearman_abs: List[Number]  # per cascade step
    spearman: List[Number]
    ssim: List[Number]
    weight_insensitive: bool
    final_per_image: List[Number] = Field(default_factory=list)  # Spearman of |map| after the last step, per image


@register("evaluation_sanity")
class SanityRecord(Record):
    """Cascading model-parameter randomisation (Adebayo et al. 2018)."""

    model: str
    dataset: str
    methods: List[str]
    layers: List[str]  # randomised top down, cumulatively
    threshold: Number
    images: List[str]
    per_method: Dict[str, SanityScores]


class RoarBudget(Part):
    train_images: int
    test_images: int
    epochs: int
    batch_size: int
    full_training: str


@register("evaluation_roar")
class RoarRecord(Record):
    """ROAR / KAR test accuracies after retraining (Hooker et al. 2019)."""

    model: str
    dataset: str
    methods: List[str]  # the configured methods and "random"
    fractions: List[Number]
    reference_accuracy: Number
    original_model_accuracy: Number
    roar: Dict[str, List[Number]]  # method -> accuracy per fraction
    kar: Dict[str, List[Number]]
    budget: RoarBudget
    params: Dict[str, Dict[str, Any]]  # method -> parameters (free-form per method)
    imputation: str = "mean"  # mean | road (absent in records written before ROAD: mean)
    road_noise: Optional[Number] = None
