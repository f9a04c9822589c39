"""LRP for transformers: rules for LayerNorm, softmax attention and GELU (filled in below)."""
