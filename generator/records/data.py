"""Records of the data dimension: prototypes and criticisms, influential training examples and
the decision-set surrogate (:mod:`generator.pipeline.stages.data_prototypes`,
``data_influence``, ``data_surrogate``).

``params`` (the section's settings as dumped) and the surrogates' ``metrics`` stay dicts: they
are nested tables of numbers read by name, and typing them would only repeat the settings
models and the metric functions.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from pydantic import Field

from generator.records.base import Number, Part, Record, register


class DataSplitInfo(Part):
    """Which training and held-out examples the data stages used (``DataSplit.describe()``)."""

    train_source: str
    train_total: int
    train_used: int
    test_used: int
    checkpoints: List[str]
    learning_rates: List[Number]
    from_training: bool


class PrototypeEntry(Part):
    """A prototype or criticism: its row in the pool, label, prediction and witness value."""

    row: int
    source_index: int
    label: int
    prediction: int
    probability: Number
    witness: Number


class PrototypeGroup(Part):
    """The selection of one class (``label``) or of all classes (``label`` None)."""

    label: Optional[int]
    name: str
    n: int
    prototypes: List[PrototypeEntry]
    criticisms: List[PrototypeEntry]
    mmd2: List[Number]
    witness_quantiles: List[Number]


class MisclassifiedRates(Part):
    prototypes_misclassified: Optional[Number]
    criticisms_misclassified: Optional[Number]
    pool_misclassified: Number


@register("data_prototypes")
class PrototypesRecord(Record):
    """MMD-critic prototypes and criticisms (Kim, Khanna & Koyejo 2016)."""

    model: str
    dataset: str
    space: str  # embedding | pixels
    layer: Optional[str]
    kernel: str
    sigma: Optional[Number]
    regularizer: str
    params: Dict[str, Any]
    split: DataSplitInfo
    device: str
    dimension: int
    classes: List[PrototypeGroup]
    global_: PrototypeGroup = Field(alias="global")  # "global" is a Python keyword
    class_names: List[str]
    rates: MisclassifiedRates


class InfluenceTest(Part):
    """A held-out image whose prediction is explained."""

    row: int
    id: str
    label: int
    prediction: int
    probability: Number
    correct: bool


class InfluenceScores(Part):
    """The most helpful and most harmful training rows per test image, with their scores.

    TracIn adds its checkpoints and learning rates, influence functions the damping, the
    number of parameters and the smallest Hessian eigenvalue.
    """

    helpful: List[List[int]]
    harmful: List[List[int]]
    helpful_scores: List[List[Number]]
    harmful_scores: List[List[Number]]
    sign: str
    checkpoints: Optional[List[str]] = None
    learning_rates: Optional[List[Number]] = None
    damping: Optional[Number] = None
    n_params: Optional[int] = None
    hessian_min_eig: Optional[Number] = None


class InfluenceTrainRow(Part):
    source_index: int
    label: int
    prediction: int


@register("data_influence")
class InfluenceRecord(Record):
    """TracIn and influence functions on the last layer (Pruthi et al. 2020; Koh & Liang 2017)."""

    model: str
    dataset: str
    params: Dict[str, Any]
    split: DataSplitInfo
    class_names: List[str]
    tests: List[InfluenceTest]
    methods: Dict[str, InfluenceScores]  # tracin | influence_functions
    train: Dict[str, InfluenceTrainRow]  # training row (as text) -> what it is
    device: str


class SurrogateFeature(Part):
    """A binary feature the rules are made of; ``params`` depend on its ``kind``."""

    name: str
    description: str
    kind: str
    params: Dict[str, Any]
    icon_row: Optional[int]


class SurrogateRule(Part):
    items: List[int]  # feature indices (all must hold)
    label: int
    text: str
    f1: Number
    examples: List[int]  # held-out rows it covers


class SurrogateTree(Part):
    rules: List[str]
    lengths: List[int]


class SurrogateRuleList(Part):
    rules: List[str]
    lengths: List[int]
    default_class: int


@register("data_surrogate")
class SurrogateRecord(Record):
    """Interpretable decision set (Lakkaraju et al. 2016) with a tree and a rule list as baselines."""

    model: str
    dataset: str
    params: Dict[str, Any]
    split: DataSplitInfo
    channel_layer: Optional[str]
    class_names: List[str]
    features: List[SurrogateFeature]
    n_candidates: int
    n_itemsets: int
    weights: List[Number]
    objective: Number
    objective_terms: Dict[str, Number]
    default_class: int
    rules: List[SurrogateRule]
    tree: SurrogateTree
    rule_list: SurrogateRuleList
    # surrogate (ids | tree | rule_list) -> fit | held_out -> metric -> value or per-rule list
    metrics: Dict[str, Dict[str, Dict[str, Any]]]
    device: str
