"""The quality measures the benchmarks report, on surfaces whose answer is known by hand."""

from __future__ import annotations

import numpy as np
import trimesh

from external_worker.evaluation import chamfer, crop_to_box

FLOOR, CUBE = 1, 2


def _floor_and_cube() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A 4 x 4 floor at z = 0 (two triangles) and a 0.5 cube standing on it."""
    floor_vertices = np.array([[-2, -2, 0], [2, -2, 0], [2, 2, 0], [-2, 2, 0]], float)
    cube = trimesh.creation.box([0.5, 0.5, 0.5])
    cube.apply_translation([0, 0, 0.25])
    vertices = np.concatenate([floor_vertices, cube.vertices])
    faces = np.concatenate([[[0, 1, 2], [0, 2, 3]], cube.faces + 4])
    labels = np.array([FLOOR, FLOOR] + [CUBE] * len(cube.faces))
    return vertices, faces, labels


def _area(vertices, faces, labels, label) -> float:
    return float(trimesh.Trimesh(vertices, faces, process=False).area_faces[labels == label].sum())


def test_the_truth_is_cut_exactly_at_the_box_walls():
    """A floor triangle whose centre lies outside the box still has its part inside; a cube cut
    by the box's top keeps its lower part."""
    vertices, faces, labels = _floor_and_cube()
    cut = crop_to_box(vertices, faces, labels, np.array([[-1, -1, -0.5], [1, 1, 0.4]]))
    assert np.isclose(_area(*cut, FLOOR), 4.0)  # the 2 x 2 square of the floor inside the box
    assert np.isclose(_area(*cut, CUBE), 0.25 + 4 * 0.5 * 0.4)  # bottom and the sides up to 0.4
    assert cut[0].min(0)[2] >= 0 and cut[0].max(0)[2] <= 0.4 + 1e-9
    assert len(cut[0]) == len(np.unique(cut[1]))  # only the vertices the cut faces use


def test_a_box_around_everything_keeps_the_surface_and_an_empty_box_keeps_nothing():
    vertices, faces, labels = _floor_and_cube()
    whole = crop_to_box(vertices, faces, labels, np.array([[-3, -3, -1], [3, 3, 1]]))
    assert np.isclose(_area(*whole, FLOOR), 16.0) and np.isclose(_area(*whole, CUBE), 1.5)
    empty = crop_to_box(vertices, faces, labels, np.array([[5, 5, 5], [6, 6, 6]]))
    assert len(empty[1]) == 0


def test_chamfer_is_relative_to_the_surface_the_truth_keeps():
    """Vertices that no face of the truth uses (the floor cut away) do not widen the extent."""
    vertices, faces, labels = _floor_and_cube()
    cube_faces = faces[labels == CUBE]
    moved = vertices.copy()
    moved[:, 0] += 0.01
    distance, relative = chamfer(moved, cube_faces, vertices, cube_faces, samples=20_000)
    assert 0 < distance < 0.011
    assert np.isclose(relative, distance / np.sqrt(3 * 0.5 ** 2))
