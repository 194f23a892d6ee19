"""Text queries: per-face relevancy of a phrase."""

from __future__ import annotations

import numpy as np

from ..workspace import Workspace
from .faces import load_face_features
from .relevancy import split_terms


def query_text(workspace: Workspace, text: str, teacher: str = "labels", negatives: list[str] | None = None,
               label_set: list[str] | None = None) -> np.ndarray:
    """Per-face relevancy (F,) float32 of `text` (comma-separated phrases select their union),
    against `negatives` or within `label_set` (see relevancy); above 0.5 the query wins."""
    terms = split_terms(text)
    ff = load_face_features(workspace, teacher)
    return ff.teacher.query_text(terms, ff.features, negatives, label_set).astype(np.float32)
