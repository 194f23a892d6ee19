"""What every query reads: the mesh as rays see it and one teacher's per-face features,
kept in memory per process while their files are unchanged."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import WorkerError
from ..features.face_codes import FaceCodes
from ..teachers.registry import TEACHER_TYPES, Teacher
from ..workspace import Files, Stages, Workspace, cached
from .click import Geometry


@dataclass
class FaceFeatures:
    """One teacher's per-face features with the teacher that reads them."""

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
        background = np.asarray(info["background"], np.float32) if "background" in info else None
        with np.load(path, allow_pickle=False) as arrays:
            codes = FaceCodes(**{k: arrays[k] for k in ("code", "weight", "bias", "norm")})
        return FaceFeatures(TEACHER_TYPES[teacher].from_dict(info["teacher"]), codes, background)

    return cached(workspace.path(Files.face_features(teacher)), load)


def load_geometry(workspace: Workspace) -> Geometry:
    workspace.require(Stages.MESH, "the mesh stage")
    return cached(workspace.path(Files.MESH), lambda path: Geometry.of(**{
        k: v for k, v in workspace.load_npz(Files.MESH).items() if k in ("vertices", "faces")}))
