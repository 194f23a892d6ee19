"""Training the radiance field on a dataset, with checkpoints, resume and held-out PSNR."""

from __future__ import annotations

import math
import time
from dataclasses import asdict, replace
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..config import NerfConfig, TrainConfig
from ..geometry.camera import rays_for_pixels
from ..geometry.frame import SceneFrame
from ..progress import Reporter
from ..training import ResumableTraining, device
from ..workspace import Files, Stages, Workspace
from .field import NerfField
from .occupancy import OccupancyGrid, occupancy_threshold
from .render import distortion_loss, render_rays, render_view

if TYPE_CHECKING:
    from ..datasets.dataset import Dataset

PREVIEW_EVERY_S = 10.0  # wall-clock seconds between two preview renders while training, at least
PREVIEW_SHARE = 0.05    # and at most this share of the training time spent on them
PREVIEW_SIZE = 160      # longest side of a preview render, in pixels


class SceneTensors:
    """The dataset's views in the normalised frame, as tensors on the compute device."""

    def __init__(self, dataset: Dataset, frame: SceneFrame, split: str, dev: torch.device) -> None:
        keep = np.flatnonzero(dataset.split == split)
        self.indices = keep
        self.height, self.width = dataset.images.shape[1:3]
        self.c2w = torch.from_numpy(frame.normalise_poses(dataset.c2w[keep])).to(dev)
        self.intrinsics = torch.from_numpy(dataset.intrinsics[keep].astype(np.float32)).to(dev)
        self.rgb = torch.from_numpy(dataset.images[keep]).to(dev)
        self.alpha = None if dataset.alphas is None else torch.from_numpy(dataset.alphas[keep]).to(dev)

    def __len__(self) -> int:
        return len(self.indices)

    def target(self, rgb: torch.Tensor, alpha: torch.Tensor | None, background: torch.Tensor) -> torch.Tensor:
        """Ground-truth colour composited on the background the render uses (RGBA data)."""
        return rgb if alpha is None else rgb * alpha[..., None] + background * (1 - alpha[..., None])


def build_field(config: NerfConfig, dev: torch.device) -> tuple[NerfField, OccupancyGrid]:
    return NerfField(config).to(dev), OccupancyGrid(contracted=config.contract).to(dev)


def load_field(workspace: Workspace) -> tuple[NerfField, OccupancyGrid]:
    """The trained radiance field of a workspace, in eval mode, on the compute device."""
    workspace.require(Stages.NERF, "the 'train' stage")
    ckpt = workspace.load_torch(Files.NERF)
    with workspace.reading(Files.NERF):
        field, grid = build_field(NerfConfig(**ckpt["config"]), device())
        field.load_state_dict(ckpt["field"])
        grid.load_state_dict(ckpt["grid"])
    return field.eval(), grid


def _optimizer(field: NerfField, config: TrainConfig) -> torch.optim.Optimizer:
    return torch.optim.Adam([
        {"params": field.grid.parameters(), "weight_decay": 0.0},
        {"params": list(field.density_net.parameters()) + list(field.color_net.parameters()), "weight_decay": 1e-6},
    ], lr=config.lr, betas=(0.9, 0.99), eps=1e-15)


def train_nerf(dataset: Dataset, frame: SceneFrame, workspace: Workspace, config: TrainConfig,
               reporter: Reporter, nerf_config: NerfConfig | None = None) -> dict:
    """Train (or resume training) the radiance field; returns {"steps", "psnr", "seconds"}."""
    dev = device()
    torch.manual_seed(config.seed)
    data = SceneTensors(dataset, frame, "train", dev)
    training = ResumableTraining(workspace, Files.NERF, Stages.NERF)
    ckpt = training.checkpoint
    with workspace.reading(Files.NERF):
        nerf_config = NerfConfig(**ckpt["config"]) if ckpt else replace(nerf_config or NerfConfig(),
                                                                         contract=dataset.unbounded)
        field, grid = build_field(nerf_config, dev)
        if ckpt:
            field.load_state_dict(ckpt["field"])
            grid.load_state_dict(ckpt["grid"])
    optimizer = _optimizer(field, config)
    if not ckpt and data.alpha is not None:
        grid.carve(data.c2w, data.intrinsics, data.alpha)
    threshold = occupancy_threshold()
    n_pixels = data.height * data.width

    photometric = float("nan")  # the last step's colour MSE
    batch = RayBatch(config)

    def forward(step: int) -> torch.Tensor:
        nonlocal photometric
        if step >= config.grid_warmup and step % config.grid_every == 0:
            grid.update(field.density, threshold, config.grid_decay,
                        fraction=1.0 if step < config.grid_full_until else 0.25)
        flat = torch.randint(0, len(data) * n_pixels, (batch.rays,), device=dev)
        cam, pix = flat // n_pixels, flat % n_pixels
        row, col = pix // data.width, pix % data.width
        origins, dirs = rays_for_pixels(data.c2w, data.intrinsics, cam, row.float(), col.float())
        # Random backgrounds make transparent pixels teach zero density (instant-NGP).
        background = torch.rand(len(flat), 3, device=dev) if data.alpha is not None else torch.zeros(len(flat), 3, device=dev)
        alpha = None if data.alpha is None else data.alpha[cam, row, col]
        target = data.target(data.rgb[cam, row, col], alpha, background)
        # Until the occupancy grid skips empty space every sample reaches the field: a quarter
        # of them suffice for the coarse shape those first steps learn.
        coarse = nerf_config.samples_per_ray // 4 if step < config.grid_warmup else None
        out = render_rays(field, grid, origins, dirs, background, perturb=True, n_samples=coarse)
        batch.count(out.evaluated)
        loss = torch.nn.functional.mse_loss(out.rgb, target)
        photometric = loss.item()
        return loss + config.distortion * distortion_loss(out) if config.distortion else loss

    last_preview = time.perf_counter()
    preview_every = PREVIEW_EVERY_S
    psnr_ema = None

    def report(step: int, loss: float) -> tuple[dict, np.ndarray | None]:
        nonlocal psnr_ema, last_preview, preview_every
        psnr = -10 * math.log10(max(photometric, 1e-10))  # of the colours alone, without the distortion loss
        psnr_ema = psnr if psnr_ema is None else 0.9 * psnr_ema + 0.1 * psnr
        preview = None
        # Not before the occupancy grid skips empty space: a render would cost the most then.
        if step == config.steps or (step > config.grid_warmup and time.perf_counter() - last_preview >= preview_every):
            began = time.perf_counter()
            preview, last_preview = training_preview(field, grid, data), time.perf_counter()
            preview_every = max(PREVIEW_EVERY_S, (last_preview - began) / PREVIEW_SHARE)
        return {"psnr": psnr_ema}, preview

    field.train()
    step = training.run(optimizer, config, forward, report, reporter=reporter, progress_stage="nerf",
                        state=lambda: {"config": asdict(nerf_config), "field": field.state_dict(),
                                       "grid": grid.state_dict()})
    test_psnr = evaluate_psnr(field, grid, dataset, frame, reporter) if (dataset.split == "test").any() else None
    workspace.update_stage(Stages.NERF, done=True, psnr=test_psnr, train_psnr=psnr_ema, seconds=training.seconds)
    return {"steps": step, "psnr": test_psnr, "train_psnr": psnr_ema, "seconds": training.seconds,
            "mean_rays": batch.mean_rays()}


