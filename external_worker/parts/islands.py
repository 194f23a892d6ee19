"""Label specks are noise, not objects: a few faces labelled 'ground' on a cube's side would
leave a hole in the cube, and a stray 'cube' patch on the floor would be closed into a tiny
blob of its own. A part's connected piece smaller than SPECK_SHARE of the mesh's area, unless
it is the part's largest, joins the part it shares the most edges with. The share is of the
whole mesh, not of the part: the floor seen through a torus's hole is a small piece of a big
floor, yet no speck."""

from __future__ import annotations

import numpy as np

from ..mesh.topology import components

SPECK_SHARE = 0.001  # of the mesh's area
PASSES = 3  # a speck inside a speck joins its surroundings on a later pass


def merge_islands(face_part: np.ndarray, pairs: np.ndarray, area: np.ndarray) -> np.ndarray:
    """`face_part` (F,) with each speck given to its neighbour; `pairs` are the faces sharing an
    edge (topology.face_pairs), `area` the faces' areas."""
    part = np.array(face_part, copy=True)
    for _ in range(PASSES):
        same = part[pairs[:, 0]] == part[pairs[:, 1]]
        piece = components(len(part), pairs[same])
        piece_area = np.bincount(piece, area)
        piece_part = np.zeros(len(piece_area), part.dtype)
        piece_part[piece] = part
        _, owner = np.unique(piece_part, return_inverse=True)
        largest = np.zeros(owner.max() + 1)
        np.maximum.at(largest, owner, piece_area)
        speck = (piece_area < SPECK_SHARE * area.sum()) & (piece_area < largest[owner])
        cross = pairs[~same]
        inside, outside = np.concatenate([cross, cross[:, ::-1]]).T
        keep = speck[piece[inside]]
        if not keep.any():
            break
        # The neighbouring part each speck shares the most edges with.
        neighbours, counts = np.unique(np.stack([piece[inside[keep]], part[outside[keep]]], 1), axis=0,
                                       return_counts=True)
        order = np.lexsort((counts, neighbours[:, 0]))
        last = np.r_[neighbours[order[1:], 0] != neighbours[order[:-1], 0], True]
        best = neighbours[order[last]]
        new_part = piece_part.copy()
        new_part[best[:, 0]] = best[:, 1]
        part = new_part[piece]
    return part
