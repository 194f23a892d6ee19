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

from .clip_model import DEFAULT_SIZES, TINY, ClipEncoder, load_clip
from ..errors import DatasetError, WorkerError
from ..features.face_codes import FaceCodes
from ..training import device
from ..queries.relevancy import CANONICAL_NEGATIVES, against_negatives, in_label_set

if TYPE_CHECKING:
    from ..datasets.dataset import Dataset


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

    def query_text(self, terms: list[str], codes: FaceCodes, negatives: list[str] | None = None,
                   label_set: list[str] | None = None) -> np.ndarray:
        """Per-face probability of the labels named by `terms` (case-insensitive); the dataset's
        labels are the label set, so `negatives` and `label_set` play no part."""
        names = [n.lower() for n in self.class_names]
        unknown = [t for t in terms if t.lower() not in names]
        if unknown:
            raise WorkerError("unknown_label", f"no label named '{unknown[0]}' in this scene",
                              f"Known labels: {', '.join(self.class_names)}.")
        return self.query_labels([names.index(t.lower()) for t in terms], codes)[1]

    def face_labels(self, codes: FaceCodes) -> np.ndarray:
        """The most probable label (index into class_names) of every face."""
        return codes.rows().argmax(1)

    def query_labels(self, labels: list[int], codes: FaceCodes) -> tuple[str, np.ndarray]:
        """Several labels at once (indices into class_names): their names joined with '+', and each
        face's probability of belonging to any of them (DFF: p(M|x) summed over the set)."""
        probability = self.embed(codes.rows())[:, labels].sum(1)
        return "+".join(self.class_names[i] for i in labels), np.minimum(probability, 1.0)

    def embed(self, features: np.ndarray) -> np.ndarray:
        """Features in the space where similarity is measured: label probabilities."""
        return torch.softmax(torch.from_numpy(features.astype(np.float32)), -1).numpy()

    def similarity(self, codes: FaceCodes, direction: np.ndarray) -> np.ndarray:
        """Cosine similarity of every face's embedded feature with `direction`."""
        embedded = self.embed(codes.rows())
        embedded /= np.linalg.norm(embedded, axis=1, keepdims=True).clip(1e-8)
        return embedded @ direction


class ImageTeacher:
    """A teacher with an image model: it encodes any view, so it supervises one ray through the
    centre of each of its feature cells, and views rendered by the NeRF too (augmentation).
    Its features are compared linearly (cosine), straight from the faces' codes."""

    encodes_images = True

    def image_targets(self, image: np.ndarray | torch.Tensor) -> tuple[np.ndarray, np.ndarray, torch.Tensor]:
        """(row, col) float32 (P,) pixel positions of the cell centres and the features (P, C) there."""
        raise NotImplementedError

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

    def embed(self, features: np.ndarray) -> np.ndarray:
        return features.astype(np.float32)

    def similarity(self, codes: FaceCodes, direction: np.ndarray) -> np.ndarray:
        return codes.cosine(direction[None])[0]


def cell_centres(height: int, width: int, rows: int, cols: int, cell_height: float,
                 cell_width: float) -> tuple[np.ndarray, np.ndarray]:
    """Pixel positions (row, col), float32, of the centres of a rows x cols grid of cells of the
    given size starting at the image's corner (a ray passes through (col + 0.5, row + 0.5))."""
    r, c = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    return (((r.ravel() + 0.5) * cell_height - 0.5).astype(np.float32),
            ((c.ravel() + 0.5) * cell_width - 0.5).astype(np.float32))


