"""Tests for scripts/make_scene.py: a tiny scene rendered by Blender in this process."""

from __future__ import annotations

import json
import math
from pathlib import Path

import bpy
import numpy as np
import pytest
from PIL import Image

from mathutils.bvhtree import BVHTree

from make_scene import TOUCH_TOLERANCE, make_scene  # scripts/ is on the tests' sys.path (pyproject.toml)

TRAIN_VIEWS, TEST_VIEWS, RESOLUTION = 4, 2, 32


@pytest.fixture(scope="module")
def scene_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("scene")
    assert make_scene(out, resolution=RESOLUTION, views=TRAIN_VIEWS, test_views=TEST_VIEWS,
                      objects=3, seed=0, samples=4) == out
    return out


@pytest.fixture(scope="module")
def labels(scene_dir: Path) -> dict[str, str]:
    return json.loads((scene_dir / "labels.json").read_text())


def _frames(scene_dir: Path) -> list[tuple[str, dict, dict]]:
    """(split, transforms json, frame) for every view of both splits."""
    out = []
    for split in ("train", "test"):
        meta = json.loads((scene_dir / f"transforms_{split}.json").read_text())
        out += [(split, meta, frame) for frame in meta["frames"]]
    return out


def _images(scene_dir: Path, frame: dict) -> tuple[np.ndarray, np.ndarray]:
    """RGBA render and label map of a frame."""
    rgba = Image.open(scene_dir / (frame["file_path"] + ".png"))
    label = Image.open(scene_dir / "labels" / (frame["file_path"][2:] + ".png"))
    assert rgba.mode == "RGBA" and label.mode == "L"
    assert rgba.size == label.size == (RESOLUTION, RESOLUTION)
    return np.asarray(rgba), np.asarray(label)


def test_files_and_metadata(scene_dir: Path, labels: dict[str, str]) -> None:
    assert labels == {"1": "cube", "2": "sphere", "3": "cone"}
    counts = {"train": TRAIN_VIEWS, "test": TEST_VIEWS}
    for split, count in counts.items():
        meta = json.loads((scene_dir / f"transforms_{split}.json").read_text())
        assert meta["camera_angle_x"] == pytest.approx(math.radians(40.0), rel=1e-5)
        assert [f["file_path"] for f in meta["frames"]] == [f"./{split}/r_{k:03d}" for k in range(count)]
        for k in range(count):
            assert (scene_dir / split / f"r_{k:03d}.png").is_file()
            assert (scene_dir / "labels" / split / f"r_{k:03d}.png").is_file()
    assert not list(scene_dir.rglob("*.tmp")), "temporary files left behind"


def test_cameras_are_rigid_and_look_at_the_scene(scene_dir: Path) -> None:
    positions = []
    for _, meta, frame in _frames(scene_dir):
        matrix = np.array(frame["transform_matrix"])
        assert matrix.shape == (4, 4)
        np.testing.assert_allclose(matrix[3], [0, 0, 0, 1], atol=1e-6)
        rotation, position = matrix[:3, :3], matrix[:3, 3]
        np.testing.assert_allclose(rotation @ rotation.T, np.eye(3), atol=1e-5)
        assert np.linalg.det(rotation) == pytest.approx(1.0, abs=1e-5)
        centre = np.mean(meta["aabb"], axis=0)
        to_centre = (centre - position) / np.linalg.norm(centre - position)
        assert math.degrees(math.acos(np.clip(-rotation[:, 2] @ to_centre, -1, 1))) < 2.0
        assert position[2] > centre[2]  # upper hemisphere
        positions.append(position)
    distances = np.linalg.norm(np.array(positions)[:, None] - np.array(positions)[None], axis=2)
    assert distances[~np.eye(len(positions), dtype=bool)].min() > 0.1, "two cameras coincide"


def test_label_maps_match_renders(scene_dir: Path, labels: dict[str, str]) -> None:
    seen, agree_any, agree_half, pixels = set(), 0, 0, 0
    for _, _, frame in _frames(scene_dir):
        rgba, label = _images(scene_dir, frame)
        assert set(np.unique(label).tolist()) <= {0} | {int(k) for k in labels}
        seen |= set(np.unique(label).tolist()) - {0}
        alpha = rgba[..., 3]
        agree_any += np.count_nonzero((label > 0) == (alpha > 0))
        agree_half += np.count_nonzero((label > 0) == (alpha >= 128))
        pixels += label.size
    assert seen == {int(k) for k in labels}, "some object is in no label map"
    # Only pixels partly covered by an object can disagree.
    assert agree_any / pixels >= 0.97
    assert agree_half / pixels >= 0.98


def test_labels_fall_inside_their_projected_objects(scene_dir: Path) -> None:
    """Each labelled pixel centre lies in the projected bounding box of its object's ground truth.

    Checks the pixel grid, the camera convention of the transforms and the ids, independently
    of how the script computed the label maps.
    """
    gt = np.load(scene_dir / "ground_truth.npz")
    for _, meta, frame in _frames(scene_dir):
        _, label = _images(scene_dir, frame)
        matrix = np.array(frame["transform_matrix"])
        focal = 0.5 * RESOLUTION / math.tan(meta["camera_angle_x"] / 2.0)
        for object_id in np.unique(label[label > 0]):
            points = gt["vertices"][np.unique(gt["faces"][gt["face_labels"] == object_id])]
            cam = (points - matrix[:3, 3]) @ matrix[:3, :3]  # world -> camera (OpenGL: looks along -Z)
            u = RESOLUTION / 2 + focal * cam[:, 0] / -cam[:, 2]
            v = RESOLUTION / 2 - focal * cam[:, 1] / -cam[:, 2]
            rows, cols = np.nonzero(label == object_id)
            assert (cols + 0.5 >= u.min() - 1e-3).all() and (cols + 0.5 <= u.max() + 1e-3).all()
            assert (rows + 0.5 >= v.min() - 1e-3).all() and (rows + 0.5 <= v.max() + 1e-3).all()


