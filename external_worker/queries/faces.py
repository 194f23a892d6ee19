"""What every query reads: the mesh as rays see it and one teacher's per-face features,
kept in memory per process while their files are unchanged."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
from scipy import sparse

from ..errors import WorkerError
from ..features.face_codes import FaceCodes
from ..features.mesh_smoothing import face_adjacency
from ..geometry.raycast import first_hit
from ..teachers.registry import TEACHER_TYPES, Teacher
from ..training import device
from ..workspace import Files, Stages, Workspace, cached


def unit_rays(v: np.ndarray, what: str) -> np.ndarray:
    """(N, 3) ray directions made unit length; a zero or non-finite one is a bad prompt."""
    norm = np.linalg.norm(v, axis=1, keepdims=True)
    if not np.isfinite(v).all() or (norm == 0).any():
        raise WorkerError("bad_prompt", f"a {what} ray has no direction", "Send non-zero, finite ray directions.")
    return v / norm


@dataclass
class Geometry:
    """A mesh as the click code needs it: triangles' centroids, unit normals and bounding radii."""

    vertices: np.ndarray
    faces: np.ndarray
    centroids: np.ndarray
    normals: np.ndarray
    radii: np.ndarray  # farthest vertex from the centroid, per face

    @classmethod
    def of(cls, vertices: np.ndarray, faces: np.ndarray) -> "Geometry":
        tri = vertices[faces]
        centroids = tri.mean(1)
        normals = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
        normals /= np.linalg.norm(normals, axis=1, keepdims=True).clip(1e-12)
        radii = np.linalg.norm(tri - centroids[:, None], axis=2).max(1)
        return cls(vertices, faces, centroids, normals, radii)

    @cached_property
    def adjacency(self) -> sparse.csr_matrix:
        """Faces sharing an edge (made at the first query that walks the mesh, then kept)."""
        return face_adjacency(self.faces)

    def hit(self, origin: np.ndarray, direction: np.ndarray) -> tuple[int, float]:
        """First face the ray hits and its distance ((-1, inf) for none). Only faces whose bounding
        sphere the ray's line passes through are tested, a few hundred of a mesh's 100k+."""
        direction = unit_rays(np.asarray(direction, np.float64)[None], "click")[0]
        to_centroid = self.centroids - np.asarray(origin, np.float64)
        along = to_centroid @ direction
        off_line = np.einsum("ij,ij->i", to_centroid, to_centroid) - along ** 2
        near = np.flatnonzero(off_line <= self.radii ** 2 * 1.0001)
        face, distance = first_hit(self.vertices, self.faces[near], origin, direction)
        return (int(near[face]), distance) if face >= 0 else (-1, distance)


@dataclass
class FaceFeatures:
    """One teacher's per-face features, the teacher that made them, and what the field renders
    where there is nothing (SAM's click views need it around the mesh)."""

    teacher: Teacher
    features: FaceCodes
    background: np.ndarray | None


def load_face_features(workspace: Workspace, teacher: str) -> FaceFeatures:
    info = workspace.require(Stages.face_features(teacher), f"feature training with the '{teacher}' teacher")
    if not workspace.path(Files.face_features(teacher)).exists():
        raise WorkerError("stage_missing", f"the per-face features of the '{teacher}' teacher are missing from "
                          f"{workspace.root}", "Press Train again: only the per-face step runs.")

    def load(path: Path) -> FaceFeatures:
        # Kept per process, so the teacher (a SAM model) is loaded once, not per click.
        with workspace.reading(Files.STATE):
            background = np.asarray(info["background"], np.float32) if "background" in info else None
            reader = TEACHER_TYPES[teacher].from_dict(info["teacher"], device=device())
        arrays = workspace.load_npz(Files.face_features(teacher))
        with workspace.reading(Files.face_features(teacher)):
            codes = FaceCodes(**{k: arrays[k] for k in ("code", "weight", "bias", "norm")})
        return FaceFeatures(reader, codes, background)

    return cached(workspace.path(Files.face_features(teacher)), load)


def load_geometry(workspace: Workspace) -> Geometry:
    workspace.require(Stages.MESH, "the mesh stage")
    def load(path: Path) -> Geometry:
        arrays = workspace.load_npz(Files.MESH)
        with workspace.reading(Files.MESH):
            return Geometry.of(arrays["vertices"], arrays["faces"])

    return cached(workspace.path(Files.MESH), load)
