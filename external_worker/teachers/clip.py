"""The `clip` teacher: open_clip's dense, text-aligned MaskCLIP features as the field's target (DFF)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from .clip_model import DEFAULT_SIZES, TINY, ClipEncoder, load_clip
from .targets import ImageTeacher, cell_centres

if TYPE_CHECKING:
    from ..datasets.dataset import Dataset


class ClipFeatureTeacher(ImageTeacher):
    """Dense MaskCLIP features (see clip_model), L1 loss as in DFF eq. 4; its encoder's text
    embeddings are what text queries compare the faces' features with. `model_name` and
    `pretrained` are open_clip's (a tag or a checkpoint file); model "tiny" is a small random
    model with the same interface (tests and benchmarks without weights). The model is loaded
    onto `device` when first needed."""

    name = "clip"

    def __init__(self, model_name: str, pretrained: str, feature_dim: int | None = None,
                 sizes: tuple[int, ...] = DEFAULT_SIZES, *, device: torch.device | str) -> None:
        self.model_name, self.pretrained, self.sizes = model_name, pretrained, tuple(sizes)
        self.device = device
        self._dim = feature_dim
        self._encoder: ClipEncoder | None = None

    @classmethod
    def from_dataset(cls, dataset: "Dataset", model_name: str = "", pretrained: str = "", *,
                     device: torch.device | str) -> "ClipFeatureTeacher":
        # The tiny model has no weights to record.
        teacher = cls(model_name, "" if model_name == TINY else pretrained, device=device)
        teacher.encoder  # load now: a bad model or missing weights fail before any training
        return teacher

    @property
    def encoder(self) -> ClipEncoder:
        if self._encoder is None:
            model, tokenizer = load_clip(self.model_name, self.pretrained)
            self._encoder = ClipEncoder(model, tokenizer, self.model_name, self.sizes, self.device)
            self._dim = self._encoder.dim
        return self._encoder

    @property
    def feature_dim(self) -> int:
        return self._dim if self._dim is not None else self.encoder.dim

    def to_dict(self) -> dict:
        return {"name": self.name, "model": self.model_name, "pretrained": self.pretrained,
                "feature_dim": self.feature_dim, "sizes": list(self.sizes)}

    @classmethod
    def from_dict(cls, d: dict, *, device: torch.device | str) -> "ClipFeatureTeacher":
        return cls(d["model"], d["pretrained"], d.get("feature_dim"), tuple(d.get("sizes", DEFAULT_SIZES)),
                   device=device)

    def image_targets(self, image: np.ndarray | torch.Tensor) -> tuple[np.ndarray, np.ndarray, torch.Tensor]:
        """One ray through the centre of each cell of the finest feature grid, and CLIP's feature there."""
        height, width = image.shape[:2]
        features = self.encoder.encode_image(image)
        rows, cols = features.shape[1:]
        row, col = cell_centres(height, width, rows, cols, height / rows, width / cols)
        return row, col, features.reshape(features.shape[0], -1).T

    def loss(self, rendered: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.l1_loss(rendered, target)
