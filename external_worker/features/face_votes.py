"""Per-face labels by the votes of the views that see each face, for teachers whose targets are
classes (label maps).

A teacher's label map is wrong somewhere in every view: a boundary a pixel off, an object
missed or merged with its neighbour, a stray blob. The field distilled from the maps learns much
of that where each view's rays run just in front of the surface, and reads it back at the faces.
Here each face instead takes the labels of the pixels it is seen at, every view one vote
weighted by how squarely it sees the face: a view that is wrong there is outvoted by the others.
The field's own probability counts as one more view (the only one for faces no labelled view
sees), and the result is smoothed along the mesh (`mesh_smoothing`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..geometry.visibility import visible_faces
from ..progress import Reporter
from ..teachers.targets import PixelTargets
from .face_codes import FaceCodes
from .mesh_smoothing import smooth_on_mesh

if TYPE_CHECKING:
    from ..datasets.dataset import Dataset
    from ..mesh.extract import Mesh

FIELD_VOTES = 1.0   # the field's probability counts as one view seeing the face squarely
PROBABILITY_FLOOR = 1e-4  # log-probabilities stay finite in float16 codes


def lift_classes(dataset: "Dataset", mesh: "Mesh", field_codes: FaceCodes, targets: PixelTargets,
                 tolerance: float, reporter: Reporter) -> FaceCodes:
    """The faces' codes: the views' votes and the field's probability, smoothed along the mesh
    (see the module's docstring). `tolerance` (world units): the depth within which a face
    counts as seen."""
    probability = voted_probability(dataset, mesh, field_codes, targets, tolerance, reporter)
    return probability_codes(smooth_on_mesh(probability, mesh.faces, mesh.vertex_colors[mesh.faces].mean(1)))


def voted_probability(dataset: "Dataset", mesh: "Mesh", field_codes: FaceCodes, targets: PixelTargets,
                      tolerance: float, reporter: Reporter) -> np.ndarray:
    """(F, C) each face's votes and the field's probability (worth FIELD_VOTES views), normalised."""
    tri = mesh.vertices[mesh.faces].astype(np.float64)
    centroids = tri.mean(1)
    normals = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    normals /= np.linalg.norm(normals, axis=1, keepdims=True).clip(1e-12)
    votes = face_votes(centroids, normals, dataset.c2w, dataset.intrinsics, (dataset.height, dataset.width), targets,
                       field_codes.weight.shape[0], tolerance, reporter)
    logits = field_codes.rows()
    field_probability = np.exp(logits - logits.max(1, keepdims=True))
    total = votes + FIELD_VOTES * field_probability / field_probability.sum(1, keepdims=True)
    return total / total.sum(1, keepdims=True)


def face_votes(centroids: np.ndarray, normals: np.ndarray, c2w: np.ndarray, intrinsics: np.ndarray,
               size: tuple[int, int], targets: PixelTargets, classes: int, tolerance: float,
               reporter: Reporter) -> np.ndarray:
    """(F, classes) float32: for each face, the summed weights of the views that see it with each
    class at its pixel. Each view's weight is the cosine between the face's normal and the
    direction to the camera. `c2w` (N, 4, 4) and `intrinsics` (N, 4) are every dataset view's,
    in the frame of `centroids`; `targets` say which class each labelled pixel has (views
    without targets do not vote). `size` is (height, width)."""
    height, width = size
    votes = np.zeros((len(centroids), classes), np.float32)
    views = np.unique(targets.view)
    for done, v in enumerate(views):
        mine = targets.view == v
        label_at = np.full(height * width, -1, np.int64)
        pixel = np.round(targets.row[mine]).astype(np.int64) * width + np.round(targets.col[mine]).astype(np.int64)
        label_at[pixel] = targets.value[mine].numpy()
        visible, face_pixel = visible_faces(centroids, normals, c2w[v], intrinsics[v], height, width, tolerance)
        faces = np.flatnonzero(visible)
        label = label_at[face_pixel[faces]]
        faces, label = faces[label >= 0], label[label >= 0]
        to_camera = c2w[v][:3, 3] - centroids[faces]
        squareness = np.einsum("ij,ij->i", normals[faces], to_camera) / np.linalg.norm(to_camera, axis=1).clip(1e-12)
        np.add.at(votes, (faces, label), squareness.astype(np.float32))
        reporter.progress("features", done + 1, len(views), None, "labels: votes of the views on the faces")
    return votes


def probability_codes(probability: np.ndarray) -> FaceCodes:
    """Per-face codes whose features are the log of `probability` (identity last layer): what the
    labels reader turns back into probabilities with a softmax."""
    logits = np.log(probability.clip(PROBABILITY_FLOOR)).astype(np.float32)
    classes = probability.shape[1]
    return FaceCodes(logits.astype(np.float16), np.eye(classes, dtype=np.float32), np.zeros(classes, np.float32),
                     np.linalg.norm(logits, axis=1))
