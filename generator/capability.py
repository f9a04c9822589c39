"""What a method cannot do on a model, said once and plainly.

Some methods are not defined for some networks: guided backprop and deconvnet are rules for
ReLU, so on a network whose non-linearities are all GELU they would silently be plain saliency;
LRP's rules do not cover every layer type. Such a method raises :class:`Unsupported` with the
reason. The run lists it under "not applicable" with that reason: it is neither a result nor a
failure, so it never changes the exit status and never shows a map.

This module imports no torch: records and pages name the same idea.
"""

from __future__ import annotations


class Unsupported(Exception):
    """``method`` is not defined for this model; ``str()`` is the one-line reason."""
