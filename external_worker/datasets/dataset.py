"""Posed photo sets -> one in-memory `Dataset`: float images, OpenGL cameras, optional label maps.

Formats, recognised by what the folder holds (one module each):

- NeRF-synthetic / instant-ngp / nerfstudio (`transforms.py`): `transforms_train.json` (with
  optional `transforms_val.json`, `transforms_test.json`) or a single `transforms.json`.
- COLMAP (`colmap.py`): a sparse model (`sparse/0/`, `sparse/` or the folder itself) beside
  `images/` or `images_<k>/`; distorting camera models are undistorted.
- LLFF (`llff.py`): `poses_bounds.npy` beside `images/` or `images_<k>/` (forward-facing or 360).

Every format's views get their box from the one layout policy (`bounds.py`); label maps for the
`labels` teacher live under `<root>/labels/` (`labels.py`). Every problem with the input raises
`DatasetError` naming the file and saying what to do.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from blender_dff.wire.api import BOUNDS, DEFAULT_BOUNDS, DEFAULT_DOWNSCALE, TEST_EVERY

from ..errors import DatasetError
from ..workspace import Confinement
from .bounds import scene_bounds
from .colmap import colmap_model, load_colmap
from .labels import read_labels
from .llff import is_llff, load_llff
from .transforms import is_transforms, load_transforms
from .views import Views

MIN_IMAGE_SIDE = 8  # pixels, after downscaling: fewer leave a radiance field nothing to learn from
VISIBLE_ALPHA = 0.05  # a view whose mask is below this everywhere shows nothing (and carves everything)


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


def load_dataset(path: str | Path, *, downscale: int = DEFAULT_DOWNSCALE, test_every: int = TEST_EVERY,
                 bounds: str = DEFAULT_BOUNDS, require_labels: bool = False,
                 confine: Confinement | None = None) -> Dataset:
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

    `confine` (a client's root folder) holds every file the dataset leads to: the folder, its
    JSON, poses, images and label maps, with their links followed.
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
    confine = confine or Confinement()
    root = _dataset_folder(confine.check(path))
    model = colmap_model(root, confine)
    if is_transforms(root, confine):
        views = load_transforms(root, downscale, test_every, confine)
    elif model is not None:  # before LLFF: COLMAP captures often carry poses_bounds.npy as well
        views = load_colmap(model, downscale, test_every, confine)
    elif is_llff(root, confine):
        views = load_llff(root, downscale, test_every, confine)
    else:
        raise DatasetError(
            f"{root} holds no known dataset: looked for transforms_train.json, transforms.json, "
            "a COLMAP model (sparse/0/cameras.bin or .txt) and poses_bounds.npy",
            "Point at a NeRF-synthetic / instant-ngp / nerfstudio folder (transforms*.json beside "
            "the images), a COLMAP project (sparse/0/ beside images/) or an LLFF folder "
            "(poses_bounds.npy beside images/ or images_<k>/).")
    return _dataset(views, bounds, require_labels, confine)


def check_trainable(dataset: Dataset) -> None:
    """A radiance field needs several training views seen from different places (parallax), each
    large enough to hold detail and, with masks, showing something."""
    if min(dataset.width, dataset.height) < MIN_IMAGE_SIDE:
        raise DatasetError(f"{dataset.root / dataset.names[0]}: the images are {dataset.width}x{dataset.height} "
                           f"pixels once downscaled, less than {MIN_IMAGE_SIDE} on a side",
                           "Use a smaller downscale, or photos of at least a few hundred pixels.")
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
    if dataset.alphas is not None:
        empty = np.flatnonzero(train & (dataset.alphas.max(axis=(1, 2)) < VISIBLE_ALPHA))
        if len(empty):
            raise DatasetError(f"{dataset.root / dataset.names[empty[0]]}: the image is transparent everywhere "
                               f"(alpha below {VISIBLE_ALPHA}; {len(empty)} such view(s))",
                               "Its mask hides the whole subject: fix the alpha channel (opaque where the "
                               "subject is), remove the view, or save the photos without alpha.")


def _dataset_folder(path: Path) -> Path:
    """The folder of a checked path: itself, or the folder of a transforms JSON or poses file."""
    if path.is_file():
        if path.suffix.lower() == ".json" or path.name == "poses_bounds.npy":
            return path.parent
        raise DatasetError(f"{path} is a file, not a dataset folder",
                           "Point at the folder holding transforms*.json or poses_bounds.npy.")
    if not path.is_dir():
        raise DatasetError(f"dataset folder {path} does not exist",
                           "Check the path; it must be the folder holding the images and poses.")
    return path


def _dataset(views: Views, bounds: str, require_labels: bool, confine: Confinement) -> Dataset:
    """The record of what a format loader read, with its box and its label maps."""
    aabb, unbounded = scene_bounds(views, bounds)
    names = [Path(os.path.relpath(path, views.root)).as_posix() for path in views.paths]
    height, width = views.images.shape[1:3]
    labels, has_labels, label_names = read_labels(views.root, names, views.stored_size, (width, height),
                                                  require_labels, confine)
    return Dataset(root=views.root, names=names, images=views.images, alphas=views.alphas,
                   c2w=views.c2w.astype(np.float32), intrinsics=views.intrinsics.astype(np.float32),
                   split=views.split, aabb=aabb.astype(np.float32), labels=labels, has_labels=has_labels,
                   label_names=label_names, near_far=_float32(views.near_far), unbounded=unbounded,
                   points=_float32(views.points), point_colors=views.point_colors)


def _float32(array: np.ndarray | None) -> np.ndarray | None:
    return None if array is None else array.astype(np.float32)
