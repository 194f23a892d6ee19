"""The region of a selection a click points at (queries.regions)."""

from __future__ import annotations

import numpy as np

from external_worker.queries.regions import clicked_region


def _line(start: float, count: int, step: float = 0.01) -> np.ndarray:
    """Face centroids along x, `step` apart: a strip of surface."""
    return np.stack([start + step * np.arange(count), np.zeros(count), np.zeros(count)], 1)


def test_only_the_clicked_patch_of_the_label_is_kept():
    centroids = np.concatenate([_line(0.0, 50), _line(2.0, 30)])  # the object, and a stray patch far away
    selected = np.ones(len(centroids), bool)
    region = clicked_region(centroids, selected, np.array([10]), gap=0.03)
    assert region[:50].all() and not region[50:].any()
    assert clicked_region(centroids, selected, np.array([60]), gap=0.03).sum() == 30


def test_gaps_narrower_than_the_tolerance_are_bridged():
    centroids = np.concatenate([_line(0.0, 20), _line(0.19 + 0.02, 20), _line(1.0, 20)])  # a 0.02 gap, then 0.6
    selected = np.ones(len(centroids), bool)
    region = clicked_region(centroids, selected, np.array([0]), gap=0.03)
    assert region[:40].all() and not region[40:].any()
    assert clicked_region(centroids, selected, np.array([0]), gap=0.015)[:40].sum() == 20  # cells 12 and 14


def test_unselected_faces_cut_the_region_and_never_join_it():
    centroids = _line(0.0, 100)
    selected = np.ones(100, bool)
    selected[40:60] = False  # another label between two patches of this one
    region = clicked_region(centroids, selected, np.array([5]), gap=0.03)
    assert region[:40].all() and not region[40:].any()
    assert not clicked_region(centroids, selected, np.array([50]), gap=0.03).any()  # clicked off the selection


def test_several_seeds_keep_each_of_their_regions():
    centroids = np.concatenate([_line(0.0, 10), _line(1.0, 10), _line(2.0, 10)])
    region = clicked_region(centroids, np.ones(30, bool), np.array([0, 25]), gap=0.03)
    assert region.tolist() == [True] * 10 + [False] * 10 + [True] * 10


def test_a_tiny_gap_over_a_wide_scene_stays_within_the_cell_budget():
    centroids = np.concatenate([_line(0.0, 10, 1e-6), _line(1000.0, 10, 1e-6)])
    centroids[:, 1:] = [[0.0, 0.0]] * 10 + [[1000.0, 1000.0]] * 10
    region = clicked_region(centroids, np.ones(20, bool), np.array([0]), gap=1e-6)
    assert region[:10].all() and not region[10:].any()


def test_a_labels_click_keeps_the_clicked_object_not_the_stray_faces_of_its_label():
    from external_worker.features.face_codes import FaceCodes
    from external_worker.queries.click import ClickPrompt
    from external_worker.queries.faces import FaceFeatures, Geometry
    from external_worker.queries.readers import CastPrompt, LabelsReader
    from external_worker.teachers.labels import LabelsTeacher

    centroids = np.concatenate([_line(0.0, 30), _line(0.3, 30), _line(2.0, 10)])  # head, support, a stray patch
    label = np.array([0] * 30 + [1] * 30 + [0] * 10)
    triangle = np.array([[0.0, 0.0, 0.0], [0.004, 0.0, 0.0], [0.0, 0.004, 0.0]])
    vertices = (centroids[:, None] + triangle - triangle.mean(0)).reshape(-1, 3)
    geometry = Geometry.of(vertices, np.arange(len(vertices)).reshape(-1, 3))
    codes = FaceCodes(np.eye(2, dtype=np.float16)[label], 10 * np.eye(2, dtype=np.float32), np.zeros(2, np.float32),
                      np.full(len(label), 10.0, np.float32))
    reader = LabelsReader(FaceFeatures(LabelsTeacher([1, 2], ["head", "background"]), codes, None))
    prompt = ClickPrompt.single(np.array([0.1, 0.0, 1.0]), np.array([0.0, 0.0, -1.0]))
    result = reader.click(None, CastPrompt(prompt, geometry, [10], np.array([1.0]), 10, None, 0.03), 0)
    assert result.query == "head"
    assert (result.probability[:30] > 0.5).all() and not (result.probability[30:] > 0.5).any()
