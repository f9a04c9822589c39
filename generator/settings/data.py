"""Settings of the ``data`` section: prototypes and criticisms, influential examples, decision-set surrogates.

Torch-free (the renderer reads them too). Sizes come in two profiles: the ``cpu`` numbers keep
the default report within a couple of minutes on a laptop, the ``cuda`` numbers use everything.
"""

from __future__ import annotations

from typing import List, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class PoolSettings(_Strict):
    """How many training examples the data dimension looks at (a class-stratified, seeded subset;
    0 = all of them). The training examples are the model's real training split when it was
    trained here (Fashion-MNIST), otherwise ``1 - holdout`` of the configured dataset."""

    cpu: int = Field(default=10000, ge=0)
    cuda: int = Field(default=0, ge=0)
    holdout: float = Field(default=0.3, gt=0, lt=1)  # share kept for held-out evaluation (configured datasets)

    def size(self, device_type: str) -> int:
        return self.cuda if device_type == "cuda" else self.cpu


class PrototypeSettings(_Strict):
    """MMD-critic (Kim, Khanna & Koyejo 2016)."""

    enabled: bool = True
    per_class: int = Field(default=6, ge=0)
    criticisms_per_class: int = Field(default=6, ge=0)
    global_prototypes: int = Field(default=10, ge=0)
    global_criticisms: int = Field(default=10, ge=0)
    kernel: Literal["rbf", "linear"] = "rbf"
    sigma: Optional[float] = Field(default=None, gt=0)  # None: median heuristic
    regularizer: Literal["logdet", "none"] = "logdet"


class InfluenceSettings(_Strict):
    """Influential training examples for chosen test images."""

    enabled: bool = True
    methods: List[Literal["tracin", "influence_functions"]] = Field(
        default_factory=lambda: ["tracin", "influence_functions"])
    correct: int = Field(default=3, ge=0)  # correctly classified test images explained
    misclassified: int = Field(default=3, ge=0)  # misclassified test images explained
    top_k: int = Field(default=6, ge=1, le=50)
    damping: float = Field(default=1e-3, gt=0)


class IDSWeightSettings(_Strict):
    """The IDS lambdas in units of examples (see ``IDSWeights.scaled``)."""

    rule_cost: float = Field(default=0.005, ge=0)
    literal_cost: float = Field(default=0.002, ge=0)
    class_bonus: float = Field(default=0.01, ge=0)
    intra_overlap: float = Field(default=0.1, ge=0)
    inter_overlap: float = Field(default=0.5, ge=0)
    incorrect: float = Field(default=1.0, ge=0)
    correct: float = Field(default=1.0, ge=0)


class DecisionSetSettings(_Strict):
    """Interpretable Decision Sets (Lakkaraju, Bach & Leskovec 2016) over binary features, with
    a depth-limited tree and a rule list as baselines on the same features."""

    enabled: bool = True
    features: List[Literal["region", "channel"]] = Field(default_factory=lambda: ["region", "channel"])
    region_grid: Literal[2, 3] = 3
    region_quantiles: List[float] = Field(default_factory=lambda: [0.25, 0.75])
    channel_layer: Optional[str] = None  # default: the model's Grad-CAM layer
    channel_quantile: float = Field(default=0.9, gt=0, lt=1)
    channels: int = Field(default=32, ge=1)  # the most variable channels of that layer
    max_candidates: int = Field(default=3000, ge=1)
    max_rule_length: int = Field(default=2, ge=1, le=4)
    min_support: float = Field(default=0.01, gt=0)
    min_precision: float = Field(default=0.3, ge=0, le=1)
    max_rules: Optional[int] = Field(default=None, ge=1)
    weights: IDSWeightSettings = Field(default_factory=IDSWeightSettings)
    tree_depth: int = Field(default=4, ge=1, le=12)
    rule_list_max: int = Field(default=20, ge=1)
    examples_per_rule: int = Field(default=6, ge=0, le=24)

    @model_validator(mode="after")
    def _quantiles(self) -> "DecisionSetSettings":
        bad = [q for q in self.region_quantiles if not 0 < q < 1 or q == 0.5]
        if bad:
            raise ValueError(f"region_quantiles must lie in (0, 1) and differ from 0.5; got {bad}")
        return self


class DataSettings(_Strict):
    enabled: bool = False
    embedding_layer: Optional[str] = None  # default: the model's embedding (penultimate) layer
    space: Literal["embedding", "pixels"] = "embedding"  # where prototypes are chosen
    pool: PoolSettings = Field(default_factory=PoolSettings)
    prototypes: PrototypeSettings = Field(default_factory=PrototypeSettings)
    influence: InfluenceSettings = Field(default_factory=InfluenceSettings)
    decision_set: DecisionSetSettings = Field(default_factory=DecisionSetSettings)
