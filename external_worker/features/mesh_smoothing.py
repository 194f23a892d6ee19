"""Per-face class probabilities smoothed along the mesh: mean-field inference of a CRF whose
pairwise term (Potts) joins faces that share an edge, weaker across an edge whose two faces'
colours differ. A face alone against its neighbours (a speck left by a view's blob, a face at a
boundary the views disagree on) takes its neighbours' class; a boundary that follows a colour
edge stays where it is.
"""

from __future__ import annotations

import numpy as np
from scipy import sparse

from ..mesh.topology import face_pairs

STRENGTH = 3.0        # how much the neighbours' mean weighs against a face's own log-probability
COLOUR_SIGMA = 0.1    # colour distance (RGB in 0..1) at which an edge's weight falls to exp(-1/2)
ITERATIONS = 10


def smooth_on_mesh(probability: np.ndarray, faces: np.ndarray, face_colours: np.ndarray,
                   strength: float = STRENGTH, iterations: int = ITERATIONS) -> np.ndarray:
    """(F, C) probabilities after `iterations` mean-field updates:
    Q <- softmax(log P + strength * (weighted mean of the neighbours' Q)). `face_colours` (F, 3)
    in 0..1."""
    pairs = face_pairs(faces)
    if len(pairs) == 0 or iterations <= 0:
        return probability
    difference = face_colours[pairs[:, 0]] - face_colours[pairs[:, 1]]
    weight = np.exp(-np.einsum("ij,ij->i", difference, difference) / (2 * COLOUR_SIGMA ** 2))
    rows, cols = np.r_[pairs[:, 0], pairs[:, 1]], np.r_[pairs[:, 1], pairs[:, 0]]
    adjacency = sparse.csr_matrix((np.r_[weight, weight], (rows, cols)), shape=(len(faces), len(faces)))
    degree = np.asarray(adjacency.sum(1)).ravel().clip(1e-12)[:, None]
    unary = np.log(probability.clip(1e-12))
    q = probability
    for _ in range(iterations):
        logits = unary + strength * (adjacency @ q) / degree
        logits -= logits.max(1, keepdims=True)
        q = np.exp(logits)
        q /= q.sum(1, keepdims=True)
    return q.astype(np.float32)
