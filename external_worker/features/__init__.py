"""The distilled feature field, its training, and its per-face codes on the mesh."""
