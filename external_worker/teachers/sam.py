"""The `sam` teacher: SAM's image-encoder features as the field's target (SAN)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..errors import WorkerError
from .targets import ImageTeacher, cell_centres

if TYPE_CHECKING:
    from ..datasets.dataset import Dataset
    from .sam_model import SamModel


class SamFeatureTeacher(ImageTeacher):
    """SAM's image-encoder features (256 x 64 x 64 per view), MSE loss; its model's decoder is
    what answers clicks on features rendered from the field. `checkpoint` is a segment-anything
    checkpoint path, or "tiny" for a small random model with the same interface (wiring tests
    and benchmarks without weights). The model is loaded onto `device` when first needed."""

    name = "sam"
    feature_dim = 256

    def __init__(self, checkpoint: str, *, device: torch.device | str) -> None:
        self.checkpoint = checkpoint
        self.device = device
        self._model: SamModel | None = None

    @classmethod
    def from_dataset(cls, dataset: "Dataset", checkpoint: str = "", *,
                     device: torch.device | str) -> "SamFeatureTeacher":
        if not checkpoint:
            raise WorkerError("bad_request", "the sam teacher needs a SAM checkpoint",
                              "Set the path of a vit_h, vit_l or vit_b checkpoint from segment-anything.")
        teacher = cls(checkpoint, device=device)
        teacher.model  # load now: a bad checkpoint fails before any training
        return teacher

    @property
    def model(self) -> "SamModel":
        # segment-anything is imported only once a SAM model is needed.
        from .sam_model import SamModel, build_tiny_sam, load_sam

        if self._model is None:
            sam = build_tiny_sam() if self.checkpoint == "tiny" else load_sam(Path(self.checkpoint))
            self._model = SamModel(sam.to(self.device))
        return self._model

    def to_dict(self) -> dict:
        return {"name": self.name, "checkpoint": self.checkpoint}

    @classmethod
    def from_dict(cls, d: dict, *, device: torch.device | str) -> "SamFeatureTeacher":
        return cls(d["checkpoint"], device=device)

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
