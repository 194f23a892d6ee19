"""The distilled feature field, its training with camera augmentation, and its per-face codes on the mesh."""
