"""Selections from per-face features: text, clicks and similar-to-selection."""
