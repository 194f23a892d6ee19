"""Similar-to-selection queries: DFF's patch query on the per-face features."""

from __future__ import annotations

import numpy as np

from ..errors import WorkerError
from ..workspace import Workspace
from .readers import load_reader


def query_similar(workspace: Workspace, selected: np.ndarray, teacher: str = "labels") -> np.ndarray:
    """DFF's patch query: cosine similarity (clipped to [0, 1]) of every face's feature with the
    mean feature of the selected faces, in the space the teacher's reader compares them in."""
    reader = load_reader(workspace, teacher)
    if selected.shape != (len(reader.codes),):
        raise WorkerError("bad_request", f"'selected' has shape {selected.shape}, the mesh has {len(reader.codes)} "
                          "faces", "Send one boolean per face of the workspace's mesh.")
    if not selected.any():
        raise WorkerError("empty_selection", "no faces are selected", "Select some faces first.")
    embedded = reader.embed(reader.codes.rows(np.flatnonzero(selected)))
    mean = (embedded / np.linalg.norm(embedded, axis=1, keepdims=True).clip(1e-8)).mean(0)
    mean /= max(np.linalg.norm(mean), 1e-8)
    return np.clip(reader.similarity(mean), 0, 1).astype(np.float32)
