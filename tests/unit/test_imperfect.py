"""The imperfect teacher's corruptions (teachers.imperfect) on label maps whose answer is known:
each error happens at its rate, only where it should, the same for the same seed, and the 2D IoU
that the benchmark reports is the one computed by hand."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from external_worker.teachers.imperfect import (Corruption, corrupt_label_map, corrupt_label_maps,
                                                label_map_iou)
from external_worker.teachers.oracles import LabelOracle

FLOOR = 9
BACKGROUND = frozenset({FLOOR})


def _scene() -> np.ndarray:
    """64 x 64: a floor (9) under sky (0), four objects standing apart on it (1-4), and two
    objects touching each other (5, 6)."""
    labels = np.zeros((64, 64), np.int32)
    labels[32:] = FLOOR
    for k, col in enumerate((2, 12, 22, 32)):
        labels[36:44, col:col + 6] = k + 1
    labels[48:56, 44:52] = 5
    labels[48:56, 52:58] = 6
    return labels


def test_no_corruption_is_the_truth():
    labels = _scene()
    out = corrupt_label_map(labels, Corruption(), np.random.default_rng(0), BACKGROUND)
    assert np.array_equal(out, labels) and out is not labels
    assert np.array_equal(corrupt_label_map(labels, Corruption.at_level(0), np.random.default_rng(1)), labels)


def test_same_seed_same_maps_whatever_views_are_asked_for():
    maps = np.stack([_scene()] * 6)
    level = Corruption.at_level(2)
    all_views = corrupt_label_maps(maps, np.arange(6), level, seed=3, background=BACKGROUND)
    again = corrupt_label_maps(maps, np.arange(6), level, seed=3, background=BACKGROUND)
    one_view = corrupt_label_maps(maps, np.array([4]), level, seed=3, background=BACKGROUND)
    other_seed = corrupt_label_maps(maps, np.arange(6), level, seed=4, background=BACKGROUND)
    assert np.array_equal(all_views, again)
    assert np.array_equal(one_view[4], all_views[4])
    assert np.array_equal(one_view[:4], maps[:4])  # views not asked for are left alone
    assert not np.array_equal(all_views, other_seed)
    assert not np.array_equal(all_views[0], all_views[1])  # each view errs in its own way


def test_missed_objects_take_the_label_around_them_at_their_rate():
    labels = _scene()
    views = 400
    missed = np.zeros((views, 4), bool)
    for v in range(views):
        out = corrupt_label_map(labels, Corruption(missed=0.2), np.random.default_rng(v), BACKGROUND)
        for k in range(4):
            was = labels == k + 1
            assert (out[was] == k + 1).all() or (out[was] == FLOOR).all()  # missed whole, into the floor
            missed[v, k] = (out[was] == FLOOR).all()
        assert (out[labels == FLOOR] == FLOOR).all()  # the background is never missed
    assert missed.mean() == pytest.approx(0.2, abs=0.03)


def test_merged_objects_join_a_touching_object_never_swap_and_lone_objects_stay():
    labels = _scene()
    merges = 0
    for v in range(300):
        out = corrupt_label_map(labels, Corruption(merged=0.3), np.random.default_rng(v), BACKGROUND)
        assert np.array_equal(out[labels <= 4], labels[labels <= 4])  # no touching object: nothing to merge into
        pair = out[(labels == 5) | (labels == 6)]
        if not np.array_equal(out, labels):
            assert len(np.unique(pair)) == 1 and pair[0] in (5, 6)  # one object, labelled as one of the two
            merges += 1
    # Either of the two merges (0.3 each, the second only when the first did not): 1 - 0.7^2.
    assert merges / 300 == pytest.approx(0.51, abs=0.07)


def test_jitter_moves_boundaries_and_nothing_far_from_them():
    labels = np.zeros((128, 128), np.int32)
    labels[32:96, 32:96] = 1
    out = corrupt_label_map(labels, Corruption(jitter=2 / 128), np.random.default_rng(0))
    distance_to_edge = np.minimum(ndimage.distance_transform_edt(labels == 1), ndimage.distance_transform_edt(labels == 0))
    assert np.array_equal(out[distance_to_edge > 12], labels[distance_to_edge > 12])  # 6 standard deviations
    changed = out != labels
    assert changed.sum() > 20  # the boundary did move
    assert 0.85 < label_map_iou(out[None], labels[None]) < 1.0


def test_blobs_come_at_their_rate_with_labels_of_the_map():
    labels = np.full((128, 128), FLOOR, np.int32)
    labels[0, 0] = 1  # present, so blobs are drawn from {1, floor}: half of them show
    counts = []
    for v in range(300):
        out = corrupt_label_map(labels, Corruption(blobs=4, blob_radius=0.03), np.random.default_rng(v))
        assert set(np.unique(out)) <= {1, FLOOR}
        blob = out == 1
        blob[0, 0] = False
        counts.append(ndimage.label(blob)[1])
    assert np.mean(counts) == pytest.approx(2.0, abs=0.35)


def test_label_map_iou_is_the_mean_over_views_and_objects_present():
    truth = np.zeros((2, 4, 4), np.int32)
    truth[0, :2] = 1          # view 0: object 1 on the top half (8 pixels), object 2 on the bottom
    truth[0, 2:] = 2
    truth[1, :, :2] = 1       # view 1: object 1 on the left half, nothing else
    predicted = truth.copy()
    predicted[0, 1] = 2       # one row of object 1 taken by object 2: IoU 4/8 and 8/12
    predicted[1] = 0          # object 1 missed in view 1: 0
    assert label_map_iou(predicted, truth) == pytest.approx((4 / 8 + 8 / 12 + 0) / 3)
    assert label_map_iou(truth, truth) == 1.0


def test_the_oracle_reads_its_prompt_from_the_corrupted_map():
    """Features of two labels side by side: a click on the left half selects it; when the
    corruption merges the left object into the right one, the same click selects both."""
    features = np.zeros((2, 8, 8), np.float32)
    features[0, :, :4] = 1.0
    features[1, :, 4:] = 1.0
    background = np.full(2, -1.0, np.float32)
    click, positive = np.array([[4.0, 16.0]]), np.array([1])
    clean = LabelOracle(background).decode(features, (32, 32), click, positive)[0][0]
    assert clean[:, :16].all() and not clean[:, 16:].any()
    seen = []

    def merge_left_into_right(objects: np.ndarray) -> np.ndarray:
        seen.append(objects.shape)
        return np.where(objects == 1, 2, objects)

    merged = LabelOracle(background, merge_left_into_right).decode(features, (32, 32), click, positive)[0][0]
    assert merged.all()
    assert seen == [(32, 32)]  # corrupted at the image's size, once per call
