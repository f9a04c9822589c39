"""Typed settings of each dimension's config section (torch-free: the renderer reads them too).

Each section has its own module so dimensions evolve independently; ``generator.config``
assembles them into the report configuration.
"""
