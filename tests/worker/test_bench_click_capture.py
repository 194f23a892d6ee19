"""Tests for the pure parts of scripts/bench_click_capture.py: the dataset it builds, the click
ray, the painter's-algorithm rasteriser and the choice of labelled views."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import bench_click_capture as bench  # scripts/ is on the tests' sys.path (pyproject.toml)
from external_worker.datasets.dataset import load_dataset
from external_worker.geometry.camera import project

SIZE = 32  # pixels of the camera used by the rasteriser tests
INTRINSICS = np.array([32.0, 32.0, 16.0, 16.0])


def _quad(z: float, x0: float, x1: float, y0: float, y1: float) -> tuple[np.ndarray, np.ndarray]:
    """Two triangles covering [x0, x1] x [y0, y1] at depth z (camera at the origin, looking down -z)."""
    vertices = np.array([[x0, y0, z], [x1, y0, z], [x1, y1, z], [x0, y1, z]], np.float64)
    return vertices, np.array([[0, 1, 2], [0, 2, 3]])


def test_nearer_triangles_win_whatever_their_order():
    far_v, far_f = _quad(-4.0, -2.0, 2.0, -2.0, 2.0)        # fills the whole view
    near_v, near_f = _quad(-2.0, -0.47, 0.53, -0.47, 0.53)  # pixel centres 8..23 in both directions
    vertices = np.concatenate([near_v, far_v])
    faces = np.concatenate([near_f, far_f + 4])  # nearest faces listed first: order must not matter
    ids = bench.face_index_image(vertices, faces, np.eye(4), INTRINSICS, SIZE, SIZE)
    near = np.isin(ids, [0, 1])
    assert near[8:24, 8:24].all()
    assert not near[:7].any() and not near[24:].any() and not near[:, :7].any() and not near[:, 24:].any()
    assert np.isin(ids[~near], [2, 3]).all()


def test_triangles_behind_the_camera_are_skipped():
    vertices, faces = _quad(2.0, -1.0, 1.0, -1.0, 1.0)
    ids = bench.face_index_image(vertices, faces, np.eye(4), INTRINSICS, SIZE, SIZE)
    assert (ids == -1).all()


def test_click_ray_goes_through_the_point_seen_at_that_pixel():
    rotation, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(3, 3)))
    rotation[:, 0] *= np.sign(np.linalg.det(rotation))  # a proper rotation
    c2w = np.eye(4)
    c2w[:3, :3], c2w[:3, 3] = rotation, [1.0, -2.0, 0.5]
    point = c2w[:3, 3] + rotation @ np.array([0.3, -0.2, -3.0])
    u, v, _ = project(point[None], c2w, INTRINSICS)
    origin, direction = bench.pixel_ray(c2w, INTRINSICS, float(v[0]), float(u[0]))
    assert np.allclose(origin, c2w[:3, 3])
    assert np.allclose(direction, (point - origin) / np.linalg.norm(point - origin))


def test_mask_centroid_is_in_image_coordinates():
    mask = np.zeros((10, 20), bool)
    mask[2:4, 10:14] = True  # rows 2, 3 and columns 10..13: centre at pixel (2.5, 11.5)
    assert bench.mask_centroid(mask) == (3.0, 12.0)


def test_labelled_views_are_spread_and_come_from_the_candidates():
    angles = np.radians([0, 10, 90, 100, 180, 190, 270, 280])
    directions = np.stack([np.cos(angles), np.sin(angles), np.zeros_like(angles)], 1)
    candidates = np.array([1, 2, 3, 5, 6, 7])  # 0 and 4 are held out
    chosen = bench.farthest_views(directions, candidates, 2)
    assert chosen == [1, 5]  # 10 degrees, then its opposite at 190
    assert set(bench.farthest_views(directions, candidates, 4)) <= set(candidates.tolist())


def test_iou():
    a = np.array([True, True, False, False])
    b = np.array([True, False, True, False])
    assert bench.iou(a, b) == pytest.approx(1 / 3)
    assert np.isnan(bench.iou(np.zeros(3, bool), np.zeros(3, bool)))


def test_built_dataset_labels_only_the_chosen_views(tmp_path):
    source = tmp_path / "capture"
    (source / "images_5").mkdir(parents=True)
    (source / "masks_5").mkdir()
    stems = ["a", "b", "c"]
    mask = np.zeros((16, 16), np.uint8)
    mask[4:12, 4:12] = 255
    for stem in stems:
        Image.new("RGB", (16, 16), (90, 120, 30)).save(source / "images_5" / f"{stem}.jpg")
        Image.fromarray(mask).save(source / "masks_5" / f"{stem}.png")
    poses = np.zeros((3, 3, 5))
    poses[:, :, :3] = np.eye(3)
    poses[:, :, 3] = [[0, 0, 4], [0, 1, 4], [1, 0, 4]]
    poses[:, :, 4] = [80, 80, 100]  # height, width, focal at the full size
    np.save(source / "poses_bounds.npy", np.concatenate([poses.reshape(3, 15), np.tile([[1.0, 6.0]], (3, 1))], 1))

    out = tmp_path / "built"
    bench.build_dataset(source, out, ["a", "b"])
    bench.build_dataset(source, out, ["c"])  # a second build replaces the first one's labels
    dataset = load_dataset(out, downscale=2)
    assert dataset.width == 8 and dataset.has_labels.tolist() == [False, False, True]
    assert dataset.label_names == bench.LABEL_NAMES
    expected = np.where(mask[1::2, 1::2] > 0, bench.HEAD, bench.BACKGROUND)
    assert (dataset.labels[2] == expected).all()
    assert not (source / "labels").exists()  # the source capture is never written to
