"""The run stage: config -> artifacts (needs torch; uses the GPU when there is one)."""
