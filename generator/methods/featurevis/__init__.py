"""Feature visualisation, Lucid-style, batched: what units of a network respond to.

Public API (compute only; pages are built elsewhere):

* parameterisations: :func:`make_param` (``fft`` | ``pixel`` | ``pyramid``), :class:`Normalizer`
* transforms: :func:`standard_transforms`, ``pad``/``jitter``/``random_scale``/``random_rotate``
* objectives: ``channel``, ``neuron``, ``direction``, ``layer`` (DeepDream), ``class_logit``,
  ``diversity``, ``negative``, ``stack``; they compose with ``+ - *``
* :func:`render` -> :class:`RenderResult`; :func:`evaluate`
* site helpers: ``channel_gallery``, ``diversity_set``, ``negative_gallery``,
  ``class_visualisations``, ``deepdream``, ``top_activating`` (dataset examples),
  ``filter_grid``, ``default_layers``; ``deconv_projection`` (Zeiler & Fergus 2014)
* profiles: ``quick`` (CPU) and ``full`` (GPU)
* any architecture: :class:`SpatialView` reads a vision transformer's token outputs as maps over
  the patch grid (``channel``: averaged over the patch tokens; ``neuron``: the centre patch);
  :func:`fit_size` renders a model that refuses the asked size at its own input size
"""

from . import objectives
from .deconv import deconv_projection, projection_image
from .helpers import (
    DatasetExamples,
    channel_gallery,
    class_visualisations,
    deepdream,
    default_layers,
    diversity_set,
    dream_octaves,
    filter_grid,
    first_conv,
    layer_channels,
    negative_gallery,
    octave_sizes,
    spread_channels,
    token_layers,
    top_activating,
)
from .objectives import (
    OUTPUT,
    Objective,
    channel,
    class_logit,
    direction,
    diversity,
    layer,
    negative,
    neuron,
    stack,
)
from .param import FFTParam, ImageParam, Normalizer, PixelParam, PyramidParam, make_param
from .profiles import PROFILES, Profile, get_profile
from .render import RenderResult, evaluate, frozen_model, image_seeds, redirected_relu, render
from .sizes import SizeFit, fit_size, refusal
from .spatial import SpatialView, spec_layout
from .transforms import (
    TransformSchedule,
    apply_affine,
    jitter,
    pad,
    random_rotate,
    random_scale,
    resolve_transforms,
    standard_transforms,
)

__all__ = [
    "DatasetExamples",
    "FFTParam",
    "ImageParam",
    "Normalizer",
    "OUTPUT",
    "Objective",
    "PROFILES",
    "PixelParam",
    "Profile",
    "PyramidParam",
    "RenderResult",
    "SizeFit",
    "SpatialView",
    "TransformSchedule",
    "apply_affine",
    "channel",
    "channel_gallery",
    "class_logit",
    "class_visualisations",
    "deconv_projection",
    "deepdream",
    "default_layers",
    "direction",
    "diversity",
    "diversity_set",
    "dream_octaves",
    "evaluate",
    "filter_grid",
    "fit_size",
    "first_conv",
    "frozen_model",
    "get_profile",
    "image_seeds",
    "jitter",
    "layer",
    "layer_channels",
    "make_param",
    "negative",
    "negative_gallery",
    "neuron",
    "objectives",
    "octave_sizes",
    "pad",
    "projection_image",
    "random_rotate",
    "random_scale",
    "redirected_relu",
    "refusal",
    "render",
    "resolve_transforms",
    "spec_layout",
    "spread_channels",
    "stack",
    "standard_transforms",
    "token_layers",
    "top_activating",
]
