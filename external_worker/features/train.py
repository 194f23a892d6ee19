"""Distilling a teacher into the feature field, resumable.

Because the density is frozen, the weights of every training ray are computed once up front and
only the few samples that carry the mass (top-k by weight) are kept: each training step then
touches the feature grid alone, which is what makes distillation cheap on a CPU.
"""

from __future__ import annotations

from dataclasses import asdict, replace
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..config import FeatureConfig
from ..geometry.frame import SceneFrame
from ..nerf.field import NerfField, grid_resolution
from ..nerf.occupancy import OccupancyGrid
from ..progress import Reporter
from ..teachers.registry import TEACHER_TYPES, Teacher
from ..training import ResumableTraining, device
from ..workspace import Files, Stages, Workspace
from .augment import AugmentedViewCache, augmented_view, draw_batch, stored_background, use_augmentation
from .field import FeatureField, quadrature_samples

if TYPE_CHECKING:
    from ..datasets.dataset import Dataset


def train_features(dataset: "Dataset", frame: SceneFrame, workspace: Workspace, nerf: tuple[NerfField, OccupancyGrid],
                   teacher: Teacher, config: FeatureConfig, reporter: Reporter) -> dict:
    """Distil the teacher into a feature field (resumable); returns {"steps", "seconds", "loss",
    "augmented_views"}."""
    dev = device()
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    stage = Stages.features(teacher.name)
    training = ResumableTraining(workspace, Files.features(teacher.name), stage)
    ckpt = training.checkpoint
    with workspace.reading(Files.features(teacher.name)):
        if ckpt:
            # The field and its schedule continue the checkpoint's; the step count and how the
            # remaining steps are supervised are the caller's.
            config = replace(FeatureConfig(**ckpt["config"]), steps=config.steps, augment=config.augment,
                             cache_size=config.cache_size, reuse_probability=config.reuse_probability)
        else:
            contract = nerf[0].config.contract
            config = replace(config, contract=contract, max_res=grid_resolution(config.max_res, contract))
        model = FeatureField(teacher.feature_dim, config).to(dev)
        if ckpt:
            model.load_state_dict(ckpt["model"])
    augment = use_augmentation(config, teacher, dev)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, betas=(0.9, 0.99), eps=1e-15)

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

    def forward(step: int) -> torch.Tensor:
        nonlocal generated
        if augment and (not len(cache) or rng.random() >= config.reuse_probability):
            cache.push(*augmented_view(nerf, poses[views], dataset.intrinsics[views], image_size,
                                       background, teacher, config.samples_per_ray, rng))
            generated += 1
        batch_points, batch_weights, batch_value = draw_batch(points, weights, value, cache, config.rays_per_batch)
        return teacher.loss(model.render(batch_points, batch_weights), batch_value)

    def report(step: int, loss: float) -> tuple[dict, None]:
        return ({"augmented_views": generated, "cached_views": len(cache)} if augment else {}), None

    step = training.run(optimizer, config, forward, report, reporter=reporter, progress_stage="features",
                        state=lambda: {"config": asdict(config), "teacher": teacher.to_dict(), "model": model.state_dict()},
                        stage_info=lambda: {"augmented_views": generated})
    workspace.update_stage(stage, done=True, loss=training.loss, seconds=training.seconds)
    return {"steps": step, "seconds": training.seconds, "loss": training.loss, "augmented_views": generated}


def load_features(workspace: Workspace, teacher_name: str) -> tuple[FeatureField, Teacher]:
    workspace.require(Stages.features(teacher_name), f"feature training with the '{teacher_name}' teacher")
    ckpt = workspace.load_torch(Files.features(teacher_name))
    with workspace.reading(Files.features(teacher_name)):
        teacher = TEACHER_TYPES[teacher_name].from_dict(ckpt["teacher"], device=device())
        model = FeatureField(teacher.feature_dim, FeatureConfig(**ckpt["config"])).to(device())
        model.load_state_dict(ckpt["model"])
    return model.eval(), teacher
