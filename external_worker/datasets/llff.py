"""LLFF captures: `poses_bounds.npy` beside `images/` or `images_<k>/` (forward-facing or 360)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import DatasetError
from ..workspace import Confinement
from .images import IMAGE_SUFFIXES, check_aspect, image_folder, load_images
from .views import Views, held_out_split


def is_llff(root: Path, confine: Confinement) -> bool:
    return confine.is_file(root / "poses_bounds.npy")


def load_llff(root: Path, downscale: int, test_every: int, confine: Confinement) -> Views:
    """poses_bounds.npy: per image (rows follow sorted file names) a 3x5 matrix [R | t | hwf]
    with hwf = height, width, focal of the full-size images, then near and far depth.
    Every `test_every`-th image (0, 8, 16, ... by default) is held out for testing."""
    poses_path = root / "poses_bounds.npy"
    try:
        table = np.load(confine.check(poses_path), allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise DatasetError(f"{poses_path}: cannot read ({exc})",
                           "Regenerate it with LLFF's imgs2poses.py.") from exc
    if not isinstance(table, np.ndarray) or table.dtype.kind not in "iuf":  # not an .npz, strings or objects
        kind = f"an array of {table.dtype}" if isinstance(table, np.ndarray) else "several arrays"
        raise DatasetError(f"{poses_path}: expected an array of real numbers, got {kind}",
                           "Regenerate it with LLFF's imgs2poses.py.")
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
    folder, resize = image_folder(root, downscale, confine)
    paths = sorted((p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES
                    and not p.name.startswith(".") and confine.is_file(p)), key=lambda p: p.name)
    if len(paths) != len(table):
        raise DatasetError(f"{poses_path} has {len(table)} poses but {folder} has {len(paths)} images",
                           "Rows follow the sorted image names: remove the extra images or "
                           "regenerate poses_bounds.npy for these images.")
    poses = table[:, :15].reshape(-1, 3, 5)
    c2w = np.tile(np.eye(4), (len(table), 1, 1))
    # LLFF rotation columns are [down, right, back]; OpenGL wants [right, up, back].
    c2w[:, :3, :3] = np.stack([poses[:, :, 1], -poses[:, :, 0], poses[:, :, 2]], -1)
    c2w[:, :3, 3] = poses[:, :, 3]
    images, alphas, stored_size = load_images(paths, resize, confine)
    height, width = images.shape[1:3]
    for hwf, path in zip(poses[:, :, 4], paths):
        check_aspect((hwf[1], hwf[0]), stored_size, f"{poses_path} (row of {path.name})")
    sx, sy = width / poses[:, 1, 4], height / poses[:, 0, 4]
    intrinsics = np.stack([poses[:, 2, 4] * sx, poses[:, 2, 4] * sy,
                           np.full(len(table), width / 2), np.full(len(table), height / 2)], -1)
    return Views(root=root, paths=paths, images=images, alphas=alphas, c2w=c2w, intrinsics=intrinsics,
                 split=held_out_split(len(paths), test_every), stored_size=stored_size,
                 near_far=table[:, 15:17])
