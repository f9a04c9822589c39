"""Models: ModelSpec metadata and loaders by source."""
