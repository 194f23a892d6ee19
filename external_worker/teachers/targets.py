"""What a teacher gives the feature field to learn: its value at pixels of the training views.
Teachers with an image model (`ImageTeacher`) give it at the centres of their feature cells."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

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


class ImageTeacher:
    """A teacher with an image model: it encodes any view, so it supervises one ray through the
    centre of each of its feature cells, and views rendered by the NeRF too (augmentation)."""

    encodes_images = True
    votes_on_faces = False  # features, not classes: each face's is the field's

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


def cell_centres(height: int, width: int, rows: int, cols: int, cell_height: float,
                 cell_width: float) -> tuple[np.ndarray, np.ndarray]:
    """Pixel positions (row, col), float32, of the centres of a rows x cols grid of cells of the
    given size starting at the image's corner (a ray passes through (col + 0.5, row + 0.5))."""
    r, c = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    return (((r.ravel() + 0.5) * cell_height - 0.5).astype(np.float32),
            ((c.ravel() + 0.5) * cell_width - 0.5).astype(np.float32))
