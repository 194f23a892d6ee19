"""Posed photo sets -> one in-memory `Dataset`: float images, OpenGL cameras, optional label maps.

Formats, recognised by what the folder holds:

- NeRF-synthetic / instant-ngp / nerfstudio: `transforms_train.json` (with optional
  `transforms_val.json`, `transforms_test.json`) or a single `transforms.json`.
- COLMAP: a sparse model (`sparse/0/`, `sparse/` or the folder itself holding `cameras.bin` or
  `cameras.txt`, `images.*`, `points3D.*`), read with pycolmap, beside `images/` or `images_<k>/`.
  Distorting camera models are undistorted with COLMAP's own undistorter.
- LLFF: `poses_bounds.npy` beside `images/` or `images_<k>/` (forward-facing or 360 captures).

Label maps for the `labels` teacher live under `<root>/labels/` (see `load_dataset`).
Every problem with the input raises `DatasetError` naming the file and saying what to do.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from ..errors import DatasetError

_log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
TEST_EVERY = 8  # every 8th view is held out for testing, as in LLFF and NeRF practice
MIN_VIEWS_FOR_TEST_SPLIT = 16  # a single transforms.json with fewer views keeps them all for training
AABB_HALF_SIZE_FACTOR = 0.45  # estimated scene box half-size, as a fraction of the camera distance
LLFF_FAR_PERCENTILE = 90.0  # a few far bounds of distant background would inflate the box
BOUNDS = ("auto", "box", "unbounded")
FORWARD_FACING_COS = math.cos(math.radians(45))  # every camera within 45 degrees of the mean view direction

_SPLIT_FILES = (("transforms_train.json", "train"), ("transforms_val.json", "train"),
                ("transforms_test.json", "test"))
_CAMERA_KEYS = ("camera_angle_x", "camera_angle_y", "fl_x", "fl_y", "cx", "cy", "w", "h")
_DISTORTION_KEYS = ("k1", "k2", "k3", "k4", "p1", "p2")  # nerfstudio / instant-ngp OpenCV models
_GREY_16_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")
_LABEL_MODES = ("L", "P") + _GREY_16_BIT_MODES
_LABEL_HINT = ("Put one single-channel PNG of integer label ids per image (0 = unlabelled, 8- or "
               "16-bit, same pixel size as the image) at labels/<image folder>/<image stem>.png or "
               "labels/<image stem>.png under the dataset folder, and name the ids in labels.json "
               "at the dataset folder, e.g. {\"1\": \"mug\"}.")
_WORKERS = min(8, os.cpu_count() or 1)


@dataclass(repr=False)
class Dataset:
    """Posed views of one scene, all of the same size.

    Cameras use the OpenGL/Blender convention (x right, y up, looking along -z) in the dataset's
    own world frame. Intrinsics are in pixels of the loaded images, with the image spanning
    [0, width] x [0, height], so the centre of pixel (row r, column c) is at (c + 0.5, r + 0.5).
    """

    root: Path
    names: list[str]  # image path relative to root, e.g. "train/r_0.png"
    images: np.ndarray  # (N, H, W, 3) float32 in [0, 1], sRGB as stored (not composited on a background)
    alphas: np.ndarray | None  # (N, H, W) float32 in [0, 1] when any image has an alpha channel
    c2w: np.ndarray  # (N, 4, 4) float32 camera-to-world
    intrinsics: np.ndarray  # (N, 4) float32: fx, fy, cx, cy
    split: np.ndarray  # (N,) str: "train" or "test"
    aabb: np.ndarray  # (2, 3) float32 world-space box containing the scene content
    labels: np.ndarray | None  # (N, H, W) int32 label ids, 0 = unlabelled; None without any label map
    has_labels: np.ndarray  # (N,) bool: which views had a label map
    label_names: dict[int, str]  # label id -> name, from labels.json
    near_far: np.ndarray | None  # (N, 2) float32 depth bounds when the format gives them (LLFF)
    unbounded: bool = False  # content beyond `aabb` (a room, the outdoors): the fields contract space
    points: np.ndarray | None = None  # (P, 3) float32 sparse point cloud when the format has one (COLMAP)
    point_colors: np.ndarray | None = None  # (P, 3) uint8 colours of `points`

    @property
    def height(self) -> int:
        return int(self.images.shape[1])

    @property
    def width(self) -> int:
        return int(self.images.shape[2])

    def __len__(self) -> int:
        return len(self.names)

    def __repr__(self) -> str:
        n_test = int((self.split == "test").sum())
        labelled = int(self.has_labels.sum())
        return (f"Dataset({str(self.root)!r}, {len(self)} views of {self.width}x{self.height}, "
                f"{len(self) - n_test} train / {n_test} test, {labelled} labelled)")


def load_dataset(path: str | Path, *, downscale: int = 1, test_every: int = TEST_EVERY, bounds: str = "auto",
                 require_labels: bool = False) -> Dataset:
    """Load the dataset in folder `path` (or the folder of a transforms JSON given as `path`).

    `downscale` k loads images at 1/k of their stored size: LLFF uses `images_<k>/` when present,
    otherwise images are resized here (box filter) and the intrinsics scaled to match.

    `test_every` n holds out views 0, n, 2n, ... for evaluation (0: none) where the format gives
    no split (NeRF-synthetic's transforms_test.json does). `bounds` overrides the layout decision:
    "box" keeps everything inside the box, "unbounded" contracts the space beyond it, "auto"
    decides from the cameras (360-degree captures without masks or box are unbounded).

    Label maps: for image `<dir>/<stem>.<ext>` the map is `labels/<dir>/<stem>.png`, else
    `labels/<stem>.png`; ids are named by `labels.json` ({"1": "mug"}). Views without a map get
    `has_labels` False and label 0. `require_labels` makes the absence of any map an error.
    """
    if isinstance(downscale, bool) or not isinstance(downscale, int) or downscale < 1:
        raise DatasetError(f"downscale must be a whole number >= 1, got {downscale!r}",
                           "Pass 1 for full-size images, 2 for half size, and so on.")
    if isinstance(test_every, bool) or not isinstance(test_every, int) or test_every < 0:
        raise DatasetError(f"test_every must be a whole number >= 0, got {test_every!r}",
                           "Pass 8 to hold out every 8th view (LLFF practice), 0 to train on all views.")
    if bounds not in BOUNDS:
        raise DatasetError(f"bounds must be one of {', '.join(BOUNDS)}, got {bounds!r}",
                           "Use 'auto' unless the layout decision is wrong for this capture.")
    root = _dataset_folder(Path(path).expanduser())
    model = _colmap_model(root)
    if (root / "transforms_train.json").is_file() or (root / "transforms.json").is_file():
        dataset, stored_size = _load_transforms(root, downscale, test_every)
    elif model is not None:  # before LLFF: COLMAP captures often carry poses_bounds.npy as well
        dataset, stored_size = _load_colmap(_colmap_root(model), model, downscale, test_every)
    elif (root / "poses_bounds.npy").is_file():
        dataset, stored_size = _load_llff(root, downscale, test_every)
    else:
        raise DatasetError(
            f"{root} holds no known dataset: looked for transforms_train.json, transforms.json, "
            "a COLMAP model (sparse/0/cameras.bin or .txt) and poses_bounds.npy",
            "Point at a NeRF-synthetic / instant-ngp / nerfstudio folder (transforms*.json beside "
            "the images), a COLMAP project (sparse/0/ beside images/) or an LLFF folder "
            "(poses_bounds.npy beside images/ or images_<k>/).")
    if bounds != "auto":
        dataset = replace(dataset, unbounded=bounds == "unbounded")
    return _attach_labels(dataset, stored_size, require_labels)


def check_trainable(dataset: Dataset) -> None:
    """A radiance field needs several training views seen from different places (parallax)."""
    train = dataset.split == "train"
    if train.sum() < 2:
        raise DatasetError(f"{dataset.root}: only {int(train.sum())} training view(s) "
                           f"({len(dataset)} in all, {len(dataset) - int(train.sum())} held out)",
                           "Add photos from more viewpoints (20 or more around the subject), or hold "
                           "out fewer views.")
    positions = dataset.c2w[train, :3, 3]
    if np.ptp(positions, axis=0).max() <= 1e-6 * max(1.0, float(np.abs(positions).max())):
        raise DatasetError(f"{dataset.root}: all cameras sit at one point, so nothing gives depth",
                           "Move the camera between photos (a panorama taken from one spot cannot "
                           "be reconstructed in 3D).")

def _dataset_folder(path: Path) -> Path:
    if path.is_file():
        if path.suffix.lower() == ".json" or path.name == "poses_bounds.npy":
            return path.parent
        raise DatasetError(f"{path} is a file, not a dataset folder",
                           "Point at the folder holding transforms*.json or poses_bounds.npy.")
    if not path.is_dir():
        raise DatasetError(f"dataset folder {path} does not exist",
                           "Check the path; it must be the folder holding the images and poses.")
    return path


# NeRF-synthetic / instant-ngp / nerfstudio


def _load_transforms(root: Path, downscale: int, test_every: int) -> tuple[Dataset, tuple[int, int]]:
    """Frames of transforms_{train,val,test}.json (val counts as train) or of transforms.json.

    A single transforms.json has no split: with at least 16 frames every `test_every`-th one
    (0, 8, 16, ... by default) in file order is held out for testing, otherwise all are for training.
    """
    if (root / "transforms_train.json").is_file():
        sources = [(root / name, split) for name, split in _SPLIT_FILES if (root / name).is_file()]
    else:
        sources = [(root / "transforms.json", "train")]
    paths: list[Path] = []
    poses: list[np.ndarray] = []
    splits: list[str] = []
    cameras: list[tuple[dict[str, float], dict[str, Any], str]] = []
    aabb: np.ndarray | None = None
    ngp_unbounded: bool | None = None
    for json_path, split in sources:
        meta = _read_json(json_path)
        frames = meta.get("frames") if isinstance(meta, dict) else None
        if not isinstance(frames, list):
            raise DatasetError(f"{json_path}: no 'frames' list",
                               "A transforms JSON is an object with a 'frames' list, each frame "
                               "with 'file_path' and a 4x4 'transform_matrix'.")
        if aabb is None and "aabb" in meta:
            aabb = _parse_aabb(meta["aabb"], json_path)
        elif aabb is None and "aabb_scale" in meta:
            aabb, ngp_unbounded = _instant_ngp_box(meta, json_path)
        for i, frame in enumerate(frames):
            where = f"{json_path}: frame {i}"
            if not isinstance(frame, dict) or not isinstance(frame.get("file_path"), str):
                raise DatasetError(f"{where} has no 'file_path'",
                                   "Give each frame the image path relative to the JSON's folder.")
            paths.append(_find_image(root, frame["file_path"], where))
            poses.append(_parse_pose(frame.get("transform_matrix"), where))
            cameras.append((_camera_spec(meta, frame, where), _distortion(meta, frame, where), where))
            splits.append(split)
    if not paths:
        raise DatasetError(f"{root}: the transforms JSON files list no frames",
                           "Add frames (file_path + transform_matrix) to the JSON.")
    if len(sources) == 1 and len(paths) >= MIN_VIEWS_FOR_TEST_SPLIT:
        splits = list(_held_out_split(len(paths), test_every))
    c2w = np.stack(poses)
    stored_size = _open_image(paths[0]).size
    loaded_size = _downscaled_size(stored_size, downscale)
    intrinsics = np.array([_intrinsics(spec, stored_size, loaded_size, where) for spec, _, where in cameras])
    undistorter = None
    if any(distortion["params"] for _, distortion, _ in cameras):
        undistorter = _Undistorter([_opencv_camera(k, distortion, loaded_size)
                                    for k, (_, distortion, _) in zip(intrinsics, cameras)])
    images, alphas, stored_size = _load_images(paths, downscale, undistorter)
    if undistorter is not None:
        intrinsics = undistorter.intrinsics(images.shape[2], images.shape[1])
    # Photos without masks and without a given box, taken around the subject: the object's box is
    # estimated from the cameras and everything beyond it is background to contract.
    unbounded = aabb is None and alphas is None and not _forward_facing(c2w)
    if ngp_unbounded is not None:
        unbounded = ngp_unbounded
    if aabb is None:
        aabb = _aabb_from_camera_axes(c2w, root)
    dataset = Dataset(root=root, names=_names(root, paths), images=images, alphas=alphas,
                      c2w=c2w.astype(np.float32), intrinsics=intrinsics.astype(np.float32),
                      split=np.array(splits), aabb=aabb.astype(np.float32), labels=None,
                      has_labels=np.zeros(len(paths), bool), label_names={}, near_far=None,
                      unbounded=unbounded)
    return dataset, stored_size


def _find_image(root: Path, file_path: str, where: str) -> Path:
    """The image a frame names, as given or with a usual extension added (NeRF-synthetic omits it)."""
    given = root / file_path
    candidates = [given] + [given.with_name(given.name + suffix) for suffix in IMAGE_SUFFIXES]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise DatasetError(f"{where}: image not found; looked for " + ", ".join(map(str, candidates)),
                       "Fix the frame's 'file_path' (relative to the JSON's folder) or put the "
                       "image there.")


def _parse_pose(value: Any, where: str) -> np.ndarray:
    if value is None:
        raise DatasetError(f"{where} has no 'transform_matrix'",
                           "Give each frame its 4x4 camera-to-world matrix (OpenGL convention).")
    matrix = _as_float_array(value)
    if matrix is None or matrix.shape != (4, 4):
        shape = "not a matrix" if matrix is None else "x".join(map(str, matrix.shape))
        raise DatasetError(f"{where}: 'transform_matrix' must be 4x4, got {shape}",
                           "Write the camera-to-world matrix as 4 rows of 4 numbers.")
    if not np.isfinite(matrix).all():
        raise DatasetError(f"{where}: 'transform_matrix' contains NaN or infinity",
                           "Re-export the camera poses; this camera was not solved.")
    rotation = matrix[:3, :3]
    rigid = np.allclose(rotation.T @ rotation, np.eye(3), atol=1e-3) and np.linalg.det(rotation) > 0
    if not rigid or not np.allclose(matrix[3], [0, 0, 0, 1], atol=1e-6):
        raise DatasetError(f"{where}: 'transform_matrix' is not a rigid camera pose (its 3x3 part must "
                           "be a rotation and its last row 0 0 0 1)",
                           "Export the poses without scale or shear in the camera matrices; scale the "
                           "positions instead.")
    return matrix


def _camera_spec(meta: dict, frame: dict, where: str) -> dict[str, float]:
    """Camera keys of the file, overridden by those of the frame (instant-ngp allows both)."""
    spec = {key: meta[key] for key in _CAMERA_KEYS if key in meta}
    spec.update({key: frame[key] for key in _CAMERA_KEYS if key in frame})
    for key, value in spec.items():
        number = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        if not number or (value <= 0 and key not in ("cx", "cy")):
            raise DatasetError(f"{where}: '{key}' must be a positive number, got {value!r}",
                               "Fix the camera intrinsics in the JSON.")
    if "fl_x" not in spec and "camera_angle_x" not in spec:
        raise DatasetError(f"{where}: no focal length ('camera_angle_x' or 'fl_x')",
                           "Add 'camera_angle_x' (horizontal field of view in radians) or 'fl_x' "
                           "(pixels) at the top of the JSON or to the frame.")
    return spec


def _distortion(meta: dict, frame: dict, where: str) -> dict[str, Any]:
    """nerfstudio / instant-ngp lens distortion of a frame (file keys overridden by frame keys):
    {"model": camera_model, "params": {k1, k2, k3, k4, p1, p2} that are not zero}."""
    values = {key: frame.get(key, meta.get(key, 0.0)) for key in _DISTORTION_KEYS}
    for key, value in values.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise DatasetError(f"{where}: '{key}' must be a number, got {value!r}",
                               "Fix the lens distortion coefficients in the JSON.")
    model = frame.get("camera_model", meta.get("camera_model", "OPENCV"))
    if model not in ("OPENCV", "OPENCV_FISHEYE"):
        raise DatasetError(f"{where}: camera_model {model!r} is not supported (OPENCV and "
                           "OPENCV_FISHEYE are)", "Undistort the images and give a pinhole camera.")
    return {"model": model, "params": {key: float(v) for key, v in values.items() if v}}


def _opencv_camera(intrinsics: np.ndarray, distortion: dict[str, Any], size: tuple[int, int]):
    """The pycolmap camera of nerfstudio intrinsics (loaded pixels) and distortion: OPENCV
    (k1, k2, p1, p2, and k3 as FULL_OPENCV's) or OPENCV_FISHEYE (k1..k4)."""
    import pycolmap

    k = {key: distortion["params"].get(key, 0.0) for key in _DISTORTION_KEYS}
    if distortion["model"] == "OPENCV_FISHEYE":
        model, extra = "OPENCV_FISHEYE", [k["k1"], k["k2"], k["k3"], k["k4"]]
    elif k["k4"]:
        raise DatasetError(f"k4 = {k['k4']} is given for an OPENCV camera, which has no k4",
                           "Set camera_model to OPENCV_FISHEYE if this is a fisheye lens, or drop k4.")
    elif k["k3"]:
        model, extra = "FULL_OPENCV", [k["k1"], k["k2"], k["p1"], k["p2"], k["k3"], 0.0, 0.0, 0.0]
    else:
        model, extra = "OPENCV", [k["k1"], k["k2"], k["p1"], k["p2"]]
    return pycolmap.Camera(model=model, width=size[0], height=size[1], params=[*intrinsics, *extra])


def _instant_ngp_box(meta: dict, json_path: Path) -> tuple[np.ndarray, bool]:
    """instant-ngp's scene box in the JSON's world frame: it maps positions p to p * scale + offset
    (defaults 0.33 and 0.5) and models the unit cube there, and with aabb_scale > 1 a cube that
    many times larger around it: the unit cube is our box, and beyond it the scene is unbounded."""
    scale, offset, aabb_scale = meta.get("scale", 0.33), _as_float_array(meta.get("offset", [0.5] * 3)), meta["aabb_scale"]
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in (scale, aabb_scale))
    if not numbers or offset is None or offset.shape != (3,):
        raise DatasetError(f"{json_path}: instant-ngp 'scale' and 'aabb_scale' must be positive numbers "
                           f"and 'offset' 3 numbers, got {scale!r}, {aabb_scale!r}, {meta.get('offset')!r}",
                           "Fix them, or remove them to have the box estimated from the cameras.")
    return np.stack([-offset / scale, (1 - offset) / scale]), aabb_scale > 1


def _intrinsics(spec: dict[str, float], stored_size: tuple[int, int], loaded_size: tuple[int, int],
                where: str) -> list[float]:
    """fx, fy, cx, cy in loaded pixels. JSON values are in pixels of `w` x `h` when given,
    else of the image file, and default to a centred principal point and square pixels."""
    width = spec.get("w", stored_size[0])
    height = spec.get("h", stored_size[1])
    _check_aspect((width, height), stored_size, where)
    fx = spec["fl_x"] if "fl_x" in spec else 0.5 * width / math.tan(0.5 * spec["camera_angle_x"])
    if "fl_y" in spec:
        fy = spec["fl_y"]
    elif "camera_angle_y" in spec:
        fy = 0.5 * height / math.tan(0.5 * spec["camera_angle_y"])
    else:
        fy = fx
    sx, sy = loaded_size[0] / width, loaded_size[1] / height
    return [fx * sx, fy * sy, spec.get("cx", width / 2) * sx, spec.get("cy", height / 2) * sy]


def _parse_aabb(value: Any, json_path: Path) -> np.ndarray:
    box = _as_float_array(value)
    if box is None or box.shape != (2, 3) or not np.isfinite(box).all() or (box[0] >= box[1]).any():
        raise DatasetError(f"{json_path}: 'aabb' must be [[xmin, ymin, zmin], [xmax, ymax, zmax]] "
                           f"with min < max, got {value!r}",
                           "Fix or remove 'aabb'; without it the box is estimated from the cameras.")
    return box


def _forward_facing(c2w: np.ndarray) -> bool:
    """Whether all cameras look roughly the same way (LLFF's forward-facing captures)."""
    axes = -c2w[:, :3, 2] / np.linalg.norm(c2w[:, :3, 2], axis=1, keepdims=True)
    mean = axes.mean(0)
    norm = np.linalg.norm(mean)
    return bool(norm > 0 and (axes @ (mean / norm)).min() > FORWARD_FACING_COS)


def _aabb_from_camera_axes(c2w: np.ndarray, root: Path) -> np.ndarray:
    """Box for captures whose cameras look at the object (360 degree rigs, turntables).

    The centre is the point nearest (least squares) to all optical axes; the half-size is 0.45
    of the median camera distance to it, which holds NeRF-synthetic objects (cameras ~4 away,
    content within +-1.5). Forward-facing captures should give 'aabb' in the JSON instead.
    """
    origins = c2w[:, :3, 3]
    axes = -c2w[:, :3, 2] / np.linalg.norm(c2w[:, :3, 2], axis=1, keepdims=True)
    across = np.eye(3) - axes[:, :, None] * axes[:, None, :]  # projects out each axis direction
    # A tiny pull towards the cameras' centroid keeps the solve well-posed when all axes are parallel.
    pull = 1e-6 * len(c2w)
    centre = np.linalg.solve(across.sum(0) + pull * np.eye(3),
                             np.einsum("nij,nj->i", across, origins) + pull * origins.mean(0))
    half = AABB_HALF_SIZE_FACTOR * float(np.median(np.linalg.norm(origins - centre, axis=1)))
    if not half > 0:
        raise DatasetError(f"{root}: cannot estimate the scene box, all cameras sit at one point",
                           "Add \"aabb\": [[xmin, ymin, zmin], [xmax, ymax, zmax]] to the "
                           "transforms JSON.")
    return np.stack([centre - half, centre + half])


# COLMAP

COLMAP_MODELS = ("SIMPLE_PINHOLE", "PINHOLE", "SIMPLE_RADIAL", "RADIAL", "OPENCV", "FULL_OPENCV")
POINT_BOX_PERCENTILES = (1.0, 99.0)  # a few stray triangulated points would inflate the box


def _colmap_model(root: Path) -> Path | None:
    """The COLMAP sparse model folder of a project folder (or the model folder itself)."""
    for candidate in (root / "sparse" / "0", root / "sparse", root):
        if any((candidate / f"cameras{ext}").is_file() for ext in (".bin", ".txt")):
            return candidate
    return None


def _colmap_root(model: Path) -> Path:
    """The project folder (the one holding images/) of a model folder: itself or up to 2 levels up."""
    for folder in (model, model.parent, model.parent.parent):
        if any(folder.glob("images*/")):
            return folder
    raise DatasetError(f"{model}: no images/ folder beside the COLMAP model (looked in {model}, "
                       f"{model.parent} and {model.parent.parent})",
                       "Put the photos in images/ next to sparse/, as COLMAP's projects have them.")


def _load_colmap(root: Path, model: Path, downscale: int, test_every: int) -> tuple[Dataset, tuple[int, int]]:
    """Registered images of a COLMAP model, sorted by name, every `test_every`-th held out for testing.

    COLMAP's world has no up: it is rotated so that the cameras' mean up vector is +z (Blender's
    up). Distorted images (SIMPLE_RADIAL, RADIAL, OPENCV, FULL_OPENCV) go through COLMAP's
    undistorter, all at the one scale that leaves no blank pixel in any of them, so every view
    keeps the same pinhole size."""
    import pycolmap  # only COLMAP imports need it

    try:
        reconstruction = pycolmap.Reconstruction(str(model))
    except Exception as exc:  # noqa: BLE001 - pycolmap raises plain RuntimeError/ValueError
        raise DatasetError(f"{model}: cannot read the COLMAP model ({exc})",
                           "Check that cameras, images and points3D files are complete, or "
                           "export the model again (colmap model_converter).") from exc
    registered = sorted((image for image in reconstruction.images.values() if image.has_pose),
                        key=lambda image: image.name)
    if not registered:
        raise DatasetError(f"{model}: the model has no registered images",
                           "Run COLMAP's mapper until it registers the photos.")
    for image in registered:
        camera = reconstruction.cameras[image.camera_id]
        if camera.model.name not in COLMAP_MODELS:
            raise DatasetError(f"{model}: image {image.name} uses camera model {camera.model.name}, "
                               f"which is not supported ({', '.join(COLMAP_MODELS)} are)",
                               "Undistort the images first (colmap image_undistorter) and import "
                               "the undistorted project.")
    folder, resize = _llff_image_folder(root, downscale)
    paths = [folder / image.name for image in registered]
    missing = [path for path in paths if not path.is_file()]
    if missing:
        raise DatasetError(f"{model} names {len(missing)} images missing from {folder}, e.g. {missing[0]}",
                           "Put the photos the model was made from into that folder, with the "
                           "same file names.")

    stored = _open_image(paths[0]).size
    cameras = []
    for image, path in zip(registered, paths):
        camera = pycolmap.Camera(reconstruction.cameras[image.camera_id].todict())
        _check_aspect((camera.width, camera.height), stored, f"{model} (camera of {path.name})")
        camera.rescale(*_downscaled_size(stored, resize))
        cameras.append(camera)
    undistorter = _Undistorter(cameras)
    images, alphas, stored_size = _load_images(paths, resize, undistorter)
    intrinsics = undistorter.intrinsics(images.shape[2], images.shape[1])

    # World-to-camera (OpenCV: y down, looking along +z) -> camera-to-world (OpenGL).
    c2w = np.tile(np.eye(4), (len(registered), 1, 1))
    for pose, image in zip(c2w, registered):
        pose[:3] = image.cam_from_world().inverse().matrix()
    c2w[:, :3, 1:3] *= -1
    up = _rotation_to_z(c2w[:, :3, 1].mean(0))
    c2w = np.einsum("ij,njk->nik", up, c2w)
    points3d = [point for _, point in sorted(reconstruction.points3D.items())]
    points = np.array([point.xyz for point in points3d], np.float64).reshape(-1, 3) @ up[:3, :3].T
    colors = np.array([point.color for point in points3d], np.uint8).reshape(-1, 3)

    unbounded = not _forward_facing(c2w)
    if unbounded or len(points) < 8:
        aabb = _aabb_from_camera_axes(c2w, root)
    else:  # forward-facing: what the cameras triangulated is what there is to see
        low, high = np.percentile(points, POINT_BOX_PERCENTILES, axis=0)
        aabb = np.stack([low - 0.1 * (high - low), high + 0.1 * (high - low)])
    dataset = Dataset(root=root, names=_names(root, paths), images=images, alphas=alphas,
                      c2w=c2w.astype(np.float32), intrinsics=intrinsics.astype(np.float32),
                      split=_held_out_split(len(paths), test_every), aabb=aabb.astype(np.float32), labels=None,
                      has_labels=np.zeros(len(paths), bool), label_names={}, near_far=None,
                      unbounded=unbounded, points=points.astype(np.float32), point_colors=colors)
    return dataset, stored_size


class _Undistorter:
    """COLMAP's undistorter for the cameras of the images (pycolmap.Camera at the loaded size),
    all at the one scale that leaves no blank pixel in any image, so every view keeps the same
    pinhole size. Called on decoded pixels (index, (H, W, 3 or 4)), as `_load_images` does."""

    def __init__(self, cameras: list) -> None:
        import pycolmap

        self._pycolmap = pycolmap
        self.cameras = cameras
        self.options = pycolmap.UndistortCameraOptions()
        distorting = [camera for camera in cameras if not camera.is_undistorted()]
        if distorting:
            scale = min(pycolmap.undistort_camera(self.options, camera).width / camera.width
                        for camera in distorting)
            self.options.min_scale = self.options.max_scale = scale

    def __call__(self, index: int, pixels: np.ndarray) -> np.ndarray:
        camera = self.cameras[index]
        if camera.is_undistorted():
            return pixels
        channels = [pixels[..., :3]] + ([pixels[..., 3]] if pixels.shape[-1] == 4 else [])
        out = []
        for channel in channels:  # colour, then alpha as a grey image
            bitmap = self._pycolmap.Bitmap.from_array(np.round(channel * 255).astype(np.uint8))
            warped = self._pycolmap.undistort_image(self.options, bitmap, camera)[0].to_array()
            out.append(warped.reshape(*warped.shape[:2], -1).astype(np.float32) / 255.0)
        return np.concatenate(out, -1)

    def intrinsics(self, width: int, height: int) -> np.ndarray:
        """(N, 4) fx, fy, cx, cy of the undistorted images, which are `width` x `height`."""
        rows = []
        for camera in self.cameras:
            pinhole = camera if camera.is_undistorted() else self._pycolmap.undistort_camera(self.options, camera)
            sx, sy = width / pinhole.width, height / pinhole.height
            rows.append([pinhole.focal_length_x * sx, pinhole.focal_length_y * sy,
                         pinhole.principal_point_x * sx, pinhole.principal_point_y * sy])
        return np.array(rows)


def _rotation_to_z(up: np.ndarray) -> np.ndarray:
    """4x4 rotation taking the direction `up` to +z by the shortest arc (identity if already)."""
    up = up / max(np.linalg.norm(up), 1e-12)
    axis = np.cross(up, [0.0, 0.0, 1.0])
    sin, cos = np.linalg.norm(axis), up[2]
    rotation = np.eye(4)
    if sin < 1e-9:
        rotation[:3, :3] = np.diag([1.0, -1.0, -1.0]) if cos < 0 else np.eye(3)
        return rotation
    k = axis / sin
    cross = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    rotation[:3, :3] = np.eye(3) + sin * cross + (1 - cos) * cross @ cross
    return rotation


# LLFF


def _load_llff(root: Path, downscale: int, test_every: int) -> tuple[Dataset, tuple[int, int]]:
    """poses_bounds.npy: per image (rows follow sorted file names) a 3x5 matrix [R | t | hwf]
    with hwf = height, width, focal of the full-size images, then near and far depth.
    Every `test_every`-th image (0, 8, 16, ... by default) is held out for testing."""
    poses_path = root / "poses_bounds.npy"
    try:
        table = np.load(poses_path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DatasetError(f"{poses_path}: cannot read ({exc})",
                           "Regenerate it with LLFF's imgs2poses.py.") from exc
    if table.ndim != 2 or table.shape[1] != 17:
        raise DatasetError(f"{poses_path}: expected an (N, 17) array (3x5 pose, near, far per "
                           f"image), got shape {table.shape}",
                           "Regenerate it with LLFF's imgs2poses.py.")
    # Columns 4, 9, 14 are height, width, focal; 15, 16 are near, far: all must be positive.
    positive = table[:, [4, 9, 14, 15, 16]] > 0
    bad_rows = np.flatnonzero(~np.isfinite(table).all(axis=1) | ~positive.all(axis=1))
    if len(bad_rows):
        raise DatasetError(f"{poses_path}: row {bad_rows[0]} has NaN, infinity or a non-positive "
                           "height, width, focal, near or far",
                           "Regenerate it, or remove that image and its row.")
    folder, resize = _llff_image_folder(root, downscale)
    paths = sorted((p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES
                    and not p.name.startswith(".") and p.is_file()), key=lambda p: p.name)
    if len(paths) != len(table):
        raise DatasetError(f"{poses_path} has {len(table)} poses but {folder} has {len(paths)} images",
                           "Rows follow the sorted image names: remove the extra images or "
                           "regenerate poses_bounds.npy for these images.")
    poses = table[:, :15].reshape(-1, 3, 5)
    c2w = np.tile(np.eye(4), (len(table), 1, 1))
    # LLFF rotation columns are [down, right, back]; OpenGL wants [right, up, back].
    c2w[:, :3, :3] = np.stack([poses[:, :, 1], -poses[:, :, 0], poses[:, :, 2]], -1)
    c2w[:, :3, 3] = poses[:, :, 3]
    images, alphas, stored_size = _load_images(paths, resize)
    height, width = images.shape[1:3]
    for hwf, path in zip(poses[:, :, 4], paths):
        _check_aspect((hwf[1], hwf[0]), stored_size, f"{poses_path} (row of {path.name})")
    sx, sy = width / poses[:, 1, 4], height / poses[:, 0, 4]
    intrinsics = np.stack([poses[:, 2, 4] * sx, poses[:, 2, 4] * sy,
                           np.full(len(table), width / 2), np.full(len(table), height / 2)], -1)
    near_far = table[:, 15:17]
    # Forward-facing (fern): a box around every view frustum holds all there is to see. Around an
    # object (360 degrees): the box holds the object and the space beyond it is contracted.
    unbounded = not _forward_facing(c2w)
    if unbounded:
        aabb = _aabb_from_camera_axes(c2w, root)
    else:
        aabb = _aabb_from_frustums(c2w, intrinsics, width, height, near_far)
    dataset = Dataset(root=root, names=_names(root, paths), images=images, alphas=alphas,
                      c2w=c2w.astype(np.float32), intrinsics=intrinsics.astype(np.float32),
                      split=_held_out_split(len(paths), test_every),
                      aabb=aabb.astype(np.float32), labels=None, has_labels=np.zeros(len(paths), bool),
                      label_names={}, near_far=near_far.astype(np.float32), unbounded=unbounded)
    return dataset, stored_size


def _llff_image_folder(root: Path, downscale: int) -> tuple[Path, int]:
    """The folder to read and the factor still to resize by: `images_<downscale>/` as it is,
    else `images/` resized; with downscale 1 and only one `images_<k>/`, that one as it is."""
    exact = root / f"images_{downscale}"
    if exact.is_dir():
        return exact, 1
    if (root / "images").is_dir():
        return root / "images", downscale
    others = sorted(p.name for p in root.glob("images_*") if p.is_dir())
    if downscale == 1 and len(others) == 1:
        _log.warning("%s: no images/ folder, using %s/ (already downscaled)", root, others[0])
        return root / others[0], 1
    found = f"; found {', '.join(others)}" if others else ""
    raise DatasetError(f"{root}: no images_{downscale}/ or images/ folder{found}",
                       "Pass downscale=<k> to use an existing images_<k>/ folder, or add the "
                       "full-size images/ folder.")


def _aabb_from_frustums(c2w: np.ndarray, intrinsics: np.ndarray, width: int, height: int,
                        near_far: np.ndarray) -> np.ndarray:
    """Box around every camera's view frustum between the smallest near bound and the 90th
    percentile of the far bounds, so all content LLFF's bounds saw lies inside it."""
    near = float(near_far[:, 0].min())
    far = float(np.percentile(near_far[:, 1], LLFF_FAR_PERCENTILE))
    u = np.array([0.0, width, 0.0, width])
    v = np.array([0.0, 0.0, height, height])
    fx, fy, cx, cy = (intrinsics[:, k:k + 1] for k in range(4))
    corners = np.stack([(u - cx) / fx, -(v - cy) / fy, -np.ones_like(u - cx)], -1)  # (N, 4, 3) at depth 1
    rays = np.einsum("nij,nkj->nki", c2w[:, :3, :3], corners)
    points = np.concatenate([c2w[:, None, :3, 3] + rays * depth for depth in (near, far)], 1)
    return np.stack([points.reshape(-1, 3).min(0), points.reshape(-1, 3).max(0)])


# Images


class _ImageStack:
    """Preallocated output arrays that decoding threads fill in place."""

    def __init__(self, count: int, size: tuple[int, int]) -> None:
        self.images = np.empty((count, size[1], size[0], 3), np.float32)
        self.alphas: np.ndarray | None = None  # made on the first image with alpha
        self._lock = threading.Lock()

    def put(self, index: int, pixels: np.ndarray) -> None:
        self.images[index] = pixels[..., :3]
        if pixels.shape[-1] == 4:
            with self._lock:
                if self.alphas is None:
                    # Ones: views without an alpha channel are opaque.
                    self.alphas = np.ones(self.images.shape[:3], np.float32)
            self.alphas[index] = pixels[..., 3]


def _load_images(paths: list[Path], downscale: int,
                 transform: Callable[[int, np.ndarray], np.ndarray] | None = None
                 ) -> tuple[np.ndarray, np.ndarray | None, tuple[int, int]]:
    """Decode all images (threads: PIL decodes without holding the GIL), each passed through
    `transform(index, pixels)` when given; returns images, alphas (None when no image has alpha)
    and the stored (width, height) they all share."""
    first, stored_size = _decode_image(paths[0], downscale)
    if transform is not None:
        first = transform(0, first)
    stack = _ImageStack(len(paths), (first.shape[1], first.shape[0]))
    stack.put(0, first)

    def load(index: int) -> None:
        pixels, size = _decode_image(paths[index], downscale)
        if size != stored_size:
            raise DatasetError(f"{paths[index]}: image is {size[0]}x{size[1]} but {paths[0]} is "
                               f"{stored_size[0]}x{stored_size[1]}",
                               "All images of a dataset must have the same size: resize or remove "
                               "the odd one.")
        stack.put(index, pixels if transform is None else transform(index, pixels))

    _in_parallel(load, range(1, len(paths)))
    return stack.images, stack.alphas, stored_size


def _decode_image(path: Path, downscale: int) -> tuple[np.ndarray, tuple[int, int]]:
    """(H, W, 3 or 4) float32 in [0, 1] at 1/downscale size, and the (width, height) stored in
    the file after EXIF rotation."""
    image = _open_image(path)
    stored_size = image.size
    target = _downscaled_size(stored_size, downscale)
    if image.mode in _GREY_16_BIT_MODES:
        grey = Image.fromarray(np.asarray(image, np.float32) / 65535.0)
        if grey.size != target:
            grey = grey.resize(target, Image.Resampling.BOX)
        pixels = np.repeat(np.clip(np.asarray(grey), 0.0, 1.0)[..., None], 3, -1)
        return pixels, stored_size
    if image.mode not in ("RGB", "RGBA"):
        with_alpha = image.mode in ("LA", "La", "PA", "RGBa") or "transparency" in image.info
        image = image.convert("RGBA" if with_alpha else "RGB")
    if image.size != target:
        image = image.resize(target, Image.Resampling.BOX)  # PIL premultiplies alpha for this
    pixels = np.asarray(image, np.float32)
    pixels *= 1.0 / 255.0
    return pixels, stored_size


def _open_image(path: Path, hint: str = "Replace it with an RGB or RGBA PNG or JPEG.") -> Image.Image:
    try:
        with Image.open(path) as image:
            image.load()
            ImageOps.exif_transpose(image, in_place=True)
        return image  # closing the file keeps the decoded pixels
    except (OSError, ValueError, SyntaxError) as exc:
        raise DatasetError(f"{path}: cannot read the image ({exc})", hint) from exc


def _downscaled_size(size: tuple[int, int], downscale: int) -> tuple[int, int]:
    return max(1, round(size[0] / downscale)), max(1, round(size[1] / downscale))


def _check_aspect(reference: tuple[float, float], stored_size: tuple[int, int], where: str) -> None:
    """Intrinsics given for another size are scaled, which only works for the same aspect ratio."""
    aspect = stored_size[0] / stored_size[1]
    if abs(reference[0] / reference[1] - aspect) > 0.01 * aspect:
        raise DatasetError(f"{where}: the camera is for {reference[0]:g}x{reference[1]:g} images but "
                           f"the images are {stored_size[0]}x{stored_size[1]}",
                           "The images may be rotated (EXIF orientation) or cropped: use the images "
                           "the poses were computed from.")


# Label maps


def _attach_labels(dataset: Dataset, stored_size: tuple[int, int], require_labels: bool) -> Dataset:
    names_path = dataset.root / "labels.json"
    label_names = _read_label_names(names_path) if names_path.is_file() else {}
    maps = _find_label_maps(dataset.root, dataset.names)
    has_labels = np.array([m is not None for m in maps], bool)
    if not has_labels.any():
        if require_labels:
            raise DatasetError(f"no label maps found under {dataset.root / 'labels'} for the "
                               f"{len(dataset)} images of {dataset.root}", _LABEL_HINT)
        return replace(dataset, has_labels=has_labels, label_names=label_names)
    labels = np.zeros((len(dataset), dataset.height, dataset.width), np.int32)

    def load(index: int) -> None:
        map_path = maps[index]
        if map_path is not None:
            labels[index] = _read_label_map(map_path, dataset.root / dataset.names[index], stored_size,
                                            (dataset.width, dataset.height), label_names)

    _in_parallel(load, range(len(dataset)))
    return replace(dataset, labels=labels, has_labels=has_labels, label_names=label_names)


def _find_label_maps(root: Path, names: list[str]) -> list[Path | None]:
    """Per image, `labels/<dir>/<stem>.png` or else `labels/<stem>.png` when it exists."""
    found: list[Path | None] = []
    by_stem: dict[Path, str] = {}
    for name in names:
        rel = PurePosixPath(name)
        nested = root / "labels" / rel.parent / f"{rel.stem}.png"
        flat = root / "labels" / f"{rel.stem}.png"
        if ".." not in rel.parts and nested.is_file():
            found.append(nested)
        elif flat.is_file():
            # NeRF-synthetic has train/r_0.png and test/r_0.png: one flat map cannot label both.
            if flat in by_stem:
                raise DatasetError(f"{flat} would label both {by_stem[flat]} and {name}",
                                   f"Put the maps in per-folder subfolders, e.g. "
                                   f"labels/{rel.parent}/{rel.stem}.png.")
            by_stem[flat] = name
            found.append(flat)
        else:
            found.append(None)
    return found


def _read_label_map(path: Path, image_path: Path, stored_size: tuple[int, int],
                    size: tuple[int, int], label_names: dict[int, str]) -> np.ndarray:
    label_map = _open_image(path, _LABEL_HINT)
    if label_map.mode not in _LABEL_MODES:
        raise DatasetError(f"{path}: label map has mode {label_map.mode}, expected a single-channel "
                           "image of label ids", _LABEL_HINT)
    if label_map.size != stored_size:
        raise DatasetError(f"{path}: label map is {label_map.width}x{label_map.height} but its image "
                           f"{image_path} is {stored_size[0]}x{stored_size[1]}", _LABEL_HINT)
    ids = np.asarray(label_map).astype(np.int32)  # palette images give their indices: the ids
    present = np.unique(ids)
    if present[0] < 0:
        raise DatasetError(f"{path}: negative label id {present[0]}", _LABEL_HINT)
    unknown = [int(i) for i in present if i != 0 and i not in label_names]
    if label_names and unknown:
        raise DatasetError(f"{path}: label id {unknown[0]} is not named in labels.json",
                           f"Add \"{unknown[0]}\": \"<name>\" to labels.json, or set those pixels "
                           "to 0 (unlabelled).")
    if size != stored_size:
        # Nearest neighbour: averaging ids would invent labels at boundaries.
        rows = ((np.arange(size[1]) + 0.5) * stored_size[1] / size[1]).astype(int)
        cols = ((np.arange(size[0]) + 0.5) * stored_size[0] / size[0]).astype(int)
        ids = ids[rows[:, None], cols[None, :]]
    return ids


def _read_label_names(path: Path) -> dict[int, str]:
    raw = _read_json(path)
    if not isinstance(raw, dict):
        raise DatasetError(f"{path}: expected an object mapping label ids to names", _LABEL_HINT)
    names: dict[int, str] = {}
    for key, value in raw.items():
        try:
            label_id = int(key)
        except ValueError:
            raise DatasetError(f"{path}: key {key!r} is not an integer label id", _LABEL_HINT) from None
        if label_id <= 0 or not isinstance(value, str):
            raise DatasetError(f"{path}: entry {key!r}: {value!r} must map an id >= 1 to a name "
                               "(0 means unlabelled)", _LABEL_HINT)
        names[label_id] = value
    return names


# Shared helpers


def _read_json(path: Path) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{path}: not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}",
                           "Fix the JSON syntax there (a JSON validator shows the spot).") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: cannot read ({exc})", "Check the file is readable UTF-8 JSON.") from exc


def _as_float_array(value: Any) -> np.ndarray | None:
    try:
        return np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        return None


def _held_out_split(count: int, every: int) -> np.ndarray:
    """Every `every`-th view (0, 8, 16, ... for 8) for testing, the rest for training; 0: none."""
    return np.array(["test" if every and i % every == 0 else "train" for i in range(count)])


def _names(root: Path, paths: list[Path]) -> list[str]:
    return [Path(os.path.relpath(path, root)).as_posix() for path in paths]


def _in_parallel(task: Callable[[int], None], indices: Iterable[int]) -> None:
    """Run task(i) on a thread pool; re-raise the first failure in index order."""
    with ThreadPoolExecutor(max_workers=_WORKERS) as pool:
        try:
            for _ in pool.map(task, indices):
                pass
        except BaseException:
            pool.shutdown(cancel_futures=True)  # report the error now, not after decoding the rest
            raise
