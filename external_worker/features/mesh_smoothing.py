"""Per-face values along the mesh, between faces that share an edge.

- `smooth_on_mesh`: class probabilities smoothed by mean-field inference of a CRF whose pairwise
  term (Potts) joins neighbouring faces, weaker across an edge whose two faces' colours differ.
  A face alone against its neighbours (a speck left by a view's blob, a face at a boundary the
  views disagree on) takes its neighbours' class; a boundary that follows a colour edge stays.
- `fill_unknown`: values where they are unknown (faces no view saw: an object's underside, its
  back) by harmonic interpolation from the known faces around them.
"""

from __future__ import annotations

import numpy as np
from scipy import sparse
from scipy.sparse.linalg import spsolve

from ..mesh.topology import face_pairs

STRENGTH = 3.0        # how much the neighbours' mean weighs against a face's own log-probability
COLOUR_SIGMA = 0.1    # colour distance (RGB in 0..1) at which an edge's weight falls to exp(-1/2)
ITERATIONS = 10


def face_adjacency(faces: np.ndarray, pairs: np.ndarray | None = None,
                   weight: np.ndarray | None = None) -> sparse.csr_matrix:
    """(F, F) symmetric adjacency of faces sharing an edge (`face_pairs`, unless given), each
    pair with its weight (1 by default)."""
    pairs = face_pairs(faces) if pairs is None else pairs
    weight = np.ones(len(pairs)) if weight is None else weight
    rows, cols = np.r_[pairs[:, 0], pairs[:, 1]], np.r_[pairs[:, 1], pairs[:, 0]]
    return sparse.csr_matrix((np.r_[weight, weight], (rows, cols)), shape=(len(faces), len(faces)))


def fill_unknown(values: np.ndarray, known: np.ndarray, adjacency: sparse.csr_matrix) -> np.ndarray:
    """(F,) `values` with each unknown face's replaced by the harmonic interpolation of the known
    ones (each unknown face the mean of its neighbours); 0 where no known face is connected."""
    unknown = np.flatnonzero(~known)
    if len(unknown) == 0 or not known.any():
        return np.where(known, values, 0.0)
    inner = adjacency[unknown][:, unknown]
    border = adjacency[unknown][:, np.flatnonzero(known)] @ values[known]
    degree = np.asarray(adjacency[unknown].sum(1)).ravel()
    # A small leak to 0 keeps components with no known face solvable (they come out 0).
    system = sparse.diags(degree + 1e-6) - inner
    out = values.astype(np.float64).copy()
    out[unknown] = spsolve(system.tocsc(), border)
    return out


def smooth_on_mesh(probability: np.ndarray, faces: np.ndarray, face_colours: np.ndarray,
                   strength: float = STRENGTH, iterations: int = ITERATIONS) -> np.ndarray:
    """(F, C) probabilities after `iterations` mean-field updates:
    Q <- softmax(log P + strength * (weighted mean of the neighbours' Q)). `face_colours` (F, 3)
    in 0..1."""
    pairs = face_pairs(faces)
    if len(pairs) == 0 or iterations <= 0:
        return probability
    difference = face_colours[pairs[:, 0]] - face_colours[pairs[:, 1]]
    adjacency = face_adjacency(faces, pairs, np.exp(-np.einsum("ij,ij->i", difference, difference)
                                                    / (2 * COLOUR_SIGMA ** 2)))
    degree = np.asarray(adjacency.sum(1)).ravel().clip(1e-12)[:, None]
    unary = np.log(probability.clip(1e-12))
    q = probability
    for _ in range(iterations):
        logits = unary + strength * (adjacency @ q) / degree
        logits -= logits.max(1, keepdims=True)
        q = np.exp(logits)
        q /= q.sum(1, keepdims=True)
    return q.astype(np.float32)
