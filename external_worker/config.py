"""Every stage's settings, with their defaults, each written once: here, or in
`blender_dff.wire.api` for those the add-on sends too (it cannot import the worker).

The command line, the server's handlers and the scripts build these records with `from_flat`;
defaults suit a small scene on a CPU.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from blender_dff.wire.api import (CLIP_MODEL, CLIP_PRETRAINED, DEFAULT_FEATURE_STEPS, DEFAULT_MAX_FACES,
                                  DEFAULT_MESH_RESOLUTION, DEFAULT_NERF_STEPS, DEFAULT_TEACHER)


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

    steps: int = DEFAULT_NERF_STEPS
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
    resolution: int = DEFAULT_MESH_RESOLUTION
    # Iso-surface density (normalised frame); 10 gave the lowest Chamfer distance on generated
    # scenes among 5, 10, 25, 50 (scripts/bench_pipeline.py).
    density_threshold: float = 10.0
    min_component_faces: int = 64     # smaller islands are floaters
    max_faces: int = DEFAULT_MAX_FACES  # decimate to this many faces (0 = keep all)


@dataclass
class FeatureConfig:
    """The feature field's architecture and its distillation."""

    steps: int = DEFAULT_FEATURE_STEPS
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

    nerf: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    field: NerfConfig = dataclasses.field(default_factory=NerfConfig)  # the radiance field trained
    mesh: MeshConfig = dataclasses.field(default_factory=MeshConfig)
    features: FeatureConfig = dataclasses.field(default_factory=FeatureConfig)
    teacher: str = DEFAULT_TEACHER
    sam_checkpoint: str = ""  # for the sam teacher: a checkpoint path, or "tiny" (random, for tests)
    clip_model: str = CLIP_MODEL  # for the clip teacher: an open_clip model name, or "tiny" (random)
    clip_pretrained: str = CLIP_PRETRAINED  # its pretrained tag or checkpoint file


# Flat name of a setting (the wire's param, the command line's option, a script's keyword) ->
# its record in TrainSettings ("" for TrainSettings itself) and its field there.
FLAT_SETTINGS = {
    "nerf_steps": ("nerf", "steps"),
    "rays_per_batch": ("nerf", "rays_per_batch"),
    "probe_samples": ("field", "samples_per_ray"),
    "mesh_resolution": ("mesh", "resolution"),
    "max_faces": ("mesh", "max_faces"),
    "feature_steps": ("features", "steps"),
    "augment": ("features", "augment"),
    "teacher": ("", "teacher"),
    "sam_checkpoint": ("", "sam_checkpoint"),
    "clip_model": ("", "clip_model"),
    "clip_pretrained": ("", "clip_pretrained"),
}


def from_flat(flat: Mapping[str, Any] | object | None = None, **keywords: Any) -> TrainSettings:
    """TrainSettings from flat settings: a mapping (a request's params) or an object with
    attributes (the command line's namespace), then keywords, named as in `FLAT_SETTINGS`.
    Other names (paths, the command) are no settings and are left out. None keeps a setting's
    default, and so does 0: each number here is a count that 0 leaves unset (the command line's
    options are None unless given; max_faces' default is 0)."""
    values = {**(flat if isinstance(flat, Mapping) else vars(flat) if flat is not None else {}), **keywords}
    settings = TrainSettings()
    for key, (record, name) in FLAT_SETTINGS.items():
        value = values.get(key)
        if value is None or (isinstance(value, int) and not isinstance(value, bool) and value == 0):
            continue
        if record:
            setattr(settings, record, replace(getattr(settings, record), **{name: value}))
        else:
            setattr(settings, name, value)
    return settings