class SamFeatureTeacher(ImageTeacher):
    """SAM's image-encoder features (256 x 64 x 64 per view) as the field's target (SAN, MSE
    loss); a click is answered by SAM's own decoder on features rendered from the field.
    `checkpoint` is a segment-anything checkpoint path, or "tiny" for a small random model with
    the same interface (wiring tests and benchmarks without weights)."""

    name = "sam"
    feature_dim = 256

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
        from .sam_model import SamTeacher, build_tiny_sam, load_sam

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
        SAM's padding), and SAM's feature there, (P, 256) on the model's device."""
        height, width = image.shape[:2]
        rows, cols = self.model.valid_feature_region(height, width)
        cell = max(height, width) / 1024 * 16  # image pixels per feature cell
        row, col = cell_centres(height, width, rows, cols, cell, cell)
        return row, col, self.model.encode(image)[0, :, :rows, :cols].reshape(256, -1).T

    def loss(self, rendered: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.mse_loss(rendered, target)

    def query_text(self, terms: list[str], codes: FaceCodes, negatives: list[str] | None = None,
                   label_set: list[str] | None = None) -> np.ndarray:
        raise WorkerError("unsupported_query", "the sam teacher answers clicks, not text",
                          "Use the Click tool, or train the clip teacher for text queries.")


class ClipFeatureTeacher(ImageTeacher):
    """open_clip's dense MaskCLIP features (see clip_teacher) as the field's target, L1 loss as
    in DFF eq. 4; a text query compares the faces' features with the text embedding.
    `model_name` and `pretrained` are open_clip's (a tag or a checkpoint file); model "tiny" is a
    small random model with the same interface (tests and benchmarks without weights)."""

    name = "clip"

    def __init__(self, model_name: str, pretrained: str, feature_dim: int | None = None,
                 sizes: tuple[int, ...] = DEFAULT_SIZES) -> None:
        self.model_name, self.pretrained, self.sizes = model_name, pretrained, tuple(sizes)
        self._dim = feature_dim
        self._encoder: ClipEncoder | None = None

    @classmethod
    def from_dataset(cls, dataset: "Dataset", model_name: str = "", pretrained: str = "") -> "ClipFeatureTeacher":
        teacher = cls(model_name, "" if model_name == TINY else pretrained)  # tiny has no weights to record
        teacher.encoder  # load now: a bad model or missing weights fail before any training
        return teacher

    @property
    def encoder(self) -> ClipEncoder:
        if self._encoder is None:
            model, tokenizer = load_clip(self.model_name, self.pretrained)
            self._encoder = ClipEncoder(model, tokenizer, self.model_name, self.sizes, device())
            self._dim = self._encoder.dim
        return self._encoder

    @property
    def feature_dim(self) -> int:
        return self._dim if self._dim is not None else self.encoder.dim

    def to_dict(self) -> dict:
        return {"name": self.name, "model": self.model_name, "pretrained": self.pretrained,
                "feature_dim": self.feature_dim, "sizes": list(self.sizes)}

    @classmethod
    def from_dict(cls, d: dict) -> "ClipFeatureTeacher":
        return cls(d["model"], d["pretrained"], d.get("feature_dim"), tuple(d.get("sizes", DEFAULT_SIZES)))

    def image_targets(self, image: np.ndarray | torch.Tensor) -> tuple[np.ndarray, np.ndarray, torch.Tensor]:
        """One ray through the centre of each cell of the finest feature grid, and CLIP's feature there."""
        height, width = image.shape[:2]
        features = self.encoder.encode_image(image)
        rows, cols = features.shape[1:]
        row, col = cell_centres(height, width, rows, cols, height / rows, width / cols)
        return row, col, features.reshape(features.shape[0], -1).T

    def loss(self, rendered: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.l1_loss(rendered, target)

    def query_text(self, terms: list[str], codes: FaceCodes, negatives: list[str] | None = None,
                   label_set: list[str] | None = None) -> np.ndarray:
        """Per-face relevancy of the phrases `terms` against `negatives` (the canonical ones by
        default), or within `label_set` when one is given (the phrases join it)."""
        encoder = self.encoder
        if label_set:
            labels = list(dict.fromkeys([*label_set, *terms]))
            similarity = codes.cosine_named(labels, encoder.encode_text(labels).cpu().numpy())
            wanted = np.isin(labels, terms)
            return in_label_set(similarity, wanted, encoder.logit_scale)
        negatives = list(CANONICAL_NEGATIVES if negatives is None else negatives)
        phrases = list(dict.fromkeys([*terms, *negatives]))
        similarity = codes.cosine_named(phrases, encoder.encode_text(phrases).cpu().numpy())
        is_term = np.isin(phrases, terms)
        return against_negatives(similarity[is_term], similarity[np.isin(phrases, negatives)], encoder.logit_scale)


Teacher = LabelsTeacher | SamFeatureTeacher | ClipFeatureTeacher
TEACHER_TYPES: dict[str, type] = {"labels": LabelsTeacher, "sam": SamFeatureTeacher, "clip": ClipFeatureTeacher}


def make_teacher(name: str, dataset: "Dataset", sam_checkpoint: str = "", clip_model: str = "",
                 clip_pretrained: str = "") -> Teacher:
    """The teacher `name` for a dataset; fails early (before any training) on bad settings."""
    if name == "labels":
        return LabelsTeacher.from_dataset(dataset)
    if name == "sam":
        return SamFeatureTeacher.from_dataset(dataset, sam_checkpoint)
    if name == "clip":
        return ClipFeatureTeacher.from_dataset(dataset, clip_model, clip_pretrained)
    raise WorkerError("unknown_teacher", f"unknown teacher '{name}'", f"Choose one of: {', '.join(TEACHER_TYPES)}.")
