"""Camera augmentation (SAN 4.3): a teacher with an image model also supervises views between
the training cameras, rendered by the NeRF and encoded on the fly. A FIFO cache keeps the latest
augmented views so that most steps reuse one instead of running the encoder again.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from scipy.spatial.transform import Rotation, Slerp

from blender_dff.wire.api import AUGMENT_MODES

from ..config import FeatureConfig
from ..errors import WorkerError
from ..nerf.field import NerfField
from ..nerf.occupancy import OccupancyGrid
from ..nerf.render import render_view
from ..teachers.registry import Teacher
from .field import quadrature_samples

if TYPE_CHECKING:
    from ..datasets.dataset import Dataset

NEAR_CAMERAS = 4  # an augmented camera lies between a training camera and one of its nearest


def interpolate_camera(c2w_a: np.ndarray, c2w_b: np.ndarray, t: float) -> np.ndarray:
    """The camera a fraction t of the way from a to b (4 x 4 camera-to-world): rotation slerped,
    position interpolated linearly."""
    rotation = Slerp([0.0, 1.0], Rotation.from_matrix(np.stack([c2w_a[:3, :3], c2w_b[:3, :3]])))(t)
    out = np.eye(4, dtype=np.float32)
    out[:3, :3] = rotation.as_matrix()
    out[:3, 3] = (1 - t) * c2w_a[:3, 3] + t * c2w_b[:3, 3]
    return out


def random_camera_pair(centres: np.ndarray, rng: np.random.Generator, near: int = NEAR_CAMERAS) -> tuple[int, int]:
    """A random camera and one of the `near` cameras closest to it (itself when it is alone):
    the space between near cameras is what the NeRF renders well."""
    first = int(rng.integers(len(centres)))
    closest = np.argsort(np.linalg.norm(centres - centres[first], axis=1))[1:near + 1]  # [0] is itself
    return first, int(rng.choice(closest)) if len(closest) else first


class AugmentedViewCache:
    """FIFO of augmented views (SAN 4.3), each as the top-k quadrature samples of its feature-cell
    rays with the teacher's values; a full cache overwrites its oldest view. Views sit in fixed
    slots of three tensors (all views have as many rays) so a batch is one gather."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.views = 0
        self._next = 0  # the slot the next view goes to: the oldest once full
        self._slots: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    def __len__(self) -> int:
        return self.views

    @property
    def n_rays(self) -> int:
        return 0 if self._slots is None else self.views * self._slots[0].shape[1]

    def push(self, points: torch.Tensor, weights: torch.Tensor, value: torch.Tensor) -> None:
        if self._slots is None:
            self._slots = tuple(t.new_empty((self.capacity, *t.shape)) for t in (points, weights, value))
        for slot, view in zip(self._slots, (points, weights, value)):
            slot[self._next] = view
        self._next = (self._next + 1) % self.capacity
        self.views = min(self.views + 1, self.capacity)

    def rays(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(points, weights, value) of rays numbered 0 .. n_rays - 1 (filled slots come first)."""
        per_view = self._slots[0].shape[1]
        view, ray = index // per_view, index % per_view
        return tuple(slot[view, ray] for slot in self._slots)


def use_augmentation(config: FeatureConfig, teacher: Teacher, dev: torch.device) -> bool:
    """Whether to augment cameras; "auto" does where rendering and encoding views is cheap (CUDA)."""
    if config.augment not in AUGMENT_MODES:
        raise WorkerError("bad_request", f"unknown camera augmentation setting '{config.augment}'",
                          f"Use one of: {', '.join(AUGMENT_MODES)}.")
    if config.augment == "on" and not teacher.encodes_images:
        raise WorkerError("bad_request", f"camera augmentation needs a teacher that encodes images, and the "
                          f"'{teacher.name}' teacher only has the dataset's own label maps",
                          "Set augmentation to off or auto, or use the sam teacher.")
    if config.cache_size < 1 or not 0 <= config.reuse_probability <= 1:
        raise WorkerError("bad_request", f"camera augmentation needs a cache size >= 1 and a reuse probability in "
                          f"[0, 1], got {config.cache_size} and {config.reuse_probability}",
                          "Use the defaults: 256 views, reused with probability 0.75.")
    return config.augment == "on" or (config.augment == "auto" and dev.type == "cuda" and teacher.encodes_images)


def stored_background(dataset: "Dataset") -> float:
    """The grey the images show where they are transparent: augmented views are rendered on it
    so that the teacher sees them as it sees the training images, which it encodes as stored,
    not composited. Opaque photos: black, what rays leaving the box were trained to render."""
    transparent = None if dataset.alphas is None else dataset.alphas < 0.01
    if transparent is None:
        return 0.0
    return float(dataset.images[transparent].mean()) if transparent.any() else 1.0


def augmented_view(nerf: tuple[NerfField, OccupancyGrid], c2w: np.ndarray, intrinsics: np.ndarray,
                   size: tuple[int, int], background: float, teacher: Teacher, k: int,
                   rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A new view between two training cameras (normalised frame; intrinsics of the first):
    render it, encode it with the teacher, and return (points, weights, value) of its cell rays."""
    first, second = random_camera_pair(c2w[:, :3, 3], rng)
    dev = next(nerf[0].parameters()).device
    camera = torch.from_numpy(interpolate_camera(c2w[first], c2w[second], rng.random())).to(dev)
    lens = torch.from_numpy(intrinsics[first].astype(np.float32)).to(dev)
    image = render_view(*nerf, camera, lens, *size, background=background).clamp(0, 1)
    row, col, value = teacher.image_targets(image)
    only_view = torch.zeros(len(row), dtype=torch.long, device=dev)
    points, weights = quadrature_samples(*nerf, camera[None], lens[None], only_view, torch.from_numpy(row).to(dev),
                                         torch.from_numpy(col).to(dev), k)
    return points, weights, value.to(dev)


def draw_batch(points: torch.Tensor, weights: torch.Tensor, value: torch.Tensor, cache: AugmentedViewCache,
               size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`size` rays drawn uniformly from the training views' rays and the cached augmented ones
    together. Uniform over rays rather than a fixed split: a rendered view counts as much as a
    photo, so augmentation's share grows as the cache fills and there is no ratio to tune."""
    batch = torch.randint(0, len(value) + cache.n_rays, (size,), device=value.device)
    if not cache.n_rays:
        return points[batch], weights[batch], value[batch]
    real = batch[batch < len(value)]
    augmented = cache.rays(batch[batch >= len(value)] - len(value))
    return tuple(torch.cat([t[real], a]) for t, a in zip((points, weights, value), augmented))
