"""NeRF-synthetic, instant-ngp and nerfstudio captures: `transforms_{train,val,test}.json` or a
single `transforms.json` beside the images, with per-file or per-frame intrinsics, OpenCV lens
distortion (nerfstudio, instant-ngp), a scene box ('aabb') or instant-ngp's scale and offset."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DatasetError
from ..geometry.camera import focal_length
from ..workspace import Confinement
from .images import IMAGE_SUFFIXES, Undistorter, check_aspect, downscaled_size, load_images, open_image
from .views import Views, held_out_split, read_json

MIN_VIEWS_FOR_TEST_SPLIT = 16  # a single transforms.json with fewer views keeps them all for training

_SPLIT_FILES = (("transforms_train.json", "train"), ("transforms_val.json", "train"),
                ("transforms_test.json", "test"))
_CAMERA_KEYS = ("camera_angle_x", "camera_angle_y", "fl_x", "fl_y", "cx", "cy", "w", "h")
_DISTORTION_KEYS = ("k1", "k2", "k3", "k4", "p1", "p2")  # nerfstudio / instant-ngp OpenCV models
_ANGLE_KEYS = ("camera_angle_x", "camera_angle_y")
FIELD_OF_VIEW = (0.01, 3.0)  # radians: beyond, the focal length is near infinite, or near zero or negative


def is_transforms(root: Path, confine: Confinement) -> bool:
    return confine.is_file(root / "transforms_train.json") or confine.is_file(root / "transforms.json")


def load_transforms(root: Path, downscale: int, test_every: int, confine: Confinement) -> Views:
    """Frames of transforms_{train,val,test}.json (val counts as train) or of transforms.json.

    A single transforms.json has no split: with at least 16 frames every `test_every`-th one
    (0, 8, 16, ... by default) in file order is held out for testing, otherwise all are for training.
    """
    if confine.is_file(root / "transforms_train.json"):
        sources = [(root / name, split) for name, split in _SPLIT_FILES if confine.is_file(root / name)]
    else:
        sources = [(root / "transforms.json", "train")]
    paths: list[Path] = []
    poses: list[np.ndarray] = []
    splits: list[str] = []
    cameras: list[tuple[dict[str, float], dict[str, Any], str]] = []
    box: np.ndarray | None = None
    unbounded_beyond_box = False
    for json_path, split in sources:
        meta = read_json(json_path, confine)
        frames = meta.get("frames") if isinstance(meta, dict) else None
        if not isinstance(frames, list):
            raise DatasetError(f"{json_path}: no 'frames' list",
                               "A transforms JSON is an object with a 'frames' list, each frame "
                               "with 'file_path' and a 4x4 'transform_matrix'.")
        if box is None and "aabb" in meta:
            box = _parse_aabb(meta["aabb"], json_path)
        elif box is None and "aabb_scale" in meta:
            box, unbounded_beyond_box = _instant_ngp_box(meta, json_path)
        for i, frame in enumerate(frames):
            where = f"{json_path}: frame {i}"
            if not isinstance(frame, dict) or not isinstance(frame.get("file_path"), str):
                raise DatasetError(f"{where} has no 'file_path'",
                                   "Give each frame the image path relative to the JSON's folder.")
            paths.append(_find_image(root, frame["file_path"], where, confine))
            poses.append(_parse_pose(frame.get("transform_matrix"), where))
            cameras.append((_camera_spec(meta, frame, where), _distortion(meta, frame, where), where))
            splits.append(split)
    if not paths:
        raise DatasetError(f"{root}: the transforms JSON files list no frames",
                           "Add frames (file_path + transform_matrix) to the JSON.")
    if len(sources) == 1 and len(paths) >= MIN_VIEWS_FOR_TEST_SPLIT:
        splits = list(held_out_split(len(paths), test_every))
    stored_size = open_image(paths[0], confine).size
    loaded_size = downscaled_size(stored_size, downscale)
    intrinsics = np.array([_intrinsics(spec, stored_size, loaded_size, where) for spec, _, where in cameras])
    undistorter = None
    if any(distortion["params"] for _, distortion, _ in cameras):
        undistorter = Undistorter([_opencv_camera(k, distortion, loaded_size)
                                   for k, (_, distortion, _) in zip(intrinsics, cameras)])
    images, alphas, stored_size = load_images(paths, downscale, confine, undistorter)
    if undistorter is not None:
        intrinsics = undistorter.intrinsics(images.shape[2], images.shape[1])
    return Views(root=root, paths=paths, images=images, alphas=alphas, c2w=np.stack(poses),
                 intrinsics=intrinsics, split=np.array(splits), stored_size=stored_size, box=box,
                 unbounded_beyond_box=unbounded_beyond_box)


def _find_image(root: Path, file_path: str, where: str, confine: Confinement) -> Path:
    """The image a frame names, as given or with a usual extension added (NeRF-synthetic omits it)."""
    given = root / file_path
    candidates = [given] + [given.with_name(given.name + suffix) for suffix in IMAGE_SUFFIXES]
    for candidate in candidates:
        if confine.is_file(candidate):
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
        if key in _ANGLE_KEYS and not FIELD_OF_VIEW[0] <= value <= FIELD_OF_VIEW[1]:
            raise DatasetError(f"{where}: '{key}' must be a field of view in radians between "
                               f"{FIELD_OF_VIEW[0]} and {FIELD_OF_VIEW[1]}, got {value!r}",
                               "Give the camera's field of view in radians (0.69 for a 50 mm lens "
                               "on a 36 mm sensor; degrees times pi / 180), or its focal length "
                               "in pixels as 'fl_x'.")
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
    check_aspect((width, height), stored_size, where)
    fx = spec["fl_x"] if "fl_x" in spec else focal_length(width, spec["camera_angle_x"])
    if "fl_y" in spec:
        fy = spec["fl_y"]
    elif "camera_angle_y" in spec:
        fy = focal_length(height, spec["camera_angle_y"])
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


def _as_float_array(value: Any) -> np.ndarray | None:
    try:
        return np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        return None