class RayBatch:
    """How many rays the next training step draws: as many as keep its full pass near
    `samples_per_batch` samples, from the samples per ray of the steps so far (a running mean),
    within [rays_per_batch / MIN_RAYS_DIVISOR, rays_per_batch]."""

    MIN_RAYS_DIVISOR = 4  # fewer rays would leave a hazy field hazy for longer
    MOMENTUM = 0.9

    def __init__(self, config: TrainConfig) -> None:
        self.low, self.high = max(1, config.rays_per_batch // self.MIN_RAYS_DIVISOR), config.rays_per_batch
        self.target = config.samples_per_batch
        self.rays = self.high
        self.samples_per_ray: float | None = None
        self.drawn: list[int] = []

    def count(self, evaluated: int) -> None:
        """Take in the samples that the last step's `rays` sent through the field."""
        self.drawn.append(self.rays)
        per_ray = evaluated / self.rays
        self.samples_per_ray = per_ray if self.samples_per_ray is None else (
            self.MOMENTUM * self.samples_per_ray + (1 - self.MOMENTUM) * per_ray)
        wanted = round(self.target / max(self.samples_per_ray, 1e-6))
        self.rays = min(self.high, max(self.low, wanted))

    def mean_rays(self) -> float:
        """Mean rays per step so far (0 before the first step)."""
        return float(np.mean(self.drawn)) if self.drawn else 0.0


@torch.no_grad()
def training_preview(field: NerfField, grid: OccupancyGrid, data: SceneTensors, view: int = 0) -> np.ndarray:
    """The field's render of a training view beside its photo, at most PREVIEW_SIZE pixels high or
    wide: (H, 2W, 3) uint8, top row first."""
    scale = min(1.0, PREVIEW_SIZE / max(data.height, data.width))
    height, width = max(1, round(data.height * scale)), max(1, round(data.width * scale))
    sx, sy = width / data.width, height / data.height
    intrinsics = data.intrinsics[view] * torch.tensor([sx, sy, sx, sy], device=data.intrinsics.device)
    background = 1.0 if data.alpha is not None else 0.0
    render = render_view(field, grid, data.c2w[view], intrinsics, height, width, background)
    fill = torch.full((3,), background, device=data.rgb.device)
    photo = data.target(data.rgb[view], None if data.alpha is None else data.alpha[view], fill)
    photo = torch.nn.functional.interpolate(photo.permute(2, 0, 1)[None], size=(height, width), mode="area")
    both = torch.cat([render, photo[0].permute(1, 2, 0)], 1)
    return (both.clamp(0, 1) * 255 + 0.5).to(torch.uint8).cpu().numpy()


@torch.no_grad()
def evaluate_psnr(field: NerfField, grid: OccupancyGrid, dataset: Dataset, frame: SceneFrame,
                  reporter: Reporter | None = None) -> float:
    """Mean PSNR over the held-out views: RGBA ground truth composited on white; opaque photos
    rendered on black, the background rays leaving the box learnt in training."""
    field.eval()
    data = SceneTensors(dataset, frame, "test", next(field.parameters()).device)
    background = 1.0 if data.alpha is not None else 0.0
    fill = torch.full((3,), background, device=data.rgb.device)
    scores = []
    for i in range(len(data)):
        if reporter is not None:
            reporter.progress("evaluate", i, len(data), message=f"rendering held-out view {i + 1}/{len(data)}")
        pred = render_view(field, grid, data.c2w[i], data.intrinsics[i], data.height, data.width, background)
        gt = data.target(data.rgb[i], None if data.alpha is None else data.alpha[i], fill)
        scores.append(-10 * math.log10(max(torch.mean((pred - gt) ** 2).item(), 1e-10)))
    if reporter is not None:
        reporter.progress("evaluate", len(data), len(data), {"psnr": float(np.mean(scores))})
    return float(np.mean(scores))
