"""Captures on disk -> one Dataset record (posed images, bounds, optional labels)."""
