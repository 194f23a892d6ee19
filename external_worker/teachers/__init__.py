"""2D teachers whose per-pixel targets the feature field distils: labels, SAM, CLIP."""
