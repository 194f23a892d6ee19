"""The feature field (SAN eq. 6 and 7): its own hash grid, an MLP after quadrature, frozen density.

Training renders F(r) = MLP(sum_i w_i E(x_i)) with the radiance field's weights w_i held fixed.
Because the density is frozen, the weights of every training ray are computed once up front and
only the few samples that carry the mass (top-k by weight) are kept: each training step then
touches the feature grid alone, which is what makes distillation cheap on a CPU.
Per-face features are MLP(E(x)) at the face centroids (eq. 7), stored as codes (`FaceCodes`).

Camera augmentation (SAN 4.3): a teacher with an image model also supervises views between the
training cameras, rendered by the NeRF and encoded on the fly. A FIFO cache keeps the latest
augmented views so that most steps reuse one instead of running the encoder again.
"""

from __future__ import annotations

import time
from dataclasses import asdict, replace
from typing import TYPE_CHECKING

import numpy as np
import torch
from scipy.spatial.transform import Rotation, Slerp
from torch import nn

from ..config import AUGMENT_MODES, FeatureConfig
from ..nerf.encoding import HashGrid, mlp
from ..errors import Cancelled, WorkerError
from .face_codes import FaceCodes
from ..nerf.field import NerfField, OccupancyGrid, render_rays, unit_cube
from ..training import device
from ..nerf.train import render_view
from ..progress import Reporter
from ..geometry.frame import SceneFrame
from ..geometry.camera import rays_for_pixels
from ..teachers.registry import TEACHER_TYPES, Teacher
from ..workspace import Files, Stages, Workspace

if TYPE_CHECKING:
    from ..datasets.dataset import Dataset

NEAR_CAMERAS = 4  # an augmented camera lies between a training camera and one of its nearest


class FeatureField(nn.Module):
    def __init__(self, out_dim: int, config: FeatureConfig) -> None:
        super().__init__()
        self.grid = HashGrid(levels=config.levels, log2_table=config.log2_table, max_res=config.max_res)
        self.head = mlp(self.grid.output_dim, config.hidden, out_dim, 1)
        self.contract = config.contract

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """E(x) for points of the scene frame (N, 3). Rays that miss a bounded scene's box (background
        feature cells) carry zero weights at arbitrary points; clamping keeps their lookups in range."""
        return self.grid(unit_cube(x, self.contract).clamp(0, 1))

    def render(self, points: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """MLP after quadrature: points (R, K, 3), weights (R, K) -> (R, C)."""
        e = self.embed(points.reshape(-1, 3)).view(*weights.shape, -1)
        return self.head((weights[..., None] * e).sum(1))

    def at_points(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(x))


@torch.no_grad()
def quadrature_samples(field: NerfField, grid: OccupancyGrid, c2w: torch.Tensor, intrinsics: torch.Tensor,
                       view: torch.Tensor, row: torch.Tensor, col: torch.Tensor, k: int,
                       reporter: Reporter | None = None, chunk: int = 8192) -> tuple[torch.Tensor, torch.Tensor]:
    """The k heaviest quadrature samples (points, weights) of each ray of the frozen radiance field."""
    points, weights = [], []
    total = len(view)
    for i in range(0, total, chunk):
        origins, dirs = rays_for_pixels(c2w, intrinsics, view[i:i + chunk], row[i:i + chunk], col[i:i + chunk])
        out = render_rays(field, grid, origins, dirs, torch.ones(1, 3, device=origins.device))
        w, idx = out.weights.topk(k, dim=-1)
        points.append(torch.gather(out.points, 1, idx[..., None].expand(-1, -1, 3)))
        weights.append(w)
        if reporter is not None:
            reporter.progress("features", 0, 1, None, f"rendering quadrature samples {min(i + chunk, total)}/{total}")
    return torch.cat(points), torch.cat(weights)


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


def train_features(dataset: "Dataset", frame: SceneFrame, workspace: Workspace, nerf: tuple[NerfField, OccupancyGrid],
                   teacher: Teacher, config: FeatureConfig, reporter: Reporter) -> dict:
    """Distil the teacher into a feature field (resumable); returns {"steps", "seconds", "loss",
    "augmented_views"}."""
    dev = device()
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    name = Files.features(teacher.name)
    stage = Stages.features(teacher.name)
    ckpt = workspace.load_torch(name) if workspace.path(name).exists() else None
    if ckpt:
        # The field and its schedule continue the checkpoint's; the step count and how the
        # remaining steps are supervised are the caller's.
        config = replace(FeatureConfig(**ckpt["config"]), steps=config.steps, augment=config.augment,
                         cache_size=config.cache_size, reuse_probability=config.reuse_probability)
    else:
        config = replace(config, contract=nerf[0].config.contract)
    augment = use_augmentation(config, teacher, dev)
    model = FeatureField(teacher.feature_dim, config).to(dev)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, betas=(0.9, 0.99), eps=1e-15)
    step = 0
    if ckpt:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        step = int(ckpt["step"])

    views = np.flatnonzero(dataset.split == "train")
    targets = teacher.targets(dataset, views)
    if len(targets.view) > config.max_rays:
        targets = targets.subset(rng.choice(len(targets.view), config.max_rays, replace=False))
    poses = frame.normalise_poses(dataset.c2w)
    c2w = torch.from_numpy(poses).to(dev)
    intrinsics = torch.from_numpy(dataset.intrinsics.astype(np.float32)).to(dev)
    points, weights = quadrature_samples(*nerf, c2w, intrinsics, torch.from_numpy(targets.view).to(dev),
                                         torch.from_numpy(targets.row).to(dev), torch.from_numpy(targets.col).to(dev),
                                         config.samples_per_ray, reporter)
    value = targets.value.to(dev)
    cache = AugmentedViewCache(config.cache_size)
    generated = workspace.stage(stage).get("augmented_views", 0) if ckpt else 0
    background, image_size = stored_background(dataset), (dataset.height, dataset.width)

    def save(at_step: int) -> None:
        workspace.save_torch(name, {"config": asdict(config), "teacher": teacher.to_dict(),
                                    "model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": at_step})
        workspace.update_stage(stage, step=at_step, target_steps=config.steps, augmented_views=generated)

    gamma = (config.lr_final / config.lr) ** (1 / max(config.steps, 1))
    start = time.perf_counter()
    loss_value = float("nan")
    try:
        while step < config.steps:
            for group in optimizer.param_groups:
                group["lr"] = config.lr * gamma**step
            metrics = {}
            if augment:
                if not len(cache) or rng.random() >= config.reuse_probability:
                    cache.push(*augmented_view(nerf, poses[views], dataset.intrinsics[views], image_size,
                                               background, teacher, config.samples_per_ray, rng))
                    generated += 1
                metrics = {"augmented_views": generated, "cached_views": len(cache)}
            batch_points, batch_weights, batch_value = draw_batch(points, weights, value, cache, config.rays_per_batch)
            loss = teacher.loss(model.render(batch_points, batch_weights), batch_value)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            loss_value = loss.item()
            if step % config.checkpoint_every == 0:
                save(step)
            reporter.progress("features", step, config.steps, {"loss": loss_value, **metrics})
    except Cancelled:
        save(step)
        raise
    save(step)
    seconds = time.perf_counter() - start
    workspace.update_stage(stage, done=True, loss=loss_value, seconds=seconds)
    return {"steps": step, "seconds": seconds, "loss": loss_value, "augmented_views": generated}


