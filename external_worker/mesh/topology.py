"""Which faces and edges of a triangle mesh touch: what cutting a mesh into parts, and closing
them, is decided on. Edges are vertex pairs; an undirected edge is known by one integer key."""

from __future__ import annotations

import numpy as np
from scipy import sparse
from scipy.sparse.csgraph import connected_components


def directed_edges(faces: np.ndarray) -> np.ndarray:
    """(3F, 2) the edges of every face in its winding order: face i gives rows i, F + i, 2F + i."""
    faces = np.asarray(faces, np.int64)
    return np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])


def edge_keys(edges: np.ndarray) -> np.ndarray:
    """One int64 per undirected edge (the same for a -> b and b -> a), whatever the mesh."""
    edges = np.asarray(edges, np.int64).reshape(-1, 2)
    return (edges.min(1) << 32) | edges.max(1)


def open_edges(faces: np.ndarray) -> np.ndarray:
    """(E, 2) the edges only one of `faces` has, in that face's winding: the borders of a surface."""
    edges = directed_edges(faces)
    _, inverse, counts = np.unique(edge_keys(edges), return_inverse=True, return_counts=True)
    return edges[counts[inverse] == 1]


def face_pairs(faces: np.ndarray) -> np.ndarray:
    """(P, 2) the pairs of faces that share an edge no third face has."""
    keys = edge_keys(directed_edges(faces))
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    starts = np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]])
    sizes = np.diff(np.r_[starts, len(keys)])
    twice = starts[sizes == 2]
    return np.stack([order[twice], order[twice + 1]], 1) % len(faces)


def components(n: int, pairs: np.ndarray) -> np.ndarray:
    """(n,) component index of each of n nodes joined by `pairs` (a node alone is its own)."""
    graph = sparse.coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    return connected_components(graph, directed=False)[1]


def face_keys(faces: np.ndarray) -> np.ndarray:
    """One value per face whatever its winding and first corner (np.isin compares them)."""
    rows = np.ascontiguousarray(np.sort(np.asarray(faces, np.int64), 1))
    return rows.view(np.dtype((np.void, rows.itemsize * 3))).ravel()
