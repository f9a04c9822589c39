"""The model's logic as rules: interpretable binary features, Interpretable Decision Sets
(Lakkaraju, Bach & Leskovec 2016) and baselines (a depth-limited tree, a rule list)."""

from generator.methods.surrogates.baselines import fit_rule_list, fit_tree_surrogate  # noqa: F401
from generator.methods.surrogates.features import (  # noqa: F401
    BinaryFeature,
    ChannelFeatures,
    FeatureSet,
    RegionIntensityFeatures,
    TabularFeatures,
    pooled_activations,
)
from generator.methods.surrogates.ids import (  # noqa: F401
    CandidateRules,
    DecisionSet,
    IDSWeights,
    fit_ids,
    ids_objective,
    mine_candidate_rules,
    rule_set_metrics,
)
from generator.methods.surrogates.itemsets import frequent_itemsets, itemset_cover  # noqa: F401
