"""Dataset loaders: formats, cameras, image modes, label maps and the errors bad input gets."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from external_worker.datasets.dataset import Dataset, load_dataset
from external_worker.errors import DatasetError

from capture_files import (save_image, random_pixels, look_at, ring_poses, write_json, frame,
                           single_transforms, transforms_scene, llff_row, llff_scene, colmap_model)

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"


def dataset_error(match: str, path, **kwargs) -> DatasetError:
    with pytest.raises(DatasetError, match=match) as info:
        load_dataset(path, **kwargs)
    assert info.value.hint, "every dataset error says what to do"
    return info.value


# transforms.json


def test_split_files_give_images_cameras_split_and_json_aabb(tmp_path):
    pixels = transforms_scene(tmp_path, {"train": 2, "test": 1}, np.random.default_rng(1),
                              aabb=[[-1, -2, -3], [1, 2, 3]])
    ds = load_dataset(tmp_path / "transforms_test.json")  # a JSON file stands for its folder

    assert ds.root == tmp_path
    assert ds.names == ["train/r_0.png", "train/r_1.png", "test/r_0.png"]
    assert list(ds.split) == ["train", "train", "test"]
    assert (len(ds), ds.height, ds.width) == (3, 4, 6)
    stored = np.stack(pixels["train"] + pixels["test"]).astype(np.float32) / 255
    # Colours stay as stored, even where alpha is 0 (no compositing).
    np.testing.assert_allclose(ds.images, stored[..., :3], atol=1e-6)
    np.testing.assert_allclose(ds.alphas, stored[..., 3], atol=1e-6)
    np.testing.assert_allclose(ds.c2w[2], ring_poses(1)[0], atol=1e-6)
    focal = 0.5 * 6 / math.tan(0.4)
    np.testing.assert_allclose(ds.intrinsics, [[focal, focal, 3, 2]] * 3, rtol=1e-6)
    np.testing.assert_array_equal(ds.aabb, [[-1, -2, -3], [1, 2, 3]])
    assert ds.images.dtype == ds.c2w.dtype == ds.intrinsics.dtype == np.float32
    assert ds.near_far is None and ds.labels is None and ds.label_names == {}
    assert not ds.has_labels.any()


@pytest.mark.parametrize("count, tests", [(16, [0, 8]), (15, [])])
def test_single_transforms_holds_out_every_8th_frame_from_16_frames(tmp_path, count, tests):
    rng = np.random.default_rng(2)
    poses = ring_poses(count)
    for i in range(count):
        save_image(tmp_path / "images" / f"{i:02d}.jpg", random_pixels(rng))
    write_json(tmp_path / "transforms.json",
               {"fl_x": 5.0, "frames": [frame(f"images/{i:02d}.jpg", poses[i]) for i in range(count)]})
    ds = load_dataset(tmp_path)
    assert list(np.flatnonzero(ds.split == "test")) == tests
    assert set(ds.split) <= {"train", "test"}
    assert ds.alphas is None


def test_frame_intrinsics_override_file_ones_and_scale_to_loaded_pixels(tmp_path):
    rng = np.random.default_rng(3)
    for name in ("a", "b"):
        save_image(tmp_path / f"{name}.png", random_pixels(rng, 4, 8))
    # Intrinsics written for 16x8 images; the files are 8x4 and we load them at 4x2.
    single_transforms(tmp_path, [frame("a", np.eye(4)), frame("b.png", np.eye(4), fl_x=20.0, cy=5.0)],
                      fl_x=10.0, fl_y=12.0, cx=7.0, cy=3.0, w=16, h=8)
    ds = load_dataset(tmp_path, downscale=2)
    assert (ds.height, ds.width) == (2, 4)
    np.testing.assert_allclose(ds.intrinsics, [[2.5, 3.0, 1.75, 0.75], [5.0, 3.0, 1.75, 1.25]])


def test_downscale_box_filters_pixels(tmp_path):
    pixels = np.repeat(np.repeat(np.array([[0, 40], [200, 255]], np.uint8), 2, 0), 2, 1)
    pixels[0, 0] = 100  # one pixel of the top-left 2x2 block differs: the block averages to 25
    save_image(tmp_path / "a.png", np.stack([pixels] * 3, -1))
    single_transforms(tmp_path, [frame("a", np.eye(4))])
    ds = load_dataset(tmp_path, downscale=2)
    np.testing.assert_allclose(ds.images[0, :, :, 0], np.array([[25, 40], [200, 255]]) / 255, atol=1 / 255)


def test_image_modes_become_rgb_with_alpha_where_the_file_has_it(tmp_path):
    grey = np.array([[0, 128, 255, 64]], np.uint8)
    palette = Image.fromarray(np.array([[0, 1, 2, 1]], np.uint8), "P")
    palette.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * 759)
    palette.save(tmp_path / "palette.png", transparency=1)  # index 1 is transparent
    save_image(tmp_path / "grey.png", grey, "L")
    Image.fromarray(np.stack([grey, 255 - grey], -1), "LA").save(tmp_path / "grey_alpha.png")
    save_image(tmp_path / "grey16.png", np.array([[0, 32768, 65535, 16384]], np.uint16))
    Image.fromarray(np.zeros((1, 4, 3), np.uint8)).convert("CMYK").save(tmp_path / "cmyk.jpg")
    names = ["palette.png", "grey.png", "grey_alpha.png", "grey16.png", "cmyk.jpg"]
    single_transforms(tmp_path, [frame(n, np.eye(4)) for n in names])

    ds = load_dataset(tmp_path)
    np.testing.assert_allclose(ds.images[0, 0], [[1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 1, 0]])
    np.testing.assert_allclose(ds.alphas[0, 0], [1, 0, 1, 0])
    np.testing.assert_allclose(ds.images[1, 0], np.repeat(grey[0][:, None] / 255, 3, 1), atol=1e-6)
    np.testing.assert_allclose(ds.alphas[1], 1.0)  # no alpha channel: opaque
    np.testing.assert_allclose(ds.alphas[2, 0], (255 - grey[0]) / 255, atol=1e-6)
    np.testing.assert_allclose(ds.images[3, 0, :, 0], [0, 32768 / 65535, 1, 16384 / 65535], atol=1e-6)
    np.testing.assert_allclose(ds.images[4], 0.0, atol=0.02)


def test_exif_orientation_is_applied(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    Image.fromarray(np.zeros((2, 4, 3), np.uint8)).save(tmp_path / "a.jpg", exif=exif)
    single_transforms(tmp_path, [frame("a.jpg", np.eye(4))])
    assert load_dataset(tmp_path).images.shape == (1, 4, 2, 3)


def test_aabb_is_estimated_around_the_point_the_cameras_look_at(tmp_path):
    centre = np.array([1.0, 2.0, 3.0])
    poses = ring_poses(12, centre=centre, radius=4.0)
    rng = np.random.default_rng(4)
    for i in range(12):
        save_image(tmp_path / f"{i}.png", random_pixels(rng))
    write_json(tmp_path / "transforms.json",
               {"camera_angle_x": 1.0, "frames": [frame(f"{i}", p) for i, p in enumerate(poses)]})
    ds = load_dataset(tmp_path)
    distance = np.median(np.linalg.norm(np.stack(poses)[:, :3, 3] - centre, axis=1))
    np.testing.assert_allclose(ds.aabb, [centre - 0.45 * distance, centre + 0.45 * distance], atol=1e-4)
    assert ds.unbounded  # opaque photos all around: the background beyond the box is contracted


# LLFF


def test_llff_converts_poses_to_opengl_and_scales_focal_to_the_folder(tmp_path):
    poses = llff_scene(tmp_path, 9, "images_2", (12, 8))
    save_image(tmp_path / "images_2" / ".hidden.png", np.zeros((1, 1, 3), np.uint8))  # not one of the set
    ds = load_dataset(tmp_path, downscale=2)

    assert ds.names == [f"images_2/img{i:03d}.png" for i in range(9)]
    np.testing.assert_allclose(ds.c2w, np.stack(poses), atol=1e-6)
    np.testing.assert_allclose(ds.intrinsics, [[10, 10, 6, 4]] * 9)
    np.testing.assert_allclose(ds.near_far, [[2, 8]] * 9)
    assert list(np.flatnonzero(ds.split == "test")) == [0, 8]
    assert not ds.unbounded  # forward-facing
    # The box holds what each camera sees between near and far: points on its axis included.
    on_axes = np.array([p[:3, 3] - depth * p[:3, 2] for p in poses for depth in (2.0, 5.0, 8.0)])
    assert (on_axes >= ds.aabb[0] - 1e-5).all() and (on_axes <= ds.aabb[1] + 1e-5).all()


def test_llff_around_an_object_is_unbounded_with_the_box_on_the_object(tmp_path):
    centre = np.array([0.5, -1.0, 0.2])
    poses = ring_poses(10, centre=centre, radius=4.0)
    np.save(tmp_path / "poses_bounds.npy", np.stack([llff_row(p, (16.0, 24.0, 20.0), 2.0, 30.0) for p in poses]))
    rng = np.random.default_rng(1)
    for i in range(len(poses)):
        save_image(tmp_path / "images" / f"img{i:03d}.png", random_pixels(rng, 16, 24))
    ds = load_dataset(tmp_path)
    assert ds.unbounded
    # The box sits on the object, not around the far bounds of every frustum.
    np.testing.assert_allclose(ds.aabb.mean(0), centre, atol=1e-3)
    assert (ds.aabb[1] - ds.aabb[0]).max() < 4.0


def test_llff_resizes_the_full_size_folder_when_images_k_is_missing(tmp_path):
    llff_scene(tmp_path, 2, "images", (24, 16))
    ds = load_dataset(tmp_path, downscale=4)
    assert (ds.width, ds.height) == (6, 4)
    np.testing.assert_allclose(ds.intrinsics[0], [5, 5, 3, 2])


def test_llff_uses_the_only_downscaled_folder_and_says_so(tmp_path, caplog):
    llff_scene(tmp_path, 2, "images_4", (6, 4))
    with caplog.at_level(logging.WARNING, logger="external_worker.datasets.images"):
        ds = load_dataset(tmp_path)
    assert ds.names[0].startswith("images_4/")
    assert "images_4" in caplog.text
    np.testing.assert_allclose(ds.intrinsics[0], [5, 5, 3, 2])


def test_llff_without_a_matching_folder_lists_what_exists(tmp_path):
    llff_scene(tmp_path, 2, "images_4", (6, 4))
    dataset_error("no images_2/ or images/ folder; found images_4", tmp_path, downscale=2)


# Label maps


def labelled_scene(tmp_path: Path) -> Path:
    transforms_scene(tmp_path, {"train": 2, "test": 1}, np.random.default_rng(5))
    return tmp_path


def test_label_maps_nested_flat_and_missing(tmp_path):
    labelled_scene(tmp_path)
    first = np.array([[0, 1, 1, 2, 2, 0]] * 4, np.uint8)
    third = np.full((4, 6), 2, np.uint16)
    third[0, 0] = 0
    save_image(tmp_path / "labels" / "train" / "r_0.png", first, "L")
    Image.fromarray(third).save(tmp_path / "labels" / "r_0.png")  # flat: only for names not nested
    save_image(tmp_path / "labels" / "r_99.png", first, "L")  # labels no image: ignored
    write_json(tmp_path / "labels.json", {"1": "mug", "2": "cup"})
    ds = load_dataset(tmp_path, require_labels=True)

    assert ds.label_names == {1: "mug", 2: "cup"}
    assert list(ds.has_labels) == [True, False, True]
    assert ds.labels.dtype == np.int32
    np.testing.assert_array_equal(ds.labels[0], first)
    np.testing.assert_array_equal(ds.labels[1], 0)
    np.testing.assert_array_equal(ds.labels[2], third)


def test_label_maps_are_resized_nearest_with_the_images(tmp_path):
    rng = np.random.default_rng(6)
    save_image(tmp_path / "a.png", random_pixels(rng, 4, 4))
    single_transforms(tmp_path, [frame("a", np.eye(4))])
    blocks = np.array([[3, 7], [0, 250]], np.uint8)
    label_map = Image.fromarray(np.repeat(np.repeat(blocks, 2, 0), 2, 1), "P")
    label_map.putpalette(list(range(256)) * 3)  # palette maps give their indices as ids
    (tmp_path / "labels").mkdir()
    label_map.save(tmp_path / "labels" / "a.png")
    ds = load_dataset(tmp_path, downscale=2)
    np.testing.assert_array_equal(ds.labels[0], blocks)


def test_a_flat_label_map_matching_two_images_is_an_error(tmp_path):
    labelled_scene(tmp_path)
    save_image(tmp_path / "labels" / "r_0.png", np.zeros((4, 6), np.uint8), "L")
    error = dataset_error("would label both train/r_0.png and test/r_0.png", tmp_path)
    assert "labels/r_0.png" in error.message


# Errors


def test_missing_folder(tmp_path):
    dataset_error(f"dataset folder {tmp_path / 'nope'} does not exist", tmp_path / "nope")


def test_folder_without_known_files_lists_what_was_looked_for(tmp_path):
    (tmp_path / "photo.jpg").write_bytes(b"")
    error = dataset_error(str(tmp_path), tmp_path)
    for name in ("transforms_train.json", "transforms.json", "poses_bounds.npy"):
        assert name in error.message


def test_malformed_json_gives_line_and_column(tmp_path):
    (tmp_path / "transforms.json").write_text('{\n  "frames": [,]\n}')
    dataset_error(r"transforms.json: not valid JSON: .* at line 2, column 14", tmp_path)


@pytest.mark.parametrize("meta, match", [
    ({"camera_angle_x": 1.0}, "transforms.json: no 'frames' list"),
    ({"camera_angle_x": 1.0, "frames": [{"file_path": "a"}]}, "frame 0 has no 'transform_matrix'"),
    ({"camera_angle_x": 1.0, "frames": [{"file_path": "a", "transform_matrix": np.eye(4)[:3].tolist()}]},
     "frame 0: 'transform_matrix' must be 4x4, got 3x4"),
    ({"camera_angle_x": 1.0, "frames": [{"file_path": "a", "transform_matrix": [[1, 2], [3]]}]},
     "frame 0: 'transform_matrix' must be 4x4, got not a matrix"),
    ({"camera_angle_x": 1.0, "frames": [{"file_path": "a", "transform_matrix": [[float("nan")] * 4] * 4}]},
     "frame 0: 'transform_matrix' contains NaN or infinity"),
    ({"frames": [{"file_path": "a", "transform_matrix": np.eye(4).tolist()}]}, "frame 0: no focal length"),
    ({"camera_angle_x": 1.0, "aabb": [[1, 1, 1], [0, 0, 0]], "frames": []}, "'aabb' must be"),
])
def test_bad_transforms_content(tmp_path, meta, match):
    save_image(tmp_path / "a.png", np.zeros((2, 2, 3), np.uint8))
    (tmp_path / "transforms.json").write_text(json.dumps(meta))
    dataset_error(match, tmp_path)


def test_missing_image_names_the_paths_looked_for(tmp_path):
    single_transforms(tmp_path, [frame("./img/a", np.eye(4))])
    error = dataset_error("frame 0: image not found", tmp_path)
    assert str(tmp_path / "img" / "a") in error.message and str(tmp_path / "img" / "a.jpeg") in error.message


def test_image_size_mismatch_names_the_odd_file_and_both_sizes(tmp_path):
    save_image(tmp_path / "a.png", np.zeros((4, 6, 3), np.uint8))
    save_image(tmp_path / "b.png", np.zeros((4, 6, 3), np.uint8))
    save_image(tmp_path / "c.png", np.zeros((5, 6, 3), np.uint8))
    single_transforms(tmp_path, [frame(n, np.eye(4)) for n in "abc"])
    dataset_error(r"c.png: image is 6x5 but .*a.png is 6x4", tmp_path)


def test_unreadable_image(tmp_path):
    (tmp_path / "a.png").write_bytes(b"not a png")
    single_transforms(tmp_path, [frame("a.png", np.eye(4))])
    dataset_error("a.png: cannot read the image", tmp_path)


def test_poses_bounds_with_wrong_shape(tmp_path):
    llff_scene(tmp_path, 2, "images", (6, 4))
    np.save(tmp_path / "poses_bounds.npy", np.zeros((2, 15)))
    dataset_error(r"poses_bounds.npy: expected an \(N, 17\) array .* got shape \(2, 15\)", tmp_path)


def test_poses_bounds_count_must_match_the_images(tmp_path):
    llff_scene(tmp_path, 3, "images", (6, 4))
    (tmp_path / "images" / "img002.png").unlink()
    dataset_error(r"poses_bounds.npy has 3 poses but .*images has 2 images", tmp_path)


def test_poses_bounds_with_infinity_names_the_row(tmp_path):
    llff_scene(tmp_path, 3, "images", (6, 4))
    table = np.load(tmp_path / "poses_bounds.npy")
    table[1, 3] = np.inf
    np.save(tmp_path / "poses_bounds.npy", table)
    dataset_error("poses_bounds.npy: row 1 has NaN, infinity", tmp_path)


def test_llff_images_of_another_aspect_than_the_poses(tmp_path):
    llff_scene(tmp_path, 2, "images", (4, 6))  # portrait files, landscape hwf
    dataset_error("camera is for 24x16 images but the images are 4x6", tmp_path)


def test_require_labels_without_any_map(tmp_path):
    labelled_scene(tmp_path)
    assert load_dataset(tmp_path).labels is None
    error = dataset_error(f"no label maps found under {tmp_path / 'labels'}", tmp_path, require_labels=True)
    assert "labels.json" in error.hint


def test_label_id_missing_from_labels_json_names_id_and_file(tmp_path):
    labelled_scene(tmp_path)
    save_image(tmp_path / "labels" / "test" / "r_0.png", np.array([[0, 1, 5, 1, 0, 0]] * 4, np.uint8), "L")
    write_json(tmp_path / "labels.json", {"1": "mug"})
    dataset_error(r"test/r_0.png: label id 5 is not named in labels.json", tmp_path)


def test_label_map_of_another_size_than_its_image(tmp_path):
    labelled_scene(tmp_path)
    save_image(tmp_path / "labels" / "train" / "r_1.png", np.zeros((3, 6), np.uint8), "L")
    dataset_error(r"r_1.png: label map is 6x3 but its image .*train/r_1.png is 6x4", tmp_path)


def test_rgb_label_map_is_refused(tmp_path):
    labelled_scene(tmp_path)
    save_image(tmp_path / "labels" / "train" / "r_1.png", np.zeros((4, 6, 3), np.uint8))
    dataset_error("label map has mode RGB", tmp_path)


@pytest.mark.parametrize("downscale", [0, 1.5, "2"])
def test_bad_downscale(tmp_path, downscale):
    dataset_error("downscale must be a whole number", tmp_path, downscale=downscale)



@pytest.mark.parametrize("test_every, held_out", [(0, []), (3, [0, 3, 6]), (8, [0, 8])])
def test_held_out_views_can_be_chosen(tmp_path, test_every, held_out):
    llff_scene(tmp_path, 9, "images", (12, 8))
    ds = load_dataset(tmp_path, test_every=test_every)
    assert list(np.flatnonzero(ds.split == "test")) == held_out


def test_the_layout_decision_can_be_overridden(tmp_path):
    llff_scene(tmp_path, 9, "images", (12, 8))
    assert not load_dataset(tmp_path).unbounded  # forward-facing: everything in the frustum box
    assert load_dataset(tmp_path, bounds="unbounded").unbounded
    assert not load_dataset(tmp_path, bounds="box").unbounded


@pytest.mark.parametrize("options, match", [({"test_every": -1}, "test_every must be a whole number >= 0"),
                                            ({"test_every": 2.5}, "test_every must be"),
                                            ({"bounds": "infinite"}, "bounds must be one of auto, box, unbounded")])
def test_bad_import_options(tmp_path, options, match):
    dataset_error(match, tmp_path, **options)


def test_non_rigid_pose_is_refused(tmp_path):
    save_image(tmp_path / "a.png", random_pixels(np.random.default_rng(0)))
    single_transforms(tmp_path, [frame("a.png", np.diag([2.0, 2.0, 2.0, 1.0]))])
    dataset_error(r"frame 0: 'transform_matrix' is not a rigid camera pose", tmp_path)


def test_non_ascii_folder_and_file_names(tmp_path):
    root = tmp_path / "Café 写真"
    rng = np.random.default_rng(0)
    save_image(root / "Ünïcødé" / "één.png", random_pixels(rng))
    single_transforms(root, [frame("Ünïcødé/één.png", np.eye(4))])
    ds = load_dataset(root)
    assert ds.names == ["Ünïcødé/één.png"] and ds.root == root

# Real captures (skipped where the shared data is absent)


needs_data = pytest.mark.skipif(not DATA.is_dir(), reason=f"no shared data at {DATA}")


@needs_data
def test_lego_splits_alpha_and_focal():
    ds = load_dataset(DATA / "nerf_synthetic_lego")
    angle = json.loads((DATA / "nerf_synthetic_lego" / "transforms_test.json").read_text())["camera_angle_x"]
    assert ((ds.split == "test").sum(), (ds.split == "train").sum()) == (25, 100)
    assert (ds.height, ds.width) == (400, 400)
    assert ds.alphas is not None and 0.05 < ds.alphas.mean() < 0.6  # object mask, transparent background
    np.testing.assert_allclose(ds.intrinsics[:, 0], 0.5 * 400 / math.tan(0.5 * angle), rtol=1e-5)
    # The object (within +-1.5 of the origin) sits inside the estimated box.
    assert (ds.aabb[0] < -1.5).all() and (ds.aabb[1] > 1.5).all() and (ds.aabb[1] < 2.5).all()


@needs_data
def test_fern_images_8_is_forward_facing():
    ds = load_dataset(DATA / "llff_fern", downscale=8)
    assert (len(ds), ds.width, ds.height) == (20, 504, 378)
    views = -ds.c2w[:, :3, 2]
    mean_view = views.mean(0) / np.linalg.norm(views.mean(0))
    assert (views @ mean_view > 0.95).all()
    np.testing.assert_allclose(ds.intrinsics[:, 2:], [[252, 189]] * 20)
    assert ds.near_far.shape == (20, 2)


@needs_data
def test_ethiopian_head_loads_its_only_folder():
    ds = load_dataset(DATA / "ethiopian_head")
    assert len(ds) == 66 and ds.names[0].startswith("images_5/")
    assert (ds.width, ds.height) == (800, 800)
    views = -ds.c2w[:, :3, 2]
    assert (views @ views.mean(0) < 0).any()  # a 360 capture: some cameras face each other
    assert isinstance(ds, Dataset) and "66 views of 800x800" in repr(ds)


# COLMAP


def project(c2w: np.ndarray, intrinsics, points: np.ndarray) -> np.ndarray:
    """Pixel positions (P, 2) of world points in an OpenGL camera with pinhole intrinsics."""
    fx, fy, cx, cy = intrinsics
    local = (points - c2w[:3, 3]) @ c2w[:3, :3]
    return np.stack([fx * local[:, 0] / -local[:, 2] + cx, -fy * local[:, 1] / -local[:, 2] + cy], -1)


def test_colmap_pinhole_model_keeps_every_projection_and_turns_up_to_z(tmp_path):
    from scipy.spatial.transform import Rotation

    tilt = np.eye(4)  # COLMAP's world is arbitrarily oriented: tilt ours before writing it
    tilt[:3, :3] = Rotation.from_euler("xyz", [40, -25, 70], degrees=True).as_matrix()
    poses = [tilt @ pose for pose in ring_poses(10)]
    rng = np.random.default_rng(0)
    points = rng.uniform(-1, 1, (20, 3)) @ tilt[:3, :3].T
    colmap_model(tmp_path, poses, "PINHOLE 24 16 20 22 12.5 8", [random_pixels(rng, 16, 24) for _ in poses], points)
    ds = load_dataset(tmp_path)
    assert len(ds) == 10 and (ds.width, ds.height) == (24, 16) and list(ds.split[:2]) == ["test", "train"]
    np.testing.assert_allclose(ds.intrinsics, [[20, 22, 12.5, 8]] * 10, rtol=1e-5)
    assert ds.points.shape == (20, 3) and (ds.point_colors == [200, 100, 50]).all()
    for loaded, written in zip(ds.c2w, poses):  # every point lands on the same pixel as before
        np.testing.assert_allclose(project(loaded, ds.intrinsics[0], ds.points), project(written, [20, 22, 12.5, 8], points), atol=1e-3)
    up = ds.c2w[:, :3, 1].mean(0)
    np.testing.assert_allclose(up / np.linalg.norm(up), [0, 0, 1], atol=1e-5)
    assert ds.unbounded  # a ring around the object: space beyond the box is contracted


def plane_pattern(points: np.ndarray) -> np.ndarray:
    """A smooth pattern of period 0.5 on the plane z = 0: smooth, so interpolation barely
    changes it while a pixel of misalignment does."""
    return 0.5 + 0.5 * np.sin(2 * np.pi * points[..., 0] / 0.5) * np.sin(2 * np.pi * points[..., 1] / 0.5)


def plane_hits(origins: np.ndarray, dirs: np.ndarray) -> np.ndarray:
    return origins + dirs * (-origins[..., 2:] / dirs[..., 2:])


def distorted_photos(camera, poses: list[np.ndarray]) -> list[np.ndarray]:
    """What cameras with the lens of pycolmap `camera` see of the plane pattern, (H, W) in [0, 1]."""
    u, v = np.meshgrid(np.arange(camera.width) + 0.5, np.arange(camera.height) + 0.5)
    normalised = camera.cam_from_img(np.stack([u.ravel(), v.ravel()], -1))  # (x/z, y/z), OpenCV axes
    photos = []
    for c2w in poses:
        dirs = np.concatenate([normalised, np.ones((len(normalised), 1))], -1) * [1, -1, -1] @ c2w[:3, :3].T
        photos.append(plane_pattern(plane_hits(c2w[:3, 3], dirs)).reshape(camera.height, camera.width))
    return photos


def pinhole_error(image: np.ndarray, c2w: np.ndarray, intrinsics) -> float:
    """Mean difference between an image and the plane pattern a pinhole camera would see."""
    fx, fy, cx, cy = intrinsics
    h, w = image.shape[:2]
    uu, vv = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)
    dirs = np.stack([(uu - cx) / fx, -(vv - cy) / fy, -np.ones_like(uu)], -1) @ c2w[:3, :3].T
    return float(np.abs(image - plane_pattern(plane_hits(c2w[:3, 3], dirs))).mean())


def over_the_plane(count: int = 3) -> list[np.ndarray]:
    return [look_at(np.array([x, 0.1 * x, 1.5]), np.array([x, 0.1 * x, 0.0]), up=(0.0, 1.0, 0.0))
            for x in np.linspace(0, 0.4, count)]


def as_rgb8(photo: np.ndarray) -> np.ndarray:
    return np.repeat((photo[..., None] * 255).round().astype(np.uint8), 3, -1)


def test_colmap_radial_distortion_is_undistorted_to_a_true_pinhole(tmp_path):
    """Photos of a pattern on a plane taken through a lens with strong radial distortion: after
    import, the pinhole camera the loader reports sees the pattern where the photo shows it."""
    import pycolmap

    camera = pycolmap.Camera(model="SIMPLE_RADIAL", width=96, height=64, params=[60, 48, 32, 0.25])
    poses = over_the_plane()
    photos = distorted_photos(camera, poses)
    corners = np.array([[x, y, 0.0] for x in np.linspace(-1, 1, 5) for y in np.linspace(-1, 1, 5)])
    colmap_model(tmp_path, poses, "SIMPLE_RADIAL 96 64 60 48 32 0.25", [as_rgb8(p) for p in photos], corners)
    ds = load_dataset(tmp_path)
    assert ds.width < 96 and ds.height < 64  # cropped to what every photo covers
    # The loader turned the cameras' up (+y here) to +z: undo that to see the plane z = 0 again.
    back = np.linalg.inv(ds.c2w[0] @ np.linalg.inv(poses[0]))
    for image, c2w, intrinsics, photo in zip(ds.images, ds.c2w, ds.intrinsics, photos):
        assert pinhole_error(image[..., 0], back @ c2w, intrinsics) < 0.01
        # The photo as it was, read as a pinhole image, is off: the check can tell.
        assert pinhole_error(photo, back @ c2w, [60, 60, 48, 32]) > 0.05


def test_nerfstudio_opencv_distortion_is_undistorted(tmp_path):
    import pycolmap

    camera = pycolmap.Camera(model="OPENCV", width=96, height=64, params=[60, 62, 47, 33, 0.2, 0.05, 0.01, -0.01])
    poses = over_the_plane()
    photos = distorted_photos(camera, poses)
    for i, photo in enumerate(photos):
        save_image(tmp_path / "images" / f"f{i}.png", as_rgb8(photo))
    write_json(tmp_path / "transforms.json", {
        "camera_model": "OPENCV", "fl_x": 60, "fl_y": 62, "cx": 47, "cy": 33, "w": 96, "h": 64,
        "k1": 0.2, "k2": 0.05, "p1": 0.01, "p2": -0.01, "aabb": [[-1, -1, -1], [1, 1, 1]],
        "frames": [frame(f"images/f{i}.png", pose) for i, pose in enumerate(poses)]})
    ds = load_dataset(tmp_path)
    assert ds.width < 96 and ds.height < 64
    for image, c2w, intrinsics in zip(ds.images, ds.c2w, ds.intrinsics):
        assert pinhole_error(image[..., 0], c2w, intrinsics) < 0.01


def test_distortion_errors(tmp_path):
    save_image(tmp_path / "a.png", random_pixels(np.random.default_rng(0)))
    single_transforms(tmp_path, [frame("a.png", np.eye(4), k1="strong")])
    dataset_error(r"frame 0: 'k1' must be a number", tmp_path)
    single_transforms(tmp_path, [frame("a.png", np.eye(4), k1=0.1)], camera_model="EQUIRECTANGULAR")
    dataset_error(r"camera_model 'EQUIRECTANGULAR' is not supported", tmp_path)
    single_transforms(tmp_path, [frame("a.png", np.eye(4), k1=0.1, k4=0.01)])
    dataset_error(r"k4 = 0.01 is given for an OPENCV camera", tmp_path)


@pytest.mark.parametrize("aabb_scale, unbounded", [(1, False), (4, True)])
def test_instant_ngp_scale_offset_and_aabb_scale_give_the_box(tmp_path, aabb_scale, unbounded):
    rng = np.random.default_rng(0)
    for i in range(3):
        save_image(tmp_path / f"{i}.png", random_pixels(rng))
    write_json(tmp_path / "transforms.json", {
        "camera_angle_x": 1.0, "aabb_scale": aabb_scale, "scale": 0.5, "offset": [0.5, 0.4, 0.5],
        "frames": [frame(f"{i}.png", pose) for i, pose in enumerate(ring_poses(3))]})
    ds = load_dataset(tmp_path)
    np.testing.assert_allclose(ds.aabb, [[-1, -0.8, -1], [1, 1.2, 1]])
    assert ds.unbounded == unbounded


def test_colmap_model_folder_itself_and_images_k_folder(tmp_path):
    rng = np.random.default_rng(1)
    poses = ring_poses(4)
    model = colmap_model(tmp_path, poses, "SIMPLE_PINHOLE 24 16 20 12 8",
                         [random_pixels(rng, 8, 12) for _ in poses], np.zeros((0, 3)), folder="images_2")
    ds = load_dataset(model, downscale=2)  # pointing at sparse/0 finds the project around it
    assert (ds.width, ds.height) == (12, 8) and ds.names[0] == "images_2/view_00.png"
    np.testing.assert_allclose(ds.intrinsics[0], [10, 10, 6, 4], rtol=1e-5)


def test_colmap_errors_name_the_file_and_say_what_to_do(tmp_path):
    rng = np.random.default_rng(2)
    poses = ring_poses(3)
    images = [random_pixels(rng, 16, 24) for _ in poses]
    colmap_model(tmp_path / "fov", poses, "FOV 24 16 20 20 12 8 0.1", images, np.zeros((0, 3)))
    dataset_error(r"camera model FOV, which is not supported", tmp_path / "fov")

    colmap_model(tmp_path / "missing", poses, "PINHOLE 24 16 20 20 12 8", images, np.zeros((0, 3)))
    (tmp_path / "missing" / "images" / "view_01.png").unlink()
    dataset_error(r"names 1 images missing from .*images, e.g. .*view_01.png", tmp_path / "missing")

    model = colmap_model(tmp_path / "empty", poses, "PINHOLE 24 16 20 20 12 8", images, np.zeros((0, 3)))
    (model / "images.txt").write_text("# no images\n")
    dataset_error(r"no registered images", tmp_path / "empty")

    model = colmap_model(tmp_path / "broken", poses, "PINHOLE 24 16 20 20 12 8", images, np.zeros((0, 3)))
    (model / "cameras.txt").write_text("1 PINHOLE 24 sixteen\n")
    dataset_error(r"cannot read the COLMAP model", tmp_path / "broken")

    colmap_model(tmp_path / "aspect", poses, "PINHOLE 16 16 20 20 8 8", images, np.zeros((0, 3)))
    dataset_error(r"camera is for 16x16 images but the images are 24x16", tmp_path / "aspect")


@needs_data
def test_beer_colmap_capture_is_undistorted_upright_and_unbounded():
    ds = load_dataset(DATA / "colmap_beer", downscale=2)
    assert len(ds) == 71 and ds.names[0].startswith("images/")
    assert ds.width < 360 and ds.height < 640 and ds.width / ds.height == pytest.approx(720 / 1280, rel=0.01)
    assert ds.unbounded and ds.points.shape == (4414, 3)
    up = ds.c2w[:, :3, 1].mean(0)
    assert up[2] / np.linalg.norm(up) > 0.999


@pytest.mark.parametrize("opaque, unbounded", [("centre", False), ("everywhere", True)])
def test_masks_that_show_content_beyond_the_box_make_it_unbounded(tmp_path, opaque, unbounded):
    """A floor reaching past the given box (opaque pixels whose rays miss it) needs the space
    beyond contracted; masks of an object inside the box keep it bounded."""
    size = 32
    alpha = np.zeros((size, size), np.uint8)
    if opaque == "centre":  # the box spans about half the image around its centre at distance 4
        alpha[12:20, 12:20] = 255
    else:
        alpha[:] = 255
    frames = []
    for i, pose in enumerate(ring_poses(6)):
        rgba = np.dstack([random_pixels(np.random.default_rng(i), size, size), alpha])
        save_image(tmp_path / f"{i}.png", rgba)
        frames.append(frame(f"{i}", pose))
    write_json(tmp_path / "transforms.json", {"camera_angle_x": 0.8, "aabb": [[-1, -1, -1], [1, 1, 1]],
                                              "frames": frames})
    ds = load_dataset(tmp_path)
    assert ds.alphas is not None and ds.unbounded == unbounded
    assert not load_dataset(tmp_path, bounds="box").unbounded
