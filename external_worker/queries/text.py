"""Text queries: per-face relevancy of a phrase."""

from __future__ import annotations

import numpy as np

from ..errors import WorkerError
from ..workspace import Workspace
from .readers import load_reader
from .relevancy import split_terms


def query_text(workspace: Workspace, text: str, teacher: str = "labels", negatives: list[str] | None = None,
               label_set: list[str] | None = None) -> np.ndarray:
    """Per-face relevancy (F,) float32 of `text` (comma-separated phrases select their union),
    against `negatives` or within `label_set` (see relevancy); above 0.5 the query wins."""
    terms = split_terms(text)
    reader = load_reader(workspace, teacher)
    if not reader.answers_text:
        raise WorkerError("unsupported_query", f"the {teacher} teacher answers clicks, not text",
                          "Use the Click tool, or train the clip teacher for text queries.")
    return reader.text(terms, negatives, label_set).astype(np.float32)
