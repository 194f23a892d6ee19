"""What every format loader hands over (`Views`), and the small readers the loaders share."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DatasetError
from ..workspace import Confinement


@dataclass(repr=False)
class Views:
    """Posed images as one format stores them, and what the format says about the scene's extent;
    `load_dataset` decides the box from it and makes the `Dataset`."""

    root: Path
    paths: list[Path]
    images: np.ndarray  # (N, H, W, 3) float32
    alphas: np.ndarray | None  # (N, H, W) float32 when any image has an alpha channel
    c2w: np.ndarray  # (N, 4, 4) OpenGL camera-to-world
    intrinsics: np.ndarray  # (N, 4) fx, fy, cx, cy in loaded pixels
    split: np.ndarray  # (N,) "train" or "test"
    stored_size: tuple[int, int]  # (width, height) of the image files, which label maps must match
    box: np.ndarray | None = None  # (2, 3) scene box the format gives (transforms 'aabb', instant-ngp)
    unbounded_beyond_box: bool = False  # the format says content lies beyond `box` (instant-ngp)
    near_far: np.ndarray | None = None  # (N, 2) depth bounds (LLFF)
    points: np.ndarray | None = None  # (P, 3) sparse point cloud (COLMAP)
    point_colors: np.ndarray | None = None  # (P, 3) uint8


def held_out_split(count: int, every: int) -> np.ndarray:
    """Every `every`-th view (0, 8, 16, ... for 8) for testing, the rest for training; 0: none."""
    return np.array(["test" if every and i % every == 0 else "train" for i in range(count)])


def read_json(path: Path, confine: Confinement) -> Any:
    try:
        with open(confine.check(path), encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{path}: not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}",
                           "Fix the JSON syntax there (a JSON validator shows the spot).") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: cannot read ({exc})", "Check the file is readable UTF-8 JSON.") from exc
