"""The click query's entry point: which faces the clicks and box select."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import WorkerError
from ..mesh.stored import mesh_voxel
from ..teachers.registry import LabelsTeacher, SamFeatureTeacher
from ..workspace import Files, Workspace
from .click import ClickPrompt, ViewRenderer, faces_in_box, sam_click
from .faces import load_face_features, load_geometry

DEFAULT_CLICK_VIEWS = 8  # training views a click is carried to (SAM teacher)


@dataclass
class ClickResult:
    query: str               # what the selection is called: a label name, or "click"
    hit_face: int            # the face under the first click (-1 for a box alone)
    probability: np.ndarray  # (F,) float32
    views: int               # views that voted (1 without cross-view prompting)


def query_click(workspace: Workspace, prompt: ClickPrompt, teacher: str = "labels",
                views: int = DEFAULT_CLICK_VIEWS) -> ClickResult:
    """The object under clicks and a box given as world-frame rays.

    With `sam`, SAM's decoder runs on features rendered from the mesh, in the clicked view and
    in `views` training views turned towards the object. With `labels`, the labels of the faces
    hit by the object clicks (and most often inside the box) are selected, minus those of the
    background clicks."""
    g = load_geometry(workspace)
    ff = load_face_features(workspace, teacher)
    if not isinstance(ff.teacher, (LabelsTeacher, SamFeatureTeacher)):
        raise WorkerError("unsupported_query", f"the {teacher} teacher answers text, not clicks",
                          "Train the sam teacher (or labels) for the Click tool, or type a query.")
    cast = [g.hit(o, d) for o, d in zip(prompt.origins, prompt.directions)]
    hits, depths = [face for face, _ in cast], np.array([t for _, t in cast], np.float64)
    main_hit = next((h for h, label in zip(hits, prompt.labels) if label == 1), -1)
    tolerance = 3 * mesh_voxel(workspace)
    if prompt.box_origins is not None:
        in_box = faces_in_box(g, prompt, tolerance)
        if not in_box.any():
            raise WorkerError("no_hit", "the box holds nothing of the mesh", "Drag the box around part of the mesh.")
    elif main_hit < 0:
        raise WorkerError("no_hit", "nothing of the mesh under the cursor", "Click on the mesh.")
    if isinstance(ff.teacher, SamFeatureTeacher):
        renderer = ViewRenderer(g, ff.features, ff.background, tolerance)
        cameras = workspace.load_npz(Files.CAMERAS)
        eyes = cameras["c2w"][cameras["split"] == "train"][:, :3, 3]
        probability, used = sam_click(ff.teacher.model, renderer, prompt, eyes, views, depths)
        return ClickResult("click", main_hit, probability, used)
    label_of = ff.teacher.face_labels(ff.features)
    wanted = {int(label_of[h]) for h, label in zip(hits, prompt.labels) if label == 1 and h >= 0}
    if prompt.box_origins is not None:
        wanted.add(int(np.bincount(label_of[in_box]).argmax()))
    wanted -= {int(label_of[h]) for h, label in zip(hits, prompt.labels) if label == 0 and h >= 0}
    if not wanted:
        raise WorkerError("empty_selection", "the background clicks removed every object that was clicked",
                          "Click on the object without Ctrl, or on another object.")
    name, probability = ff.teacher.query_labels(sorted(wanted), ff.features)
    return ClickResult(name, main_hit, probability.astype(np.float32), 1)
