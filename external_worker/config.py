"""Every stage's settings, with their defaults: the one place a default is written.

The command line, the server's handlers and the scripts all build these records; defaults
suit a small scene on a CPU.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from blender_dff.wire.api import CLIP_MODEL, CLIP_PRETRAINED

AUGMENT_MODES = ("auto", "on", "off")


@dataclass
class NerfConfig:
    """The radiance field's architecture and sampling."""

    levels: int = 16
    log2_table: int = 17
    max_res: int = 512
    hidden: int = 64
    geo_features: int = 15
    samples_per_ray: int = 128      # density probe along each ray, no gradients
    importance_samples: int = 48    # at most this many per ray in the full pass (kept or resampled)
    contract: bool = False  # unbounded scene: space beyond the box is contracted


@dataclass
class TrainConfig:
    """Training of the radiance field."""

    steps: int = 2000
    rays_per_batch: int = 4096
    lr: float = 1e-2
    lr_final: float = 1e-3       # exponential decay from lr to lr_final, as SAN trains its NeRF
    grid_warmup: int = 32        # steps before the occupancy grid starts skipping space
    grid_every: int = 16
    grid_full_until: int = 256   # then each update refreshes a random quarter of the cells
    checkpoint_every: int = 250
    seed: int = 0


@dataclass
class MeshConfig:
    resolution: int = 256
    # Iso-surface density (normalised frame); 10 gave the lowest Chamfer distance on generated
    # scenes among 5, 10, 25, 50 (scripts/bench_pipeline.py).
    density_threshold: float = 10.0
    min_component_faces: int = 64     # smaller islands are floaters
    max_faces: int = 0                # decimate to this many faces (0 = keep all)


@dataclass
class FeatureConfig:
    """The feature field's architecture and its distillation."""

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
    contract: bool = False        # as the radiance field's: an unbounded scene's space is contracted
    checkpoint_every: int = 200
    seed: int = 0
    augment: str = "auto"         # camera augmentation: "on", "off", "auto" = with CUDA and an image teacher
    cache_size: int = 256         # augmented views kept (FIFO)
    reuse_probability: float = 0.75  # chance that a step reuses the cache rather than makes a new view


@dataclass
class TrainSettings:
    """Everything `train_all` runs."""

    nerf: TrainConfig = field(default_factory=TrainConfig)
    mesh: MeshConfig = field(default_factory=MeshConfig)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    teacher: str = "labels"
    sam_checkpoint: str = ""  # for the sam teacher: a checkpoint path, or "tiny" (random, for tests)
    clip_model: str = CLIP_MODEL  # for the clip teacher: an open_clip model name, or "tiny" (random)
    clip_pretrained: str = CLIP_PRETRAINED  # its pretrained tag or checkpoint file
