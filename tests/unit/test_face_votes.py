"""Per-face labels from the views' votes (features.face_votes) and their smoothing along the mesh
(features.mesh_smoothing), on a flat square whose answer is known: its left half is class 0,
its right half class 1, seen from above by cameras whose label maps are drawn from that truth."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from external_worker.features.face_codes import FaceCodes
from external_worker.features.face_votes import FIELD_VOTES, face_votes, probability_codes, voted_probability
from external_worker.features.mesh_smoothing import smooth_on_mesh
from external_worker.progress import SilentReporter
from external_worker.queries.readers import LabelsReader
from external_worker.teachers.targets import PixelTargets

SIZE = 48                                     # pixels of every camera
INTRINSICS = np.array([48.0, 48.0, 24.0, 24.0])
HEIGHT = 3.0                                  # cameras look straight down from this high
TOLERANCE = 0.05


def _square(cells: int = 16, facing_up: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """[-1, 1]^2 at z = 0 as 2 * cells^2 triangles, normals up (or down)."""
    x, y = np.meshgrid(np.linspace(-1, 1, cells + 1), np.linspace(-1, 1, cells + 1), indexing="ij")
    vertices = np.stack([x.ravel(), y.ravel(), np.zeros(x.size)], 1)
    i, j = np.meshgrid(np.arange(cells), np.arange(cells), indexing="ij")
    a, b = (i * (cells + 1) + j).ravel(), ((i + 1) * (cells + 1) + j).ravel()
    faces = np.concatenate([np.stack([a, b, b + 1], 1), np.stack([a, b + 1, a + 1], 1)])
    return vertices, faces if facing_up else faces[:, ::-1]


def _camera(x: float, y: float) -> np.ndarray:
    c2w = np.eye(4)
    c2w[:3, 3] = [x, y, HEIGHT]
    return c2w


def _targets(eyes: list[tuple[float, float]], flipped: set[int] = frozenset()) -> PixelTargets:
    """Every pixel that sees the square, labelled by the side of x = 0 its ray meets it at (the
    two classes swapped in the `flipped` views)."""
    views, rows, cols, values = [], [], [], []
    for v, (ex, ey) in enumerate(eyes):
        row, col = np.meshgrid(np.arange(SIZE), np.arange(SIZE), indexing="ij")
        x = ex + (col.ravel() + 0.5 - INTRINSICS[2]) * HEIGHT / INTRINSICS[0]
        y = ey - (row.ravel() + 0.5 - INTRINSICS[3]) * HEIGHT / INTRINSICS[1]
        on = (np.abs(x) < 1) & (np.abs(y) < 1)
        label = (x[on] > 0).astype(np.int64)
        values.append(1 - label if v in flipped else label)
        views.append(np.full(on.sum(), v))
        rows.append(row.ravel()[on])
        cols.append(col.ravel()[on])
    return PixelTargets(np.concatenate(views), np.concatenate(rows).astype(np.float32),
                        np.concatenate(cols).astype(np.float32), torch.from_numpy(np.concatenate(values)))


EYES = [(0.0, 0.0), (0.3, 0.2), (-0.3, 0.1), (0.1, -0.3), (-0.2, -0.2)]


def _votes(vertices, faces, eyes, flipped=frozenset()):
    tri = vertices[faces]
    centroids = tri.mean(1)
    normals = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    c2w = np.stack([_camera(*eye) for eye in eyes])
    intrinsics = np.tile(INTRINSICS, (len(eyes), 1))
    votes = face_votes(centroids, normals, c2w, intrinsics, (SIZE, SIZE), _targets(eyes, flipped), 2, TOLERANCE,
                       SilentReporter())
    return votes, centroids


def test_a_view_wrong_everywhere_is_outvoted():
    vertices, faces = _square()
    votes, centroids = _votes(vertices, faces, EYES, flipped={0})
    truth = (centroids[:, 0] > 0).astype(int)
    away = np.abs(centroids[:, 0]) > 0.1  # a face on the middle line may straddle it in a pixel
    assert (votes[away].argmax(1) == truth[away]).all()
    # Every view sees every face, none more obliquely than 31 degrees (cosine 0.86): five votes.
    assert (votes.sum(1) > 5 * 0.86).all() and (votes.sum(1) <= 5).all()


def test_a_view_votes_by_how_squarely_it_sees_the_face():
    vertices, faces = _square()
    straight, centroids = _votes(vertices, faces, [(0.0, 0.0)])
    oblique, _ = _votes(vertices, faces, [(0.9, 0.0)])
    centre = np.argmin(np.linalg.norm(centroids[:, :2] - [-0.5, 0.0], axis=1))
    distance = np.hypot(1.4, HEIGHT)  # from the centre face at about (-0.5, 0) to the camera at (0.9, 0)
    assert straight[centre].sum() == pytest.approx(HEIGHT / np.hypot(0.5, HEIGHT), abs=0.02)
    assert oblique[centre].sum() == pytest.approx(HEIGHT / distance, abs=0.02)


def test_faces_turned_away_get_no_votes():
    vertices, faces = _square(facing_up=False)
    votes, _ = _votes(vertices, faces, EYES)
    assert not votes.any()


def test_the_field_decides_where_no_view_looks_and_is_one_view_elsewhere():
    vertices, faces = _square()
    hidden = np.array([[5.0, 5.0, 0.0], [5.2, 5.0, 0.0], [5.0, 5.2, 0.0]])  # outside every view
    mesh = SimpleNamespace(vertices=np.concatenate([vertices, hidden]),
                           faces=np.concatenate([faces, [[len(vertices), len(vertices) + 1, len(vertices) + 2]]]))
    dataset = SimpleNamespace(c2w=np.stack([_camera(*eye) for eye in EYES]), intrinsics=np.tile(INTRINSICS, (5, 1)),
                              height=SIZE, width=SIZE)
    # The field says class 0 everywhere, with 0.9.
    logits = np.tile(np.log([0.9, 0.1]), (len(mesh.faces), 1)).astype(np.float16)
    field = FaceCodes(logits, np.eye(2, dtype=np.float32), np.zeros(2, np.float32), np.ones(len(mesh.faces)))
    probability = voted_probability(dataset, mesh, field, _targets(EYES), TOLERANCE, SilentReporter())
    assert np.allclose(probability.sum(1), 1)
    assert probability[-1] == pytest.approx([0.9, 0.1], abs=1e-3)  # seen by none: the field's
    centroids = mesh.vertices[mesh.faces].mean(1)[:-1]
    right = centroids[:, 0] > 0.1
    assert (probability[:-1][right].argmax(1) == 1).all()  # five views outvote the field
    assert probability[:-1][right, 0].max() < (FIELD_VOTES * 0.9 + 0.5) / 5  # the field counts as one view


def test_probability_codes_read_back_as_the_probabilities():
    probability = np.array([[0.7, 0.2, 0.1], [0.0, 0.0, 1.0]])
    codes = probability_codes(probability)
    reader = LabelsReader(SimpleNamespace(teacher=None, features=codes, background=None))
    assert np.allclose(reader.embed(codes.rows()), probability, atol=2e-3)


def _strip_colours(faces: np.ndarray, vertices: np.ndarray, edge_at: float | None) -> np.ndarray:
    """Grey faces, white right of x = edge_at (no colour edge when None)."""
    colours = np.full((len(faces), 3), 0.5)
    if edge_at is not None:
        colours[vertices[faces].mean(1)[:, 0] > edge_at] = 1.0
    return colours


def test_smoothing_takes_a_lone_face_into_its_neighbours_class():
    vertices, faces = _square(8)
    probability = np.tile([0.8, 0.2], (len(faces), 1))
    probability[37] = [0.3, 0.7]  # a speck of class 1
    smoothed = smooth_on_mesh(probability, faces, _strip_colours(faces, vertices, None))
    assert (smoothed.argmax(1) == 0).all()
    assert np.allclose(smoothed.sum(1), 1, atol=1e-5)
    assert np.array_equal(smooth_on_mesh(probability, faces, _strip_colours(faces, vertices, None), iterations=0),
                          probability)


def test_smoothing_keeps_a_boundary_that_follows_a_colour_edge():
    vertices, faces = _square(8)
    right = vertices[faces].mean(1)[:, 0] > 0
    probability = np.where(right[:, None], [0.35, 0.65], [0.65, 0.35])  # barely decided on each side
    with_edge = smooth_on_mesh(probability, faces, _strip_colours(faces, vertices, 0.0))
    assert np.array_equal(with_edge.argmax(1), right.astype(int))
    assert (with_edge.max(1) > 0.65).all()  # each side grew surer
