"""The part of a selection that a click points at: the selected faces joined to the clicked
ones through selected faces, across gaps no wider than a few mesh cells.

A label names every face that carries it wherever it lies, and a field distilled from a few
labelled views hands that label to stray patches nobody labelled (the support under an object,
far background): a click means the object under the cursor, so only the selection's region
that holds the clicked faces is kept. Gaps are bridged so that an object the mesh breaks into
nearby islands (thin legs, a rim) stays whole.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

MAX_CELLS = 1 << 24  # cells of the occupancy grid at most; coarser cells beyond


def clicked_region(centroids: np.ndarray, selected: np.ndarray, seeds: np.ndarray, gap: float) -> np.ndarray:
    """(F,) bool: the `selected` faces (F,) bool connected to any of the `seeds` (face indices)
    through selected faces whose centroids lie in touching cells of side `gap`. Seeds that are
    not selected join nothing."""
    seeds = np.asarray(seeds, np.int64)
    seeds = seeds[selected[seeds]] if len(seeds) else seeds
    region = np.zeros(len(selected), bool)
    if not len(seeds):
        return region
    chosen = np.flatnonzero(selected)
    points = centroids[chosen]
    low = points.min(0)
    extent = points.max(0) - low
    cell = max(gap, float(np.prod(extent + gap) / MAX_CELLS) ** (1 / 3), 1e-12)
    index = np.floor((points - low) / cell).astype(np.int64)
    occupied = np.zeros(index.max(0) + 1, bool)
    occupied[tuple(index.T)] = True
    components, _ = ndimage.label(occupied, structure=np.ones((3, 3, 3), bool))
    of_face = components[tuple(index.T)]
    wanted = np.unique(of_face[np.searchsorted(chosen, seeds)])
    region[chosen[np.isin(of_face, wanted)]] = True
    return region
