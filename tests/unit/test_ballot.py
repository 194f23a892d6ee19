"""How a click's views decide together (queries.ballot), how faces no view saw are filled from
around them (features.mesh_smoothing.fill_unknown), and what the ideal segmenter's box asks for:
on small cases whose answer is known by hand."""

from __future__ import annotations

import numpy as np

from external_worker.features.mesh_smoothing import face_adjacency, fill_unknown
from external_worker.queries.ballot import Ballot
from external_worker.teachers.oracles import LabelOracle

FACES = 100
OBJECT = np.arange(FACES) < 40           # faces 0..39 are the object
NEIGHBOUR = np.arange(FACES) >= 40     # faces 40..99 a larger neighbour touching it


def _sees(*ranges: tuple[int, int]) -> np.ndarray:
    weight = np.zeros(FACES)
    for start, stop in ranges:
        weight[start:stop] = 1.0
    return weight


def test_a_clicked_view_that_merged_the_neighbour_is_outvoted_and_loses_its_say():
    ballot = Ballot(FACES)
    ballot.add(OBJECT | NEIGHBOUR, _sees((0, 100)), standing=2.0)  # the clicked view: object and neighbour merged
    for _ in range(3):
        ballot.add(OBJECT.copy(), _sees((0, 100)))
    votes, seen, used = ballot.consensus()
    assert used == 3  # the clicked view disagreed with the three others
    assert np.array_equal(votes / seen > 0.5, OBJECT)


def test_a_view_that_sees_only_its_own_side_is_no_disagreement():
    """The far side of the object, which only one view sees, does not count against that view."""
    ballot = Ballot(FACES)
    ballot.add(OBJECT & (np.arange(FACES) < 20), _sees((0, 20), (40, 100)), standing=2.0)
    ballot.add(OBJECT.copy(), _sees((0, 100)))  # also sees faces 20..39, which the first did not
    votes, seen, used = ballot.consensus()
    assert used == 2
    assert np.array_equal(votes / np.maximum(seen, 1e-9) > 0.5, OBJECT)


def test_a_new_view_prompted_onto_something_else_does_not_agree():
    ballot = Ballot(FACES)
    ballot.add(OBJECT.copy(), _sees((0, 100)), standing=2.0)
    assert ballot.agrees(OBJECT.copy(), _sees((10, 100)))
    assert not ballot.agrees(NEIGHBOUR.copy(), _sees((0, 100)))


def test_unknown_faces_are_interpolated_from_the_known_ones_around_them():
    """A strip of 10 faces, each touching the next: 0 and 9 known (1 and 0), the rest between."""
    pairs = np.stack([np.arange(9), np.arange(1, 10)], 1)
    adjacency = face_adjacency(np.zeros((10, 3), int), pairs)
    values = np.zeros(10)
    values[0] = 1.0
    known = np.zeros(10, bool)
    known[[0, 9]] = True
    filled = fill_unknown(values, known, adjacency)
    assert np.allclose(filled, np.linspace(1, 0, 10), atol=1e-4)  # harmonic on a path: linear
    # A component with no known face comes out 0; known faces keep their values.
    lone = face_adjacency(np.zeros((12, 3), int), np.r_[pairs, [[10, 11]]])
    values12, known12 = np.r_[values, 0.7, 0.7], np.r_[known, False, False]
    filled12 = fill_unknown(values12, known12, lone)
    assert np.allclose(filled12[10:], 0, atol=1e-4) and filled12[0] == 1.0


def test_the_ideal_segmenters_box_takes_the_object_it_encloses_not_the_floor_around_it():
    """Features of a floor (label 1) filling the view and a small object (label 0) on it; a box
    drawn around the object holds more floor than object, yet asks for the object."""
    features = np.zeros((2, 16, 16), np.float32)
    features[1] = 1.0
    features[:, 6:10, 6:10] = [[[1.0]], [[0.0]]]
    oracle = LabelOracle(np.full(2, -1.0, np.float32))
    box = np.array([20.0, 20.0, 44.0, 44.0])  # 64 px image: the object covers 24..39, the box a margin more
    mask = oracle.decode(features, (64, 64), box=box)[0][0]
    assert mask[24:40, 24:40].all() and mask.sum() == 16 * 16
