"""Quality measures against ground truth: per-face mIoU of a segmented mesh, Chamfer distance.

Torch-free: the add-on's tests, on every Blender version, score meshes with it."""

from __future__ import annotations

import numpy as np
import trimesh
from scipy.spatial import cKDTree


def nearest_ground_truth_labels(centroids: np.ndarray, gt_vertices: np.ndarray, gt_faces: np.ndarray,
                                gt_face_labels: np.ndarray, samples: int = 500_000, seed: int = 0) -> np.ndarray:
    """Label of the nearest ground-truth surface for each point, via a dense surface sampling."""
    gt = trimesh.Trimesh(gt_vertices, gt_faces, process=False)
    points, face_index = trimesh.sample.sample_surface(gt, samples, seed=seed)
    _, nearest = cKDTree(points).query(centroids)
    return gt_face_labels[face_index[nearest]]


def face_miou(vertices: np.ndarray, faces: np.ndarray, predicted: np.ndarray, gt_vertices: np.ndarray,
              gt_faces: np.ndarray, gt_face_labels: np.ndarray, label_ids: list[int]) -> tuple[float, dict[int, float]]:
    """Area-weighted IoU per object between predicted face labels and the labels of the nearest
    ground-truth surface; returns the mean over objects and the per-object values."""
    mesh = trimesh.Trimesh(vertices, faces, process=False)
    truth = nearest_ground_truth_labels(mesh.triangles_center, gt_vertices, gt_faces, gt_face_labels)
    area = mesh.area_faces
    ious = {}
    for label in label_ids:
        p, t = predicted == label, truth == label
        union = area[p | t].sum()
        ious[label] = float(area[p & t].sum() / union) if union > 0 else float("nan")
    return float(np.nanmean(list(ious.values()))), ious


def chamfer(vertices: np.ndarray, faces: np.ndarray, gt_vertices: np.ndarray, gt_faces: np.ndarray,
            samples: int = 200_000, seed: int = 0) -> tuple[float, float]:
    """Mean symmetric surface distance, and the same as a fraction of the ground truth's bounding-box diagonal."""
    a = trimesh.sample.sample_surface(trimesh.Trimesh(vertices, faces, process=False), samples, seed=seed)[0]
    b = trimesh.sample.sample_surface(trimesh.Trimesh(gt_vertices, gt_faces, process=False), samples, seed=seed)[0]
    distance = (cKDTree(b).query(a)[0].mean() + cKDTree(a).query(b)[0].mean()) / 2
    extent = float(np.linalg.norm(gt_vertices.max(0) - gt_vertices.min(0)))
    return float(distance), float(distance / extent)
