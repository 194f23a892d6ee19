"""How each teacher's per-face features answer queries: one reader per teacher, by its name.

A reader declares which queries it answers (`answers_text`, `answers_clicks`) and answers them
on the faces' codes. Every reader answers select-similar: its `embed` and `similarity` say in
which space features are compared. The entry points (text, prompt, similar) go through the
reader, so a teacher's query code lives here, not in the teacher.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..errors import WorkerError
from ..workspace import Files, Workspace
from .click import ClickPrompt, ViewRenderer, sam_click
from .faces import FaceFeatures, Geometry, load_face_features
from .regions import clicked_region
from .relevancy import CANONICAL_NEGATIVES, against_negatives, in_label_set


@dataclass
class ClickResult:
    query: str               # what the selection is called: a label name, or "click"
    hit_face: int            # the face under the first click (-1 for a box alone)
    probability: np.ndarray  # (F,) float32
    views: int               # views that voted (1 without cross-view prompting)


@dataclass
class CastPrompt:
    """A prompt cast onto the mesh (by the click entry point): what a reader answers a click from."""

    prompt: ClickPrompt
    geometry: Geometry
    hits: list[int]            # the face under each click (-1: none)
    depths: np.ndarray         # (N,) distance along each click to that face (inf: none)
    hit_face: int              # the face under the first object click (-1: none)
    in_box: np.ndarray | None  # (F,) bool, faces seen inside the box (None: no box)
    tolerance: float           # depth tolerance of visibility, in world units


class FaceReader:
    """One teacher's per-face features and the queries they answer. Features are compared
    linearly (cosine, straight from the faces' codes) unless a reader says otherwise."""

    answers_text = False
    answers_clicks = False

    def __init__(self, faces: FaceFeatures) -> None:
        self.teacher = faces.teacher
        self.codes = faces.features
        self.background = faces.background

    def embed(self, features: np.ndarray) -> np.ndarray:
        """Features (n, C) in the space where similarity is measured."""
        return features.astype(np.float32)

    def similarity(self, direction: np.ndarray) -> np.ndarray:
        """Cosine similarity (F,) of every face's embedded feature with the unit vector `direction`."""
        return self.codes.cosine(direction[None])[0]


class LabelsReader(FaceReader):
    """The labels teacher's features are one logit per label: text names labels, a click
    selects the labels of the clicked faces, similarity compares label probabilities."""

    answers_text = True
    answers_clicks = True

    def text(self, terms: list[str], negatives: list[str] | None = None,
             label_set: list[str] | None = None) -> np.ndarray:
        """Per-face probability of the labels named by `terms` (case-insensitive); the dataset's
        labels are the label set, so `negatives` and `label_set` play no part."""
        class_names = self.teacher.class_names
        names = [n.lower() for n in class_names]
        unknown = [t for t in terms if t.lower() not in names]
        if unknown:
            raise WorkerError("unknown_label", f"no label named '{unknown[0]}' in this scene",
                              f"Known labels: {', '.join(class_names)}.")
        return self.select_labels([names.index(t.lower()) for t in terms])[1]

    def click(self, workspace: Workspace, cast: CastPrompt, views: int) -> ClickResult:
        """The labels of the faces hit by the object clicks (and the most common one inside the
        box), minus those of the faces hit by background clicks, on the region of them that holds
        the clicked faces (see regions); one view votes."""
        label_of = self.codes.rows().argmax(1)  # each face's most probable label
        clicks = list(zip(cast.hits, cast.prompt.labels))
        wanted = {int(label_of[h]) for h, label in clicks if label == 1 and h >= 0}
        if cast.in_box is not None:
            wanted.add(int(np.bincount(label_of[cast.in_box]).argmax()))
        wanted -= {int(label_of[h]) for h, label in clicks if label == 0 and h >= 0}
        if not wanted:
            raise WorkerError("empty_selection", "the background clicks removed every object that was clicked",
                              "Click on the object without Ctrl, or on another object.")
        name, probability = self.select_labels(sorted(wanted))
        seeds = [h for h, label in clicks if label == 1 and h >= 0]
        if cast.in_box is not None:
            seeds += np.flatnonzero(cast.in_box).tolist()
        region = clicked_region(cast.geometry.centroids, probability > 0.5, np.array(seeds, np.int64), cast.tolerance)
        return ClickResult(name, cast.hit_face, np.where(region, probability, 0.0).astype(np.float32), 1)

    def select_labels(self, labels: list[int]) -> tuple[str, np.ndarray]:
        """Several labels at once (indices into class_names): their names joined with '+', and each
        face's probability of belonging to any of them (DFF: p(M|x) summed over the set)."""
        probability = self.embed(self.codes.rows())[:, labels].sum(1)
        return "+".join(self.teacher.class_names[i] for i in labels), np.minimum(probability, 1.0)

    def embed(self, features: np.ndarray) -> np.ndarray:
        """Label probabilities."""
        return torch.softmax(torch.from_numpy(features.astype(np.float32)), -1).numpy()

    def similarity(self, direction: np.ndarray) -> np.ndarray:
        embedded = self.embed(self.codes.rows())
        embedded /= np.linalg.norm(embedded, axis=1, keepdims=True).clip(1e-8)
        return embedded @ direction


class SamReader(FaceReader):
    """SAM's features answer clicks: its decoder runs on features rendered from the mesh, in the
    clicked view and in `views` training views turned towards the object."""

    answers_clicks = True

    def click(self, workspace: Workspace, cast: CastPrompt, views: int) -> ClickResult:
        renderer = ViewRenderer(cast.geometry, self.codes, self.background, cast.tolerance)
        cameras = workspace.load_npz(Files.CAMERAS)
        with workspace.reading(Files.CAMERAS):
            eyes = cameras["c2w"][cameras["split"] == "train"][:, :3, 3]
        probability, used = sam_click(self.teacher.model, renderer, cast.prompt, eyes, views, cast.depths)
        return ClickResult("click", cast.hit_face, probability, used)


class ClipReader(FaceReader):
    """CLIP's features answer text: the faces' features against the text embeddings of the
    teacher's own encoder."""

    answers_text = True

    def text(self, terms: list[str], negatives: list[str] | None = None,
             label_set: list[str] | None = None) -> np.ndarray:
        """Per-face relevancy of the phrases `terms` against `negatives` (the canonical ones by
        default), or within `label_set` when one is given (the phrases join it)."""
        encoder = self.teacher.encoder
        if label_set:
            labels = list(dict.fromkeys([*label_set, *terms]))
            similarity = self.codes.cosine_named(labels, encoder.encode_text(labels).cpu().numpy())
            wanted = np.isin(labels, terms)
            return in_label_set(similarity, wanted, encoder.logit_scale)
        negatives = list(CANONICAL_NEGATIVES if negatives is None else negatives)
        phrases = list(dict.fromkeys([*terms, *negatives]))
        similarity = self.codes.cosine_named(phrases, encoder.encode_text(phrases).cpu().numpy())
        is_term = np.isin(phrases, terms)
        return against_negatives(similarity[is_term], similarity[np.isin(phrases, negatives)], encoder.logit_scale)


READERS: dict[str, type[FaceReader]] = {"labels": LabelsReader, "sam": SamReader, "clip": ClipReader}


def load_reader(workspace: Workspace, teacher: str) -> FaceReader:
    """The reader of the `teacher`'s per-face features in the workspace."""
    return READERS[teacher](load_face_features(workspace, teacher))
