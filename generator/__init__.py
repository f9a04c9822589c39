"""Model-card generator: explain image classifiers and publish a static site.

The package is split so that computing (``generator.pipeline``, ``generator.methods``,
``generator.models``, ``generator.engine``) and rendering (``generator.render``) stay
apart: the renderer reads artifacts from disk and never imports torch.
"""

__version__ = "0.1.0"
