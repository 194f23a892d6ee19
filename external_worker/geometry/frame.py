"""The normalised scene frame the fields live in.

The fields work in a box [-1, 1]^3; `SceneFrame` maps the dataset's world frame into it and
back, so meshes and cameras returned to Blender stay in the dataset's own frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class SceneFrame:
    """world = normalised * scale + center."""

    center: np.ndarray  # (3,)
    scale: float

    @classmethod
    def from_aabb(cls, aabb: np.ndarray) -> "SceneFrame":
        aabb = np.asarray(aabb, dtype=np.float64)
        return cls(center=(aabb[0] + aabb[1]) / 2, scale=float((aabb[1] - aabb[0]).max() / 2))

    def to_dict(self) -> dict:
        return {"center": [float(v) for v in self.center], "scale": self.scale}

    @classmethod
    def from_dict(cls, d: dict) -> "SceneFrame":
        return cls(center=np.asarray(d["center"], dtype=np.float64), scale=float(d["scale"]))

    def normalise_poses(self, c2w: np.ndarray) -> np.ndarray:
        out = np.array(c2w, dtype=np.float32, copy=True)
        out[:, :3, 3] = (out[:, :3, 3] - self.center) / self.scale
        return out

    def normalise_points(self, points: np.ndarray) -> np.ndarray:
        return ((points - self.center) / self.scale).astype(np.float32)

    def to_world(self, points: np.ndarray) -> np.ndarray:
        return (points * self.scale + self.center).astype(np.float32)



def box_intersection(origins: torch.Tensor, dirs: torch.Tensor, near: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Entry and exit distances of rays through the box [-1, 1]^3; exit <= entry means a miss."""
    inv = 1.0 / torch.where(dirs.abs() < 1e-9, torch.full_like(dirs, 1e-9), dirs)
    t0, t1 = (-1 - origins) * inv, (1 - origins) * inv
    t_near = torch.minimum(t0, t1).amax(-1).clamp_min(near)
    t_far = torch.maximum(t0, t1).amin(-1)
    return t_near, t_far
