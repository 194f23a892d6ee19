"""The split's answer: the parts, and the faces that close each object and fill the holes the
objects leave in the background (fill, fair), coloured from the border around them."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import trimesh
from scipy.spatial import cKDTree

from ..mesh.extract import Mesh
from ..progress import Reporter
from .assign import Partition
from .fair import fair, settle
from .fill import Patches, fill_loops

COLOUR_NEIGHBOURS = 8  # border vertices a new vertex takes its colour from


@dataclass
class Split:
    """The wire's SPLIT reply: `patch_faces` index the mesh's vertices, then `patch_vertices`."""

    names: list[str]
    closed: list[bool]         # per part: watertight with its fills
    face_part: np.ndarray      # (F,) int32
    patch_vertices: np.ndarray  # (P, 3) float32, world frame
    patch_colors: np.ndarray   # (P, 3) uint8 RGB
    patch_faces: np.ndarray    # (Q, 3) int32
    patch_part: np.ndarray     # (Q,) int32

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {"face_part": self.face_part, "patch_vertices": self.patch_vertices, "patch_colors": self.patch_colors,
                "patch_faces": self.patch_faces, "patch_part": self.patch_part}


def split_mesh(mesh: Mesh, partition: Partition, rim: np.ndarray, close: bool, fill_holes: bool,
               reporter: Reporter) -> Split:
    """Close every object (`close`) and fill the background's holes except along the scene's
    `rim` (sorted edge keys, rim.rim_keys) (`fill_holes`)."""
    n = len(mesh.vertices)
    vertices = np.asarray(mesh.vertices, np.float64)
    background = len(partition.names) - 1
    closed, all_vertices, all_faces, all_parts = [], [], [], []
    offset = 0
    for index, name in enumerate(partition.names):
        reporter.progress("split", index, len(partition.names), message=f"closing {name}")
        faces = mesh.faces[partition.face_part == index]
        patches = Patches.empty()
        if close and index != background or fill_holes and index == background:
            patches = fill_loops(vertices, faces, rim if index == background else np.zeros(0, np.int64))
        both = np.concatenate([vertices, patches.vertices])
        together = np.concatenate([faces, patches.faces])
        free = n + np.arange(len(patches.vertices))
        both[free] = settle(both, faces, patches.faces, free) if index == background else fair(both, together, free)
        closed.append(len(faces) > 0 and trimesh.Trimesh(both, together, process=False).is_watertight)
        all_vertices.append(both[free])
        all_faces.append(np.where(patches.faces >= n, patches.faces + offset, patches.faces))
        all_parts.append(np.full(len(patches.faces), index))
        offset += len(patches.vertices)
    reporter.progress("split", len(partition.names), len(partition.names))
    new_vertices = np.concatenate(all_vertices)
    new_faces = np.concatenate(all_faces)
    colours = _border_colours(mesh, new_vertices, new_faces)
    return Split(partition.names, closed, partition.face_part.astype(np.int32), new_vertices.astype(np.float32),
                 colours, new_faces.astype(np.int32), np.concatenate(all_parts).astype(np.int32))


def _border_colours(mesh: Mesh, points: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """RGB (P, 3) uint8 of new vertices: the inverse-distance mean of the nearest mesh vertices
    that the fills use (the borders of the holes)."""
    colours = np.clip(mesh.vertex_colors * 255 + 0.5, 0, 255)
    border = np.unique(faces[faces < len(mesh.vertices)])
    if len(points) == 0 or len(border) == 0:
        return np.zeros((len(points), 3), np.uint8)
    k = min(COLOUR_NEIGHBOURS, len(border))
    distance, nearest = cKDTree(mesh.vertices[border]).query(points, k=k)
    distance, nearest = distance.reshape(len(points), k), nearest.reshape(len(points), k)
    weight = 1 / np.maximum(distance, 1e-9) ** 2
    rgb = (colours[border[nearest]] * weight[..., None]).sum(1) / weight.sum(1, keepdims=True)
    return np.clip(rgb + 0.5, 0, 255).astype(np.uint8)
