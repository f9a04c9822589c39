"""Interpreting the data: prototypes and criticisms (MMD-critic), influential training examples
(TracIn, last-layer influence functions)."""