def load_features(workspace: Workspace, teacher_name: str) -> tuple[FeatureField, Teacher]:
    workspace.require(Stages.features(teacher_name), f"feature training with the '{teacher_name}' teacher")
    ckpt = workspace.load_torch(Files.features(teacher_name))
    teacher = TEACHER_TYPES[teacher_name].from_dict(ckpt["teacher"])
    model = FeatureField(teacher.feature_dim, FeatureConfig(**ckpt["config"])).to(device())
    model.load_state_dict(ckpt["model"])
    return model.eval(), teacher


@torch.no_grad()
def face_codes(model: FeatureField, centroids: np.ndarray, chunk: int = 1 << 16) -> FaceCodes:
    """The per-face features MLP(E(x)) at face centroids in the normalised frame, as codes."""
    dev = next(model.parameters()).device
    body, last = model.head[:-1], model.head[-1]
    codes, norms = [], []
    for i in range(0, len(centroids), chunk):
        code = body(model.embed(torch.from_numpy(centroids[i:i + chunk]).float().to(dev)))
        codes.append(code.cpu().numpy())
        norms.append(last(code).norm(dim=1).cpu().numpy())
    empty = np.zeros((0, last.in_features), np.float32)
    return FaceCodes(np.concatenate(codes).astype(np.float16) if codes else empty.astype(np.float16),
                     last.weight.detach().cpu().numpy().astype(np.float32),
                     last.bias.detach().cpu().numpy().astype(np.float32),
                     np.concatenate(norms).astype(np.float32) if norms else np.zeros(0, np.float32))


@torch.no_grad()
def background_feature(model: FeatureField) -> np.ndarray:
    """What the field renders where a ray carries no weight: MLP(0) (eq. 6 with all w_i = 0)."""
    dev = next(model.parameters()).device
    return model.head(torch.zeros(1, model.grid.output_dim, device=dev))[0].cpu().numpy()
