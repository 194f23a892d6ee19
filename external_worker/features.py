"""The feature field (SAN eq. 6 and 7): its own hash grid, an MLP after quadrature, frozen density.

Training renders F(r) = MLP(sum_i w_i E(x_i)) with the radiance field's weights w_i held fixed.
Because the density is frozen, the weights of every training ray are computed once up front and
only the few samples that carry the mass (top-k by weight) are kept: each training step then
touches the feature grid alone, which is what makes distillation cheap on a CPU.
Per-face features are MLP(E(x)) at the face centroids (eq. 7).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from .encoding import HashGrid, mlp
from .errors import Cancelled
from .nerf import NerfField, OccupancyGrid, render_rays
from .nerf_training import device
from .progress import Reporter
from .rays import SceneFrame, rays_for_pixels
from .teachers import TEACHER_TYPES, Teacher
from .workspace import Workspace

if TYPE_CHECKING:
    from .datasets import Dataset


@dataclass
class FeatureConfig:
    steps: int = 600
    rays_per_batch: int = 8192
    samples_per_ray: int = 4      # top-k quadrature samples kept per ray
    max_rays: int = 1 << 21       # cap on precomputed rays (memory)
    lr: float = 1e-2
    lr_final: float = 1e-3
    levels: int = 12
    log2_table: int = 17
    max_res: int = 256
    hidden: int = 64
    checkpoint_every: int = 200
    seed: int = 0


class FeatureField(nn.Module):
    def __init__(self, out_dim: int, config: FeatureConfig) -> None:
        super().__init__()
        self.grid = HashGrid(levels=config.levels, log2_table=config.log2_table, max_res=config.max_res)
        self.head = mlp(self.grid.output_dim, config.hidden, out_dim, 1)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """E(x) for points of the normalised box (N, 3). Rays that miss the box (background feature
        cells) carry zero weights at arbitrary points; clamping keeps their lookups in range."""
        return self.grid(((x + 1) / 2).clamp(0, 1))

    def render(self, points: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """MLP after quadrature: points (R, K, 3), weights (R, K) -> (R, C)."""
        e = self.embed(points.reshape(-1, 3)).view(*weights.shape, -1)
        return self.head((weights[..., None] * e).sum(1))

    def at_points(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(x))


def checkpoint_name(teacher: str) -> str:
    return f"features_{teacher}.pt"


def face_features_name(teacher: str) -> str:
    return f"face_features_{teacher}.npy"


@torch.no_grad()
def quadrature_samples(field: NerfField, grid: OccupancyGrid, c2w: torch.Tensor, intrinsics: torch.Tensor,
                       view: torch.Tensor, row: torch.Tensor, col: torch.Tensor, k: int, reporter: Reporter,
                       chunk: int = 8192) -> tuple[torch.Tensor, torch.Tensor]:
    """The k heaviest quadrature samples (points, weights) of each ray of the frozen radiance field."""
    points, weights = [], []
    total = len(view)
    for i in range(0, total, chunk):
        origins, dirs = rays_for_pixels(c2w, intrinsics, view[i:i + chunk], row[i:i + chunk], col[i:i + chunk])
        out = render_rays(field, grid, origins, dirs, torch.ones(1, 3, device=origins.device))
        w, idx = out.weights.topk(k, dim=-1)
        points.append(torch.gather(out.points, 1, idx[..., None].expand(-1, -1, 3)))
        weights.append(w)
        reporter.progress("features", 0, 1, None, f"rendering quadrature samples {min(i + chunk, total)}/{total}")
    return torch.cat(points), torch.cat(weights)


def train_features(dataset: "Dataset", frame: SceneFrame, workspace: Workspace, nerf: tuple[NerfField, OccupancyGrid],
                   teacher: Teacher, config: FeatureConfig, reporter: Reporter) -> dict:
    """Distil the teacher into a feature field (resumable); returns {"steps", "seconds", "loss"}."""
    dev = device()
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    name = checkpoint_name(teacher.name)
    ckpt = workspace.load_torch(name) if workspace.path(name).exists() else None
    if ckpt:
        config = FeatureConfig(**{**ckpt["config"], "steps": config.steps})
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
    c2w = torch.from_numpy(frame.normalise_poses(dataset.c2w)).to(dev)
    intrinsics = torch.from_numpy(dataset.intrinsics.astype(np.float32)).to(dev)
    points, weights = quadrature_samples(*nerf, c2w, intrinsics, torch.from_numpy(targets.view).to(dev),
                                         torch.from_numpy(targets.row).to(dev), torch.from_numpy(targets.col).to(dev),
                                         config.samples_per_ray, reporter)
    value = targets.value.to(dev)

    def save(at_step: int) -> None:
        workspace.save_torch(name, {"config": asdict(config), "teacher": teacher.to_dict(),
                                    "model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": at_step})
        workspace.update_stage(f"features_{teacher.name}", step=at_step, target_steps=config.steps)

    gamma = (config.lr_final / config.lr) ** (1 / max(config.steps, 1))
    start = time.perf_counter()
    loss_value = float("nan")
    try:
        while step < config.steps:
            for group in optimizer.param_groups:
                group["lr"] = config.lr * gamma**step
            batch = torch.randint(0, len(value), (config.rays_per_batch,), device=dev)
            loss = teacher.loss(model.render(points[batch], weights[batch]), value[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            loss_value = loss.item()
            if step % config.checkpoint_every == 0:
                save(step)
            reporter.progress("features", step, config.steps, {"loss": loss_value})
    except Cancelled:
        save(step)
        raise
    save(step)
    seconds = time.perf_counter() - start
    workspace.update_stage(f"features_{teacher.name}", done=True, loss=loss_value, seconds=seconds)
    return {"steps": step, "seconds": seconds, "loss": loss_value}


def load_features(workspace: Workspace, teacher_name: str) -> tuple[FeatureField, Teacher]:
    workspace.require(f"features_{teacher_name}", f"feature training with the '{teacher_name}' teacher")
    ckpt = workspace.load_torch(checkpoint_name(teacher_name))
    teacher = TEACHER_TYPES[teacher_name].from_dict(ckpt["teacher"])
    model = FeatureField(teacher.feature_dim, FeatureConfig(**ckpt["config"])).to(device())
    model.load_state_dict(ckpt["model"])
    return model.eval(), teacher


@torch.no_grad()
def face_features(model: FeatureField, centroids: np.ndarray, chunk: int = 1 << 16) -> np.ndarray:
    """Per-face features MLP(E(x)) at face centroids in the normalised frame (SAN eq. 7), fp16."""
    dev = next(model.parameters()).device
    out = [model.at_points(torch.from_numpy(centroids[i:i + chunk]).float().to(dev)).cpu().numpy()
           for i in range(0, len(centroids), chunk)]
    return np.concatenate(out).astype(np.float16) if out else np.zeros((0, 0), np.float16)


@torch.no_grad()
def background_feature(model: FeatureField) -> np.ndarray:
    """What the field renders where a ray carries no weight: MLP(0) (eq. 6 with all w_i = 0)."""
    dev = next(model.parameters()).device
    return model.head(torch.zeros(1, model.grid.output_dim, device=dev))[0].cpu().numpy()
