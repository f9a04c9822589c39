"""Attention rollout and gradient-weighted attention for vision transformers (filled in below)."""
