"""Comparing models: representation similarity between their layers (:mod:`.similarity`, torch)
and CKA from stored Gram matrices (:mod:`.gram_cka`, numpy only, for ``modelcard diff``).

Import the torch part from :mod:`generator.methods.compare.similarity`; this package imports
nothing heavy so that :mod:`.gram_cka` stays usable without torch.
"""
