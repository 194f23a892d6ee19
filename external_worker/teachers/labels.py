"""The `labels` teacher: known per-image label maps lifted to 3D."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from ..errors import DatasetError
from .targets import PixelTargets

if TYPE_CHECKING:
    from ..datasets.dataset import Dataset


class LabelsTeacher:
    """The field renders one logit per label of the dataset, trained with cross-entropy on
    every labelled pixel."""

    name = "labels"
    encodes_images = False  # label maps exist for the dataset's own views only
    votes_on_faces = True   # a face's label is its views' vote, not the field's alone (features.face_votes)

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
    def from_dict(cls, d: dict, *, device: torch.device | str) -> "LabelsTeacher":
        """`device` as every teacher takes it; label maps need no model to put there."""
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
        pixel = np.concatenate(all_pixels)
        return PixelTargets(np.concatenate(all_views), (pixel // dataset.width).astype(np.float32),
                            (pixel % dataset.width).astype(np.float32), torch.from_numpy(np.concatenate(all_values)))

    def loss(self, rendered: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.cross_entropy(rendered, target)
