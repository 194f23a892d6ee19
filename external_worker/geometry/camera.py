"""Pinhole cameras, the one place that maps between world points and pixels.

Cameras use the OpenGL/Blender convention: x right, y up, looking along -z. Intrinsics are
fx, fy, cx, cy in pixels, the image spanning [0, width] x [0, height], so the centre of pixel
(row r, column c) is at (c + 0.5, r + 0.5). `project` and `pixel_directions` take numpy arrays
or torch tensors alike; the ray functions work on torch tensors (training and rendering).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

MIN_DEPTH = 1e-6  # points nearer the camera plane than this project as if they were this far


@dataclass
class Cameras:
    """Views of one size, e.g. the training cameras in the normalised frame for visibility culling."""

    c2w: np.ndarray         # (N, 4, 4)
    intrinsics: np.ndarray  # (N, 4)
    height: int
    width: int

    def scaled_to(self, max_side: int) -> Cameras:
        """The same views with images at most `max_side` pixels wide or high (never enlarged)."""
        s = min(1.0, max_side / max(self.height, self.width))
        return Cameras(self.c2w, self.intrinsics * s, max(1, round(self.height * s)), max(1, round(self.width * s)))


def look_at(eye: np.ndarray, forward: np.ndarray) -> np.ndarray:
    """Camera-to-world at `eye` looking along `forward`, with the world's z up when possible."""
    forward = np.asarray(forward, np.float64) / np.linalg.norm(forward)
    helper = np.array([0.0, 0.0, 1.0]) if abs(forward[2]) < 0.9 else np.array([0.0, 1.0, 0.0])
    right = np.cross(forward, helper)
    right /= np.linalg.norm(right)
    up = np.cross(right, forward)
    c2w = np.eye(4)
    c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = right, up, -forward, eye
    return c2w


def focal_length(pixels: float, fov: float) -> float:
    """Focal length in pixels of a camera whose image, `pixels` across, spans `fov` radians."""
    return 0.5 * pixels / np.tan(0.5 * fov)


def intrinsics_for(size: int, fov_degrees: float) -> np.ndarray:
    """fx, fy, cx, cy of a square `size` x `size` view `fov_degrees` wide."""
    focal = focal_length(size, np.radians(fov_degrees))
    return np.array([focal, focal, size / 2, size / 2])


def to_camera(points, c2w):
    """World points (N, 3) in the camera's own frame."""
    return (points - c2w[:3, 3]) @ c2w[:3, :3]


def project(points, c2w, intrinsics):
    """Pixel coordinates u (right), v (down) and depth along the view axis of world points (N, 3)
    in one camera; points at or behind the camera (depth <= MIN_DEPTH) get meaningless (u, v)."""
    local = to_camera(points, c2w)
    depth = -local[:, 2]
    safe = depth.clip(MIN_DEPTH)
    fx, fy, cx, cy = _lens(intrinsics)
    return fx * local[:, 0] / safe + cx, -fy * local[:, 1] / safe + cy, depth


def pixel_directions(intrinsics, u, v):
    """Directions (..., 3) in the camera's frame through image points (u, v), at depth 1: the
    inverse of `project`. Intrinsics (..., 4) broadcast against u and v."""
    fx, fy, cx, cy = _lens(intrinsics)
    x = (u - cx) / fx
    xp = torch if isinstance(x, torch.Tensor) else np
    return xp.stack([x, -(v - cy) / fy, -xp.ones_like(x)], -1)


def pixel_rays(c2w: torch.Tensor, intrinsics: torch.Tensor, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rays through every pixel centre of one camera.

    Returns origins and unit directions, each (H * W, 3), rows top to bottom."""
    j, i = torch.meshgrid(torch.arange(width, dtype=torch.float32, device=c2w.device) + 0.5,
                          torch.arange(height, dtype=torch.float32, device=c2w.device) + 0.5, indexing="xy")
    dirs = pixel_directions(intrinsics, j, i).reshape(-1, 3)
    dirs = dirs @ c2w[:3, :3].T
    dirs = dirs / dirs.norm(dim=-1, keepdim=True)
    return c2w[:3, 3].expand_as(dirs).contiguous(), dirs


def rays_for_pixels(c2w: torch.Tensor, intrinsics: torch.Tensor, cam: torch.Tensor,
                    row: torch.Tensor, col: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rays through pixel centres (row, col) of cameras `cam` (batched, for training)."""
    d = pixel_directions(intrinsics[cam], col + 0.5, row + 0.5)
    rot = c2w[cam, :3, :3]
    d = (rot @ d[..., None])[..., 0]
    return c2w[cam, :3, 3], d / d.norm(dim=-1, keepdim=True)


def _lens(intrinsics):
    """fx, fy, cx, cy of intrinsics (..., 4)."""
    return intrinsics[..., 0], intrinsics[..., 1], intrinsics[..., 2], intrinsics[..., 3]
