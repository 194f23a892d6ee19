"""Capture folders written by the tests, as the formats' own tools write them: images,
transforms.json, LLFF's poses_bounds.npy and COLMAP text models."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
from PIL import Image


def save_image(path: Path, pixels: np.ndarray, mode: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels, mode).save(path)
    return path


def random_pixels(rng: np.random.Generator, height: int = 4, width: int = 6, channels: int = 3) -> np.ndarray:
    return rng.integers(0, 256, (height, width, channels), dtype=np.uint8)


def look_at(eye: np.ndarray, target: np.ndarray, up=(0.0, 0.0, 1.0)) -> np.ndarray:
    """OpenGL camera-to-world looking from eye at target."""
    back = (eye - target) / np.linalg.norm(eye - target)
    right = np.cross(up, back)
    right /= np.linalg.norm(right)
    c2w = np.eye(4)
    c2w[:3, :3] = np.stack([right, np.cross(back, right), back], -1)
    c2w[:3, 3] = eye
    return c2w


def ring_poses(count: int, centre=(0.0, 0.0, 0.0), radius: float = 4.0) -> list[np.ndarray]:
    centre = np.asarray(centre, dtype=float)
    angles = np.linspace(0, 2 * math.pi, count, endpoint=False)
    offsets = [radius * np.array([math.cos(a), math.sin(a), 0.3 + 0.2 * math.sin(3 * a)]) for a in angles]
    return [look_at(centre + offset, centre) for offset in offsets]


def write_json(path: Path, obj) -> Path:
    path.write_text(json.dumps(obj))
    return path


def frame(file_path: str, c2w: np.ndarray, **extra) -> dict:
    return {"file_path": file_path, "transform_matrix": np.asarray(c2w).tolist(), **extra}


def single_transforms(root: Path, frames: list[dict], **meta) -> None:
    """transforms.json with a given box, so identical test poses need no box estimate."""
    write_json(root / "transforms.json", {"camera_angle_x": 1.0, "aabb": [[-1, -1, -1], [1, 1, 1]],
                                          **meta, "frames": frames})


def transforms_scene(root: Path, splits: dict[str, int], rng: np.random.Generator,
                     **meta) -> dict[str, list[np.ndarray]]:
    """transforms_<split>.json with RGBA images <split>/r_<i>.png (file paths without extension)."""
    pixels: dict[str, list[np.ndarray]] = {}
    for split, count in splits.items():
        poses = ring_poses(count)
        pixels[split] = [random_pixels(rng, channels=4) for _ in range(count)]
        for i, image in enumerate(pixels[split]):
            save_image(root / split / f"r_{i}.png", image)
        write_json(root / f"transforms_{split}.json",
                   {"camera_angle_x": 0.8, **meta,
                    "frames": [frame(f"./{split}/r_{i}", poses[i]) for i in range(count)]})
    return pixels


def llff_row(c2w: np.ndarray, hwf: tuple[float, float, float], near: float, far: float) -> np.ndarray:
    """poses_bounds.npy row for an OpenGL camera: LLFF columns are [down, right, back]."""
    rotation = np.stack([-c2w[:3, 1], c2w[:3, 0], c2w[:3, 2]], -1)
    pose = np.concatenate([rotation, c2w[:3, 3:4], np.array(hwf)[:, None]], 1)
    return np.concatenate([pose.ravel(), [near, far]])


def llff_scene(root: Path, count: int, folder: str, size: tuple[int, int],
               hwf=(16.0, 24.0, 20.0)) -> list[np.ndarray]:
    poses = [look_at(np.array([0.5 * i, 0.2 * i, 5.0]), np.array([0.5 * i, 0.2 * i, 0.0]), up=(0.0, 1.0, 0.0))
             for i in range(count)]
    np.save(root / "poses_bounds.npy", np.stack([llff_row(p, hwf, 2.0, 8.0) for p in poses]))
    rng = np.random.default_rng(0)
    for i in range(count):
        save_image(root / folder / f"img{i:03d}.png", random_pixels(rng, size[1], size[0]))
    return poses


def colmap_model(root: Path, poses: list[np.ndarray], camera: str, images: list[np.ndarray],
                 points: np.ndarray, folder: str = "images") -> Path:
    """A COLMAP project in text form: sparse/0/{cameras,images,points3D}.txt beside images/.
    `poses` are OpenGL camera-to-world matrices; `camera` is a cameras.txt line without its id."""
    from scipy.spatial.transform import Rotation

    model = root / "sparse" / "0"
    model.mkdir(parents=True)
    (model / "cameras.txt").write_text(f"# camera list\n1 {camera}\n")
    lines = []
    for i, (c2w, pixels) in enumerate(zip(poses, images)):
        opencv = c2w @ np.diag([1.0, -1.0, -1.0, 1.0])  # y down, looking along +z
        w2c = np.linalg.inv(opencv)
        x, y, z, w = Rotation.from_matrix(w2c[:3, :3]).as_quat()
        name = f"view_{i:02d}.png"
        lines += [f"{i + 1} {w} {x} {y} {z} {' '.join(map(str, w2c[:3, 3]))} 1 {name}", ""]
        save_image(root / folder / name, pixels)
    (model / "images.txt").write_text("\n".join(lines) + "\n")
    (model / "points3D.txt").write_text("".join(f"{i + 1} {p[0]} {p[1]} {p[2]} 200 100 50 0.5\n"
                                                for i, p in enumerate(points)))
    return model
