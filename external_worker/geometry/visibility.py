"""Which mesh faces a camera sees: a z-buffer of face centroids splatted into the image.

Marching-cubes faces are smaller than a pixel at the resolutions we use, so nearest-centroid
splatting gives a dense depth buffer without a rasteriser; a face is visible when it faces the
camera and lies within a small tolerance of the buffer's depth at its pixel.
"""

from __future__ import annotations

import numpy as np

from .camera import MIN_DEPTH, Cameras, project


def visible_faces(centroids: np.ndarray, normals: np.ndarray, c2w: np.ndarray, intrinsics: np.ndarray,
                  height: int, width: int, tolerance: float, occluder: np.ndarray | None = None
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Faces of the mesh seen by one camera.

    `occluder` (height, width): depth along the view axis of what else hides the mesh at each
    pixel (the radiance field's surface, which goes on past the mesh's box: a floor the mesh
    was cut from).

    Returns the visible mask (F,) and each face's pixel index (row * width + col; -1 outside)."""
    u, v, depth = project(centroids, c2w, intrinsics)
    col, row = np.floor(u).astype(np.int64), np.floor(v).astype(np.int64)
    inside = (depth > MIN_DEPTH) & (col >= 0) & (col < width) & (row >= 0) & (row < height)
    pixel = np.where(inside, row * width + col, -1)
    zbuffer = np.full(height * width, np.inf)
    np.minimum.at(zbuffer, pixel[inside], depth[inside])
    nearest = zbuffer[pixel[inside]]
    if occluder is not None:
        nearest = np.minimum(nearest, occluder.reshape(-1)[pixel[inside]])
    to_camera = c2w[:3, 3] - centroids
    facing = np.einsum("ij,ij->i", normals, to_camera) > 0
    visible = np.zeros(len(centroids), dtype=bool)
    visible[inside] = facing[inside] & (depth[inside] <= nearest + tolerance)
    return visible, pixel


def seen_by_any(centroids: np.ndarray, normals: np.ndarray, cameras: Cameras, tolerance: float,
                occluders: list[np.ndarray] | None = None) -> np.ndarray:
    """Faces visible from at least one of the cameras (each with its `occluder` depth map, if given)."""
    seen = np.zeros(len(centroids), dtype=bool)
    for i, (pose, k) in enumerate(zip(cameras.c2w, cameras.intrinsics)):
        occluder = None if occluders is None else occluders[i]
        seen |= visible_faces(centroids, normals, pose, k, cameras.height, cameras.width, tolerance, occluder)[0]
    return seen
