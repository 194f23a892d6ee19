"""Frames, cameras, ray casts and visibility: the geometry every stage shares."""
