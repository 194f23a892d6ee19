"""2D teachers whose per-pixel outputs the feature field learns to render, behind one interface.

A teacher says how wide the rendered feature is, gives supervision for the training views, the
loss between rendered and teacher features, and how a text query reads the per-face features.
Registry in the style of segment-anything's `sam_model_registry`: `TEACHERS[name](dataset)`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import numpy as np
import torch

from .errors import DatasetError, WorkerError

if TYPE_CHECKING:
    from .datasets import Dataset


@dataclass
class PixelTargets:
    """Supervision for a set of pixels: which view/pixel, and the teacher's value there."""

    view: np.ndarray   # (P,) index into the dataset's views
    pixel: np.ndarray  # (P,) row * width + col
    value: torch.Tensor  # (P,) class index (labels) or (P, C) features


class LabelsTeacher:
    """Known per-image label maps lifted to 3D. The field renders one logit per label; a text
    query is a label name and reads the softmax probability of that label."""

    name = "labels"

    def __init__(self, class_ids: list[int], class_names: list[str]) -> None:
        self.class_ids = class_ids
        self.class_names = class_names

    @property
    def feature_dim(self) -> int:
        return len(self.class_ids)

    @classmethod
    def from_dataset(cls, dataset: "Dataset") -> "LabelsTeacher":
        if dataset.labels is None or not dataset.has_labels.any():
            raise DatasetError(f"the labels teacher needs label maps, and none were found under {dataset.root / 'labels'}",
                               "Add labels/<image path>.png (0 = unlabelled) and labels.json, or pick another teacher.")
        ids = sorted(int(i) for i in np.unique(dataset.labels[dataset.has_labels]) if i > 0)
        if not ids:
            raise DatasetError(f"every label map under {dataset.root / 'labels'} is empty (all 0)",
                               "Label at least one object with an id > 0.")
        names = [dataset.label_names.get(i, str(i)) for i in ids]
        return cls(ids, names)

    def to_dict(self) -> dict:
        return {"name": self.name, "class_ids": self.class_ids, "class_names": self.class_names}

    @classmethod
    def from_dict(cls, d: dict) -> "LabelsTeacher":
        return cls(list(d["class_ids"]), list(d["class_names"]))

    def targets(self, dataset: "Dataset", views: np.ndarray) -> PixelTargets:
        """Every labelled pixel of the given views (views without a map give nothing)."""
        lookup = np.full(max(self.class_ids) + 1, -1, dtype=np.int64)
        lookup[self.class_ids] = np.arange(len(self.class_ids))
        all_views, all_pixels, all_values = [], [], []
        for v in views:
            if not dataset.has_labels[v]:
                continue
            flat = dataset.labels[v].reshape(-1)
            pixel = np.flatnonzero(flat > 0)
            all_views.append(np.full(len(pixel), v))
            all_pixels.append(pixel)
            all_values.append(lookup[np.minimum(flat[pixel], len(lookup) - 1)])
        if not all_views:
            raise DatasetError("none of the training views has a label map", "Label some training views.")
        return PixelTargets(np.concatenate(all_views), np.concatenate(all_pixels),
                            torch.from_numpy(np.concatenate(all_values)))

    def loss(self, rendered: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.cross_entropy(rendered, target)

    def query_text(self, text: str, face_features: np.ndarray) -> np.ndarray:
        """Per-face probability of the label named `text` (case-insensitive)."""
        wanted = text.strip().lower()
        names = [n.lower() for n in self.class_names]
        if not wanted:
            raise WorkerError("empty_query", "the query is empty", f"Type one of: {', '.join(self.class_names)}.")
        if wanted not in names:
            raise WorkerError("unknown_label", f"no label named '{text}' in this scene",
                              f"Known labels: {', '.join(self.class_names)}.")
        return self.embed(face_features)[:, names.index(wanted)]

    def query_face(self, face: int, face_features: np.ndarray) -> tuple[str, np.ndarray]:
        """The label of the clicked face and every face's probability of that label."""
        probability = self.embed(face_features)
        label = int(probability[face].argmax())
        return self.class_names[label], probability[:, label]

    def embed(self, face_features: np.ndarray) -> np.ndarray:
        """Features in the space where similarity is measured: label probabilities."""
        return torch.softmax(torch.from_numpy(face_features.astype(np.float32)), -1).numpy()


TEACHERS: dict[str, Callable[["Dataset"], LabelsTeacher]] = {"labels": LabelsTeacher.from_dataset}
TEACHER_TYPES = {"labels": LabelsTeacher}


def make_teacher(name: str, dataset: "Dataset") -> LabelsTeacher:
    if name not in TEACHERS:
        raise WorkerError("unknown_teacher", f"unknown teacher '{name}'", f"Choose one of: {', '.join(TEACHERS)}.")
    return TEACHERS[name](dataset)
