"""Filling a part's open loops with MeshFix (pymeshfix): each loop triangulated, then refined
to the border's edge length. The part's own faces are never touched: only the faces MeshFix
adds are kept, mapped back onto the mesh's vertices by position (MeshFix renumbers them).

Where a loop touches itself (two parts meeting at a single vertex), MeshFix splits the vertex
and fills the loops on each side; mapped back, some of those faces collapse onto the vertex or
meet on an edge a third time. They are dropped, and what is left open is closed by fans
(loops), which never use an edge a third time."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pymeshfix
from scipy.spatial import cKDTree

from .loops import fan, holes_and_rims
from ..mesh.topology import components, directed_edges, edge_keys, face_keys, face_pairs, open_edges

AROUND = 3  # rings of faces around the holes MeshFix reads: its fill looks no farther


@dataclass
class Patches:
    """Faces filling holes of a part: `faces` index the mesh's vertices, then `vertices`."""

    vertices: np.ndarray  # (P, 3) float64, the new vertices
    faces: np.ndarray     # (Q, 3) int64

    @classmethod
    def empty(cls) -> "Patches":
        return cls(np.zeros((0, 3)), np.zeros((0, 3), np.int64))


def fill_loops(vertices: np.ndarray, faces: np.ndarray, rim: np.ndarray) -> Patches:
    """The fills of the open loops of `faces` (a part, indexing `vertices`) that have no edge
    whose key (topology.edge_keys) is in `rim`, wound like the part."""
    n = len(vertices)
    border = open_edges(faces)
    cycles, _ = holes_and_rims(border, rim)
    if not cycles:
        return Patches.empty()
    holes = border[np.concatenate(cycles)]
    # MeshFix reads the faces around the holes only, and fills every loop it is given: the other
    # loops of that neighbourhood (where it was cut out, the rim) are capped for it, the caps left out.
    near = _around(faces, holes)
    near_border = open_edges(near)
    elsewhere = edge_keys(near_border)[~np.isin(edge_keys(near_border), edge_keys(holes))]
    centres, caps = fan(near_border, holes_and_rims(near_border, elsewhere)[1], vertices)
    points, added = _meshfix(np.concatenate([vertices, centres]), np.concatenate([near, caps]))
    added = np.where(added >= n, added - len(centres), added)  # no fill reaches into a cap
    if len(added):
        added = _sound(near, added, holes, n)
    points, added = _compact(points, added, n)
    left = open_edges(np.concatenate([faces, added]))
    centres, fans = fan(left, holes_and_rims(left, rim)[0], np.concatenate([vertices, points]))
    return Patches(np.concatenate([points, centres]), np.concatenate([added, fans]))


def _around(faces: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """The faces within AROUND rings of faces of the ends of `edges`."""
    touched = np.unique(edges)
    for _ in range(AROUND):
        near = faces[np.isin(faces, touched).any(1)]
        touched = np.unique(near)
    return near


def _compact(points: np.ndarray, faces: np.ndarray, n_old: int) -> tuple[np.ndarray, np.ndarray]:
    """The new `points` the `faces` use (numbered from `n_old`), and the faces renumbered."""
    used = np.unique(faces[faces >= n_old]) - n_old
    renumber = np.zeros(len(points), np.int64)
    renumber[used] = n_old + np.arange(len(used))
    return points[used], np.where(faces >= n_old, renumber[np.maximum(faces - n_old, 0)], faces)


def _meshfix(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The vertices and faces MeshFix adds filling every open loop of `faces`; the faces index
    `vertices`, then the new vertices."""
    used, local = np.unique(faces, return_inverse=True)
    points = np.ascontiguousarray(vertices[used], np.float64)
    mesh = pymeshfix.PyTMesh()
    mesh.set_quiet(True)
    mesh.load_array(points, np.ascontiguousarray(local.reshape(-1, 3), np.int32))
    mesh.fill_small_boundaries(nbe=0, refine=True)
    out_points, out_faces = mesh.return_arrays()
    distance, nearest = cKDTree(points).query(out_points)
    old = distance == 0  # MeshFix keeps the coordinates of the vertices it was given
    index = np.where(old, used[nearest], len(vertices) + np.cumsum(~old) - 1)
    out_faces = index[np.asarray(out_faces, np.int64)]
    added = (out_faces >= len(vertices)).any(1) | ~np.isin(face_keys(out_faces), face_keys(faces))
    collapsed = ((out_faces[:, 0] == out_faces[:, 1]) | (out_faces[:, 1] == out_faces[:, 2])
                 | (out_faces[:, 2] == out_faces[:, 0]))
    return out_points[~old], out_faces[added & ~collapsed]


def _sound(faces: np.ndarray, added: np.ndarray, loops: np.ndarray, n_old: int) -> np.ndarray:
    """The faces of `added` worth keeping, each fill (connected set of them) wound like the
    surface `faces`: fills whose outline is not made of `loops` (a loop MeshFix made up) are
    dropped, and so are faces on an edge used a third time."""
    fill = components(len(added), face_pairs(added))
    edges = directed_edges(added)
    owner = fill[np.arange(len(edges)) % len(added)]
    outline = np.isin(edge_keys(edges), edge_keys(open_edges(added)))
    stray = outline & ~((edges < n_old).all(1) & np.isin(edge_keys(edges), edge_keys(loops)))
    # Wound like the surface: each outline edge runs the other way in the surface.
    same_way = outline & np.isin(_directed_keys(edges), _directed_keys(loops))
    flip = np.bincount(owner, same_way, minlength=fill.max() + 1) > np.bincount(owner, outline) / 2
    added = np.where(flip[fill][:, None], added[:, ::-1], added)
    added = added[np.bincount(owner, stray, minlength=len(flip))[fill] == 0]
    keys, count = np.unique(edge_keys(directed_edges(np.concatenate([faces, added]))), return_counts=True)
    crowded = (count[np.searchsorted(keys, edge_keys(directed_edges(added)))] > 2).reshape(3, -1).any(0)
    return added[~crowded]


def _directed_keys(edges: np.ndarray) -> np.ndarray:
    """Keys that tell a -> b from b -> a."""
    return edge_keys(edges) * 2 + (edges[:, 0] < edges[:, 1])
