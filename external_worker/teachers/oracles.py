"""Ideal teachers for measuring the 3D part of the pipeline on scenes with ground truth: a
perfect 2D segmenter in place of SAM's decoder, perfect text-aligned features in place of CLIP's."""

from __future__ import annotations

from typing import Callable

import numpy as np

from .targets import PixelTargets


class LabelOracle:
    """An ideal 2D segmenter in place of SAM's decoder, for measuring what the 3D part of a click
    (rendering, carrying masks across views, voting) does with perfect masks.

    It reads feature maps rendered from `labels` per-face features: a cell's object is its
    argmax label, and cells holding exactly the `background` feature are empty. A prompt selects
    the objects under its object clicks and the object its box encloses (`_boxed_object`), minus
    those under background clicks. Same call as `SamModel.decode`.

    `corrupt`, when given, makes it an imperfect segmenter: it is handed each call's object map at
    the image's size (0 = empty, object k as k + 1) and returns the map the prompt is read from
    (see `teachers.imperfect`)."""

    device = "cpu"

    def __init__(self, background: np.ndarray, corrupt: Callable[[np.ndarray], np.ndarray] | None = None) -> None:
        self.background = np.asarray(background, np.float32)
        self.corrupt = corrupt

    def decode(self, features, image_size: tuple[int, int], points: np.ndarray | None = None,
               point_labels: np.ndarray | None = None, box: np.ndarray | None = None,
               multimask: bool = True) -> tuple[np.ndarray, np.ndarray]:
        f = np.asarray(features, np.float32)
        cells = f.shape[1]
        objects = f.argmax(0) + 1
        objects[np.abs(f - self.background[:, None, None]).max(0) < 1e-6] = 0
        rows = np.minimum((np.arange(image_size[0]) * cells) // image_size[0], cells - 1)
        cols = np.minimum((np.arange(image_size[1]) * cells) // image_size[1], cells - 1)
        objects = objects[rows][:, cols]  # at the image's size: a segmenter errs in pixels
        if self.corrupt is not None:
            objects = self.corrupt(objects)
        height, width = objects.shape

        def under(xy: np.ndarray) -> int:
            col, row = np.asarray(xy, np.float64).astype(int)
            return int(objects[min(max(row, 0), height - 1), min(max(col, 0), width - 1)])

        clicks = [] if points is None else list(zip(points, point_labels))
        wanted = {under(xy) for xy, label in clicks if label == 1}
        if box is not None:
            wanted.add(_boxed_object(objects, np.asarray(box, np.float64)))
        wanted -= {under(xy) for xy, label in clicks if label == 0} | {0}
        return np.isin(objects, sorted(wanted))[None], np.ones(1, np.float32)


def _boxed_object(objects: np.ndarray, box: np.ndarray) -> int:
    """The object a box prompt asks for: the one whose pixels best match the box's rectangle
    (IoU), as SAM segments what a box encloses; a floor filling most of the box is not it,
    since most of the floor lies outside the box. 0 for an empty box."""
    height, width = objects.shape
    x0, y0, x1, y1 = np.clip(box.reshape(2, 2).astype(int), 0, [width, height]).ravel()
    inside = objects[y0:y1 + 1, x0:x1 + 1]
    present = np.unique(inside[inside > 0])
    if not present.size:
        return 0
    within = np.bincount(inside.ravel(), minlength=present.max() + 1)[present]
    total = np.bincount(objects.ravel(), minlength=present.max() + 1)[present]
    return int(present[np.argmax(within / (total + inside.size - within))])


class LabelTextOracle:
    """An ideal text-aligned 2D teacher in place of CLIP's image features, for measuring what
    the 3D part of a text query (distillation, per-face codes, relevancy) does with perfect
    features: each labelled pixel's target is the text embedding of its label's name (of
    "background" for unlabelled pixels), from `encoder`, the clip teacher's own (`ClipEncoder`).
    It replaces the teacher's `targets`; the field, the codes and the queries stay the real ones."""

    def __init__(self, encoder, names: dict[int, str]) -> None:
        self.encoder, self.names = encoder, names

    def targets(self, dataset, views: np.ndarray) -> PixelTargets:
        ids = sorted(self.names)
        table = self.encoder.encode_text(["background"] + [self.names[i] for i in ids]).cpu()
        lookup = np.zeros(max(max(ids), int(dataset.labels.max())) + 1, np.int64)
        lookup[ids] = np.arange(1, len(ids) + 1)
        chosen = [v for v in views if dataset.has_labels[v]]
        labels = np.stack([dataset.labels[v] for v in chosen]).reshape(len(chosen), -1)
        pixel = np.tile(np.arange(labels.shape[1]), len(chosen))
        return PixelTargets(np.repeat(chosen, labels.shape[1]), (pixel // dataset.width).astype(np.float32),
                            (pixel % dataset.width).astype(np.float32), table[lookup[labels.ravel()]])
