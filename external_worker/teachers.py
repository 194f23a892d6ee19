"""2D teachers whose per-pixel outputs the feature field learns to render, behind one interface.

A teacher says how wide the rendered feature is, gives supervision for the training views, the
loss between rendered and teacher features, and how a text query reads the per-face features.
Teachers with an image model (`encodes_images`) also supervise new views rendered by the NeRF.
`make_teacher(name, dataset)` picks one; `TEACHER_TYPES[name].from_dict()` restores one from a workspace.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from .errors import DatasetError, WorkerError
from .nerf_training import device

if TYPE_CHECKING:
    from .datasets import Dataset


@dataclass
class PixelTargets:
    """Supervision along a set of rays: which view, where in it, and the teacher's value there."""

    view: np.ndarray   # (P,) index into the dataset's views
    row: np.ndarray    # (P,) float32 image position of the ray, in pixels: the ray passes
    col: np.ndarray    # through (col + 0.5, row + 0.5), so integers are pixel centres
    value: torch.Tensor  # (P,) class index (labels) or (P, C) features

    def subset(self, keep: np.ndarray) -> "PixelTargets":
        return PixelTargets(self.view[keep], self.row[keep], self.col[keep], self.value[keep])


class LabelsTeacher:
    """Known per-image label maps lifted to 3D. The field renders one logit per label; a text
    query is a label name and reads the softmax probability of that label."""

    name = "labels"
    encodes_images = False  # label maps exist for the dataset's own views only

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
        pixel = np.concatenate(all_pixels)
        return PixelTargets(np.concatenate(all_views), (pixel // dataset.width).astype(np.float32),
                            (pixel % dataset.width).astype(np.float32), torch.from_numpy(np.concatenate(all_values)))

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

    def face_labels(self, face_features: np.ndarray) -> np.ndarray:
        """The most probable label (index into class_names) of every face."""
        return face_features.argmax(1)

    def query_labels(self, labels: list[int], face_features: np.ndarray) -> tuple[str, np.ndarray]:
        """Several labels at once (indices into class_names): their names joined with '+', and each
        face's probability of belonging to any of them (DFF: p(M|x) summed over the set)."""
        probability = self.embed(face_features)[:, labels].sum(1)
        return "+".join(self.class_names[i] for i in labels), np.minimum(probability, 1.0)

    def embed(self, face_features: np.ndarray) -> np.ndarray:
        """Features in the space where similarity is measured: label probabilities."""
        return torch.softmax(torch.from_numpy(face_features.astype(np.float32)), -1).numpy()


class SamFeatureTeacher:
    """SAM's image-encoder features (256 x 64 x 64 per view) as the field's target (SAN, MSE
    loss); a click is answered by SAM's own decoder on features rendered from the field.
    `checkpoint` is a segment-anything checkpoint path, or "tiny" for a small random model with
    the same interface (wiring tests and benchmarks without weights)."""

    name = "sam"
    feature_dim = 256
    encodes_images = True  # any view, rendered ones included

    def __init__(self, checkpoint: str) -> None:
        self.checkpoint = checkpoint
        self._model = None

    @classmethod
    def from_dataset(cls, dataset: "Dataset", checkpoint: str = "") -> "SamFeatureTeacher":
        if not checkpoint:
            raise WorkerError("bad_request", "the sam teacher needs a SAM checkpoint",
                              "Set the path of a vit_h, vit_l or vit_b checkpoint from segment-anything.")
        teacher = cls(checkpoint)
        teacher.model  # load now: a bad checkpoint fails before any training
        return teacher

    @property
    def model(self):
        from .sam_teacher import SamTeacher, build_tiny_sam, load_sam

        if self._model is None:
            sam = build_tiny_sam() if self.checkpoint == "tiny" else load_sam(Path(self.checkpoint))
            self._model = SamTeacher(sam.to(device()))
        return self._model

    def to_dict(self) -> dict:
        return {"name": self.name, "checkpoint": self.checkpoint}

    @classmethod
    def from_dict(cls, d: dict) -> "SamFeatureTeacher":
        return cls(d["checkpoint"])

    def image_targets(self, image: np.ndarray | torch.Tensor) -> tuple[np.ndarray, np.ndarray, torch.Tensor]:
        """One ray through the centre of each feature cell that covers an (H, W, 3) image (not
        SAM's padding): its pixel position (row, col), float32 (P,), and SAM's feature there,
        (P, 256) on the model's device."""
        height, width = image.shape[:2]
        rows, cols = self.model.valid_feature_region(height, width)
        resized = max(height, width) / 1024 * 16  # image pixels per feature cell
        r, c = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
        row = ((r.ravel() + 0.5) * resized - 0.5).astype(np.float32)
        col = ((c.ravel() + 0.5) * resized - 0.5).astype(np.float32)
        return row, col, self.model.encode(image)[0, :, :rows, :cols].reshape(256, -1).T

    def targets(self, dataset: "Dataset", views: np.ndarray) -> PixelTargets:
        """`image_targets` of each of the given dataset views."""
        rows, cols, values = [], [], []
        for v in views:
            row, col, value = self.image_targets(dataset.images[v])
            rows.append(row)
            cols.append(col)
            values.append(value.cpu())  # on the host: device memory stays bounded by one view
        return PixelTargets(np.repeat(views, [len(row) for row in rows]), np.concatenate(rows), np.concatenate(cols),
                            torch.cat(values))

    def loss(self, rendered: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.mse_loss(rendered, target)

    def query_text(self, text: str, face_features: np.ndarray) -> np.ndarray:
        raise WorkerError("unsupported_query", "the sam teacher answers clicks, not text",
                          "Use the Click tool, or train the labels teacher for text queries.")

    def embed(self, face_features: np.ndarray) -> np.ndarray:
        return face_features.astype(np.float32)


Teacher = LabelsTeacher | SamFeatureTeacher
TEACHER_TYPES: dict[str, type] = {"labels": LabelsTeacher, "sam": SamFeatureTeacher}


def make_teacher(name: str, dataset: "Dataset", sam_checkpoint: str = "") -> Teacher:
    """The teacher `name` for a dataset; fails early (before any training) on bad settings."""
    if name == "labels":
        return LabelsTeacher.from_dataset(dataset)
    if name == "sam":
        return SamFeatureTeacher.from_dataset(dataset, sam_checkpoint)
    raise WorkerError("unknown_teacher", f"unknown teacher '{name}'", f"Choose one of: {', '.join(TEACHER_TYPES)}.")
