"""A fill follows the surface around it: its new vertices make the bi-Laplacian vanish (the
discrete thin-plate surface) with the mesh around the hole held where it is, so the fill leaves
the border with the surface's slope: a ball's cut is closed by a dome, a floor's hole by a
plane (Liepa, "Filling holes in meshes", 2003, with the umbrella operator). MeshFix's own
refined fill is close to flat, whatever the surface around it does."""

from __future__ import annotations

import numpy as np
from scipy import sparse
from scipy.sparse.linalg import spsolve

from .topology import directed_edges


def fair(vertices: np.ndarray, faces: np.ndarray, free: np.ndarray) -> np.ndarray:
    """New positions (len(free), 3) of the vertices `free`, the others fixed, on the surface
    `faces` (a part and its fills)."""
    if len(free) == 0:
        return np.zeros((0, 3))
    n = len(vertices)
    edges = directed_edges(faces)
    adjacency = sparse.coo_matrix((np.ones(2 * len(edges)), (np.r_[edges[:, 0], edges[:, 1]],
                                                              np.r_[edges[:, 1], edges[:, 0]])), shape=(n, n)).tocsr()
    adjacency.data[:] = 1.0  # an edge of two faces counts once
    degree = np.asarray(adjacency.sum(1)).ravel()
    laplacian = sparse.diags(1 / np.maximum(degree, 1)) @ adjacency - sparse.diags((degree > 0).astype(float))
    rows = (laplacian[free] @ laplacian).tocsc()
    fixed = np.ones(n, bool)
    fixed[free] = False
    rhs = -(rows[:, np.flatnonzero(fixed)] @ vertices[fixed])
    solved = spsolve(rows[:, free], rhs)
    return np.asarray(solved).reshape(len(free), 3)
