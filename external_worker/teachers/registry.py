"""The teachers by name, behind one small interface (`Teacher`).

A teacher says how wide the rendered feature is, gives supervision for the training views and
the loss between rendered and teacher features. Teachers with an image model (`encodes_images`)
also supervise new views rendered by the NeRF. `make_teacher(name, dataset, device=...)` picks
one; `TEACHER_TYPES[name].from_dict(d, device=...)` restores one from a workspace. How the
per-face features of each teacher answer queries is the queries' business (queries/readers.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import numpy as np
import torch

from ..errors import WorkerError
from .clip import ClipFeatureTeacher
from .labels import LabelsTeacher
from .sam import SamFeatureTeacher
from .targets import PixelTargets

if TYPE_CHECKING:
    from ..datasets.dataset import Dataset


class Teacher(Protocol):
    """What feature training needs of a teacher, and what a workspace records of it."""

    name: str
    feature_dim: int       # channels of the rendered feature
    encodes_images: bool   # has `image_targets(image)` for views rendered by the NeRF
    votes_on_faces: bool   # its targets are classes: the views vote on each face's (features.face_votes)

    def targets(self, dataset: "Dataset", views: np.ndarray) -> PixelTargets: ...

    def loss(self, rendered: torch.Tensor, target: torch.Tensor) -> torch.Tensor: ...

    def to_dict(self) -> dict: ...

    @classmethod
    def from_dict(cls, d: dict, *, device: torch.device | str) -> "Teacher": ...


TEACHER_TYPES: dict[str, type[Teacher]] = {"labels": LabelsTeacher, "sam": SamFeatureTeacher,
                                           "clip": ClipFeatureTeacher}


def make_teacher(name: str, dataset: "Dataset", sam_checkpoint: str = "", clip_model: str = "",
                 clip_pretrained: str = "", *, device: torch.device | str) -> Teacher:
    """The teacher `name` for a dataset, its model on `device`; fails early (before any
    training) on bad settings."""
    if name == "labels":
        return LabelsTeacher.from_dataset(dataset)
    if name == "sam":
        return SamFeatureTeacher.from_dataset(dataset, sam_checkpoint, device=device)
    if name == "clip":
        return ClipFeatureTeacher.from_dataset(dataset, clip_model, clip_pretrained, device=device)
    raise WorkerError("unknown_teacher", f"unknown teacher '{name}'", f"Choose one of: {', '.join(TEACHER_TYPES)}.")
