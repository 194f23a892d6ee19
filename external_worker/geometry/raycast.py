"""First triangle hit by a ray (Moeller-Trumbore, vectorised over all triangles).

A click casts one ray; testing every triangle in numpy takes milliseconds for a million faces,
so no acceleration structure is needed for that.
"""

from __future__ import annotations

import numpy as np


def first_hit(vertices: np.ndarray, faces: np.ndarray, origin: np.ndarray, direction: np.ndarray,
              chunk: int = 1 << 18) -> tuple[int, float]:
    """Index of the nearest triangle the ray hits and its distance along `direction`
    (normalised); (-1, inf) when it hits nothing."""
    direction = np.asarray(direction, np.float64)
    norm = np.linalg.norm(direction)
    if not np.isfinite(norm) or norm == 0:
        raise ValueError("the ray direction must be a non-zero finite vector")
    d = direction / norm
    o = np.asarray(origin, np.float64)
    best_face, best_t = -1, np.inf
    for start in range(0, len(faces), chunk):
        tri = vertices[faces[start:start + chunk]].astype(np.float64)
        e1, e2 = tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]
        p = np.cross(d, e2)
        det = np.einsum("ij,ij->i", e1, p)
        ok = np.abs(det) > 1e-12
        inv = np.where(ok, 1.0 / np.where(ok, det, 1.0), 0.0)
        s = o - tri[:, 0]
        u = np.einsum("ij,ij->i", s, p) * inv
        q = np.cross(s, e1)
        v = (q @ d) * inv
        t = np.einsum("ij,ij->i", e2, q) * inv
        hit = ok & (u >= 0) & (v >= 0) & (u + v <= 1) & (t > 1e-9)
        if hit.any():
            candidates = np.flatnonzero(hit)
            nearest = candidates[np.argmin(t[candidates])]
            if t[nearest] < best_t:
                best_face, best_t = start + int(nearest), float(t[nearest])
    return best_face, best_t
