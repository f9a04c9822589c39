"""Concepts and dissection: what units and layers mean, in words a user can check.

* :mod:`.cav` and :mod:`.tcav`: concept activation vectors and TCAV scores with their test
  against random concepts (Kim et al. 2018);
* :mod:`.rcv` and :mod:`.measures`: regression concept vectors for continuous measures of the
  image (Graziani et al. 2018);
* :mod:`.dissection`: network dissection with per-pixel masks (Bau et al. 2017) and label-based
  dissection by AUC (Bykov et al. 2023);
* :mod:`.textures`: the procedural concept images of the default report;
* :mod:`.stats`: t-tests, normal p-values and multiple-testing corrections, without scipy;
* :mod:`.activations`: layer activations and per-image logit gradients, hooks always removed.

Everything is torch, batched and device-agnostic; nothing here needs scikit-learn or scipy.
"""
