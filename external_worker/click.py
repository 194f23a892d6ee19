"""A click answered by SAM's decoder on features rendered from the mesh (SAN eq. 7).

The click arrives as a ray. We look along it with a virtual square camera, so the clicked point
is the image centre; the feature map of that camera is the per-face features of the face seen
in each of SAM's 64 x 64 cells (faces are smaller than cells, so a z-buffer of face centroids
covers the image), with the field's background feature elsewhere. SAM's prompt encoder and mask
decoder turn it into a mask, and the mask is carried to the faces visible in that view.
No image encoder runs at query time.
"""

from __future__ import annotations

import numpy as np
import torch

from .sam_teacher import SAM_FEATURE_SIZE, SamTeacher
from .visibility import visible_faces

VIEW_SIZE = 256         # pixels of the virtual view (SAM upsamples its masks to this)
VIEW_FOV_DEGREES = 50.0


def camera_along_ray(origin: np.ndarray, direction: np.ndarray) -> np.ndarray:
    """OpenGL camera-to-world at `origin` looking along `direction`."""
    forward = np.asarray(direction, np.float64) / np.linalg.norm(direction)
    helper = np.array([0.0, 0.0, 1.0]) if abs(forward[2]) < 0.9 else np.array([0.0, 1.0, 0.0])
    right = np.cross(forward, helper)
    right /= np.linalg.norm(right)
    up = np.cross(right, forward)
    c2w = np.eye(4)
    c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = right, up, -forward, origin
    return c2w


def intrinsics_for(size: int, fov_degrees: float = VIEW_FOV_DEGREES) -> np.ndarray:
    focal = 0.5 * size / np.tan(np.radians(fov_degrees) / 2)
    return np.array([focal, focal, size / 2, size / 2])


def render_feature_map(face_features: np.ndarray, background: np.ndarray, centroids: np.ndarray,
                       normals: np.ndarray, c2w: np.ndarray, tolerance: float) -> torch.Tensor:
    """(C, 64, 64) features of the virtual camera: the nearest visible face in each cell."""
    cells = SAM_FEATURE_SIZE
    visible, pixel = visible_faces(centroids, normals, c2w, intrinsics_for(cells), cells, cells, tolerance)
    out = np.tile(background.astype(np.float32), (cells * cells, 1))
    faces = np.flatnonzero(visible)
    depth = np.linalg.norm(centroids[faces] - c2w[:3, 3], axis=1)
    nearest_first = faces[np.argsort(-depth)]  # later writes win: the nearest face per cell
    out[pixel[nearest_first]] = face_features[nearest_first].astype(np.float32)
    return torch.from_numpy(out.T.reshape(-1, cells, cells))


def sam_click(teacher: SamTeacher, face_features: np.ndarray, background: np.ndarray, vertices: np.ndarray,
              faces: np.ndarray, origin: np.ndarray, direction: np.ndarray, tolerance: float) -> np.ndarray:
    """Per-face probability of the object under the clicked ray: SAM's best mask in the view along the ray."""
    tri = vertices[faces]
    centroids = tri.mean(1)
    normals = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    normals /= np.linalg.norm(normals, axis=1, keepdims=True).clip(1e-12)
    c2w = camera_along_ray(origin, direction)
    features = render_feature_map(face_features, background, centroids, normals, c2w, tolerance)
    centre = np.array([[VIEW_SIZE / 2, VIEW_SIZE / 2]])
    masks, _ = teacher.decode(features.to(teacher.device), (VIEW_SIZE, VIEW_SIZE), centre, np.array([1]))
    visible, pixel = visible_faces(centroids, normals, c2w, intrinsics_for(VIEW_SIZE), VIEW_SIZE, VIEW_SIZE, tolerance)
    probability = np.zeros(len(faces), np.float32)
    probability[visible] = masks[0].reshape(-1)[pixel[visible]]
    return probability
