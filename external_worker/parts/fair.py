"""Where a fill's new vertices go (MeshFix's own fill is near flat, whatever the surface does).

An object's fill follows its surface: the new vertices make the bi-Laplacian vanish (the
discrete thin-plate surface, with the umbrella operator; Liepa, "Filling holes in meshes",
2003) with the mesh around the hole held where it is, so the fill leaves the border with the
surface's slope: a ball's cut is closed by a dome, not a flat disc.

The background's holes are where objects stood, and the surface's slope at their border is the
object's foot (marching cubes rounds the corner where an object meets the floor): continued, it
would raise a dome over the floor. There the fill settles onto the plane that best fits the
surface around the hole (its farthest-off points, the rounded corner, left out), joining the
border within a few edges (a screened membrane)."""

from __future__ import annotations

import numpy as np
from scipy import sparse
from scipy.sparse.linalg import spsolve
from scipy.spatial import cKDTree

from ..mesh.topology import components, directed_edges, face_pairs

SCREEN = 0.2  # pull of the plane against the membrane: the fill joins its border within ~3 edges
PLANE_REACH = 2.0  # the surface within this many hole radii of a hole's centre is what its plane fits
PLANE_KEEP = 0.7  # the share of those points, nearest the plane, that the final fit uses


def fair(vertices: np.ndarray, faces: np.ndarray, free: np.ndarray) -> np.ndarray:
    """New positions (len(free), 3) of the vertices `free` on the surface `faces` (an object
    and its fills), the others held: the thin-plate fill."""
    if len(free) == 0:
        return np.zeros((0, 3))
    laplacian = _laplacian(faces, len(vertices))
    return _solve(laplacian[free] @ laplacian, vertices, free)


def settle(vertices: np.ndarray, faces: np.ndarray, fills: np.ndarray, free: np.ndarray) -> np.ndarray:
    """New positions (len(free), 3) of the vertices `free` of the `fills` (faces) of holes in
    the surface `faces`: each fill on the plane of the surface around its hole."""
    if len(free) == 0:
        return np.zeros((0, 3))
    laplacian = _laplacian(np.concatenate([faces, fills]), len(vertices))
    membrane = _solve(laplacian[free], vertices, free)
    piece = components(len(fills), face_pairs(fills))
    fill_of = np.zeros(len(vertices), np.int64)
    fill_of[fills.ravel()] = np.repeat(piece, 3)
    target = membrane.copy()
    surface = vertices[np.unique(faces)]
    tree = cKDTree(surface)
    for k in range(piece.max() + 1):
        border = np.unique(fills[piece == k])
        border = border[~np.isin(border, free)]
        centre = vertices[border].mean(0)
        radius = np.linalg.norm(vertices[border] - centre, axis=1).max()
        around = surface[tree.query_ball_point(centre, PLANE_REACH * radius)]
        mine = fill_of[free] == k
        if len(around) >= 3:
            origin, normal = _plane(around)
            target[mine] -= ((membrane[mine] - origin) @ normal)[:, None] * normal
    shifted = laplacian[free] - SCREEN * sparse.identity(len(vertices), format="csr")[free]
    return _solve(shifted, vertices, free, SCREEN * target)


def _laplacian(faces: np.ndarray, n: int) -> sparse.csr_matrix:
    """The umbrella operator: each vertex's neighbours' mean less itself (0 for an unused vertex)."""
    edges = directed_edges(faces)
    adjacency = sparse.coo_matrix((np.ones(2 * len(edges)), (np.r_[edges[:, 0], edges[:, 1]],
                                                              np.r_[edges[:, 1], edges[:, 0]])), shape=(n, n)).tocsr()
    adjacency.data[:] = 1.0  # an edge of two faces counts once
    degree = np.asarray(adjacency.sum(1)).ravel()
    return (sparse.diags(1 / np.maximum(degree, 1)) @ adjacency - sparse.diags((degree > 0).astype(float))).tocsr()


def _solve(rows: sparse.csr_matrix, vertices: np.ndarray, free: np.ndarray, rhs: np.ndarray | float = 0.0) -> np.ndarray:
    """The positions of `free` that make `rows` (one per free vertex) times all positions equal
    -`rhs`, the other vertices held."""
    rows = rows.tocsc()
    fixed = np.ones(len(vertices), bool)
    fixed[free] = False
    known = rows[:, np.flatnonzero(fixed)] @ vertices[fixed]
    return np.asarray(spsolve(rows[:, free], -known - rhs)).reshape(len(free), 3)


def _plane(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A point on and the normal of the plane through `points`, fitted again to the PLANE_KEEP
    of them nearest the first fit."""
    origin, normal = _least_squares_plane(points)
    offset = np.abs((points - origin) @ normal)
    return _least_squares_plane(points[offset <= np.quantile(offset, PLANE_KEEP)])


def _least_squares_plane(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    origin = points.mean(0)
    return origin, np.linalg.svd(points - origin, full_matrices=False)[2][-1]
