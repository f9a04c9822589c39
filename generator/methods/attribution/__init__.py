"""Attribution methods ("interpreting outcomes"), selectable by name.

``ATTRIBUTION_METHODS.get(name)`` gives a class; ``cls(model, spec_or_layer, **params)`` binds
it to a model and ``.attribute(x, target)`` returns an :class:`AttributionResult` with a
(B,H,W) map per image. ``target`` is one class index or one per image; use
:func:`resolve_targets` for class names and "predicted". Each method's title, paper, version
and typed parameters with their defaults are declared in :mod:`generator.catalogue`.
"""

from . import attnlrp, cam, gradient, lrp, modified, occlusion, transformer  # noqa: F401  (registration)
from .base import ATTRIBUTION_METHODS, REDUCTIONS, AttributionMethod, AttributionResult, gaussian_blur, reduce_channels
from .cam import cam_segmentation
from .shared import attribute_many
from .targets import resolve_targets

__all__ = [
    "ATTRIBUTION_METHODS", "REDUCTIONS", "AttributionMethod", "AttributionResult", "attribute_many",
    "cam_segmentation", "gaussian_blur", "reduce_channels", "resolve_targets",
]