def test_ground_truth_mesh(scene_dir: Path, labels: dict[str, str]) -> None:
    gt = np.load(scene_dir / "ground_truth.npz")
    vertices, faces, face_labels = gt["vertices"], gt["faces"], gt["face_labels"]
    assert vertices.dtype == np.float32 and vertices.ndim == 2 and vertices.shape[1] == 3
    assert faces.dtype == np.int32 and faces.ndim == 2 and faces.shape[1] == 3
    assert face_labels.dtype == np.int32 and face_labels.shape == (len(faces),)
    assert faces.min() >= 0 and faces.max() < len(vertices)
    assert set(np.unique(face_labels).tolist()) == {int(k) for k in labels}
    assert vertices[:, 2].min() == pytest.approx(0.0, abs=1e-5)  # resting on the ground
    aabb = np.array(json.loads((scene_dir / "transforms_train.json").read_text())["aabb"])
    assert (vertices >= aabb[0]).all() and (vertices <= aabb[1]).all()
    assert ((vertices.max(axis=0) - vertices.min(axis=0))[:2] < 3.5).all()  # a compact scene


@pytest.fixture(scope="module")
def grounded_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("grounded")
    make_scene(out, resolution=RESOLUTION, views=TRAIN_VIEWS, test_views=TEST_VIEWS, objects=3, seed=1,
               samples=4, ground=True)
    return out


def _object_mesh(gt, label: int) -> tuple[np.ndarray, np.ndarray]:
    faces = gt["faces"][gt["face_labels"] == label]
    return gt["vertices"], faces


def _gap(gt, a: int, b: int) -> tuple[float, bool]:
    """Smallest distance between the vertices of object a and the surface of b, either way, and
    whether their triangles intersect."""
    trees = {label: BVHTree.FromPolygons(gt["vertices"].tolist(), _object_mesh(gt, label)[1].tolist(),
                                         all_triangles=True) for label in (a, b)}
    gaps = []
    for mine, other in ((a, b), (b, a)):
        used = np.unique(_object_mesh(gt, mine)[1])
        gaps += [trees[other].find_nearest(gt["vertices"][i].tolist())[3] for i in used]
    return float(min(gaps)), bool(trees[a].overlap(trees[b]))


def test_grounded_scene_rests_on_a_floor_that_reaches_past_the_box(grounded_dir: Path) -> None:
    labels = json.loads((grounded_dir / "labels.json").read_text())
    assert labels == {"1": "cube", "2": "sphere", "3": "cone", "4": "ground"}
    gt = np.load(grounded_dir / "ground_truth.npz")
    floor = gt["vertices"][np.unique(gt["faces"][gt["face_labels"] == 4])]
    assert np.abs(floor[:, 2]).max() < 1e-6  # flat, at z = 0
    aabb = np.array(json.loads((grounded_dir / "transforms_train.json").read_text())["aabb"])
    assert (floor[:, :2].min(0) < aabb[0, :2] - 1).all() and (floor[:, :2].max(0) > aabb[1, :2] + 1).all()
    objects = gt["vertices"][np.unique(gt["faces"][gt["face_labels"] != 4])]
    assert (objects >= aabb[0]).all() and (objects <= aabb[1]).all()  # the box frames the objects
    floor_pixels = [np.mean(_images(grounded_dir, frame)[1] == 4) for _, _, frame in _frames(grounded_dir)]
    assert np.mean(floor_pixels) > 0.4  # the floor fills much of every view, as in a room


def test_grounded_objects_touch_without_overlapping(grounded_dir: Path) -> None:
    gt = np.load(grounded_dir / "ground_truth.npz")
    cube, sphere, cone = 1, 2, 3
    gap, overlap = _gap(gt, sphere, cube)  # slid along the floor until it touched the cube
    assert gap < 2 * TOUCH_TOLERANCE + 0.01 and not overlap, (gap, overlap)
    cube_top = gt["vertices"][np.unique(_object_mesh(gt, cube)[1])][:, 2].max()
    cone_base = gt["vertices"][np.unique(_object_mesh(gt, cone)[1])][:, 2].min()
    assert cone_base == pytest.approx(cube_top, abs=1e-5)  # standing on the cube, not floating


def test_blender_is_left_empty(scene_dir: Path) -> None:
    assert len(bpy.data.objects) == 0 and len(bpy.data.meshes) == 0


@pytest.mark.parametrize("kwargs", [{"objects": 99}, {"views": 0}, {"resolution": 2}])
def test_bad_arguments_are_refused(tmp_path: Path, kwargs: dict[str, int]) -> None:
    name = next(iter(kwargs))
    with pytest.raises(ValueError, match=name):
        make_scene(tmp_path, **kwargs)
    assert not any(tmp_path.iterdir())
