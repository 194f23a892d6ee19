"""Quality measures against ground truth: per-face mIoU of a segmented mesh, the same where
objects touch (contact IoU), Chamfer distance, and the surface a mesh has where the truth has none.

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


def contact_miou(vertices: np.ndarray, faces: np.ndarray, predicted: np.ndarray, gt_vertices: np.ndarray,
                 gt_faces: np.ndarray, gt_face_labels: np.ndarray, label_ids: list[int], radius: float,
                 samples: int = 500_000, seed: int = 0) -> tuple[float, dict[int, float], float]:
    """`face_miou` over the faces within `radius` of another object's true surface (a mug's base
    on a cabinet, a ball against a crate, every object's foot on the floor): where a selection
    most easily takes a bite of its support or leaves its base behind. Returns the mean over the
    objects that have such faces, the per-object values and the contact faces' share of the area."""
    mesh = trimesh.Trimesh(vertices, faces, process=False)
    gt = trimesh.Trimesh(gt_vertices, gt_faces, process=False)
    points, face_index = trimesh.sample.sample_surface(gt, samples, seed=seed)
    point_labels = gt_face_labels[face_index]
    centroids = mesh.triangles_center
    truth = point_labels[cKDTree(points).query(centroids)[1]]
    near_other = np.zeros(len(centroids), bool)
    for label in np.unique(point_labels):
        others = truth != label
        if others.any():
            distance = cKDTree(points[point_labels == label]).query(centroids[others])[0]
            near_other[np.flatnonzero(others)[distance < radius]] = True
    area = mesh.area_faces
    ious = {}
    for label in label_ids:
        p, t = (predicted == label) & near_other, (truth == label) & near_other
        union = area[p | t].sum()
        if union > 0:
            ious[label] = float(area[p & t].sum() / union)
    share = float(area[near_other].sum() / area.sum()) if area.sum() else 0.0
    return (float(np.mean(list(ious.values()))) if ious else float("nan")), ious, share


def crop_to_box(vertices: np.ndarray, faces: np.ndarray, face_labels: np.ndarray, box: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ground-truth surface inside `box` (2, 3), its triangles cut at the box's walls: what a
    mesh extracted in the box can hold (a floor reaching past it ends at the walls). Returns the
    vertices and faces of the cut surface (only the vertices it uses) and each face's label."""
    parts_vertices, parts_faces, parts_labels, offset = [], [], [], 0
    for label in np.unique(face_labels):
        v, f = vertices, faces[face_labels == label]
        for axis in range(3):
            for sign, side in ((1.0, box[0, axis]), (-1.0, box[1, axis])):
                if len(f) == 0:
                    break
                normal, origin = np.zeros(3), np.zeros(3)
                normal[axis], origin[axis] = sign, side  # keeps the side the normal points to
                v, f, _ = trimesh.intersections.slice_faces_plane(v, f, normal, origin)
        if len(f) == 0:
            continue
        used, f = np.unique(f, return_inverse=True)
        parts_vertices.append(v[used])
        parts_faces.append(f.reshape(-1, 3) + offset)
        parts_labels.append(np.full(len(parts_faces[-1]), label))
        offset += len(used)
    if not parts_faces:
        return np.zeros((0, 3)), np.zeros((0, 3), np.int64), np.zeros(0, face_labels.dtype)
    return (np.concatenate(parts_vertices), np.concatenate(parts_faces),
            np.concatenate(parts_labels).astype(face_labels.dtype))


def stray_area(vertices: np.ndarray, faces: np.ndarray, box: np.ndarray, floor_height: float | None,
               tolerance: float) -> tuple[float, float]:
    """Mesh area (scene units^2) below the floor (face centres lower than `floor_height` -
    `tolerance`; 0 without a floor) and on the box's walls (centres within `tolerance` of a
    wall, facing along its normal): surfaces no real content has there."""
    mesh = trimesh.Trimesh(vertices, faces, process=False)
    centres, normals, area = mesh.triangles_center, mesh.face_normals, mesh.area_faces
    below = 0.0 if floor_height is None else float(area[centres[:, 2] < floor_height - tolerance].sum())
    on_wall = np.zeros(len(faces), bool)
    for axis in range(3):
        facing = np.abs(normals[:, axis]) > 0.9
        for side in box[:, axis]:
            on_wall |= facing & (np.abs(centres[:, axis] - side) < tolerance)
    return below, float(area[on_wall].sum())


def chamfer(vertices: np.ndarray, faces: np.ndarray, gt_vertices: np.ndarray, gt_faces: np.ndarray,
            samples: int = 200_000, seed: int = 0) -> tuple[float, float]:
    """Mean symmetric surface distance, and the same as a fraction of the diagonal of the ground
    truth's bounding box (of the vertices its faces use)."""
    a = trimesh.sample.sample_surface(trimesh.Trimesh(vertices, faces, process=False), samples, seed=seed)[0]
    b = trimesh.sample.sample_surface(trimesh.Trimesh(gt_vertices, gt_faces, process=False), samples, seed=seed)[0]
    distance = (cKDTree(b).query(a)[0].mean() + cKDTree(a).query(b)[0].mean()) / 2
    used = gt_vertices[np.unique(gt_faces)]
    extent = float(np.linalg.norm(used.max(0) - used.min(0)))
    return float(distance), float(distance / extent)
