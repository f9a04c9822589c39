"""Model-side machinery shared by every method: layer lookup, hooks, batching, devices."""
