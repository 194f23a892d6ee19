"""Every stage's settings, with their defaults, each written once: here, or in
`blender_dff.wire.api` for those the add-on sends too (it cannot import the worker).

The command line, the server's handlers and the scripts build these records with `from_flat`,
from a quality preset for the compute device (`PRESETS`) and the settings given on top of it.
The records' own defaults are the CPU's "standard" preset: they suit a small scene on a CPU.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from blender_dff.wire.api import (CLIP_MODEL, CLIP_PRETRAINED, DEFAULT_FEATURE_STEPS, DEFAULT_MAX_FACES,
                                  DEFAULT_MESH_RESOLUTION, DEFAULT_NERF_STEPS, DEFAULT_PRESET, DEFAULT_TEACHER,
                                  PRESETS as PRESET_NAMES)

from .errors import WorkerError


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
    rays_per_batch: int = 4096    # at most; fewer while the rays hold more than samples_per_batch
    # Full-pass samples a step aims at (instant-NGP's and nerfacc's dynamic batch): a step draws
    # as many rays as the samples per ray of the steps before allow, never under a quarter of
    # rays_per_batch. The GPU presets set it. On a CPU it is left above what 4096 rays can hold
    # (48 each): a grounded scene trained 1.8x faster with 24576 at the same 2000-step quality,
    # but a 250-step run lost its contacts (contact IoU 0.62 -> 0.44), so it stays opt-in there.
    samples_per_batch: int = 1 << 18
    lr: float = 1e-2
    lr_final: float = 1e-3       # exponential decay from lr to lr_final, as SAN trains its NeRF
    grid_warmup: int = 32        # steps before the occupancy grid starts skipping space
    grid_every: int = 16
    grid_full_until: int = 256   # then each update refreshes a random quarter of the cells
    # Per update, for every cell: instant-NGP's 0.95 suits its tens of thousands of steps; at 0.8
    # a stale density falls 100x in about 20 updates (350 steps), and a surface's survives the
    # four updates between two refreshes of a quarter of the cells.
    grid_decay: float = 0.8
    # Weight of the distortion loss (mip-NeRF 360's, which uses 0.01 on [0, 1] distances as here).
    distortion: float = 0.01
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
    preset: str = DEFAULT_PRESET  # the quality preset the numbers above came from
    device_kind: str = "cpu"  # and the compute device it was chosen for


# Flat name of a setting (the wire's param, the command line's option, a script's keyword) ->
# its record in TrainSettings ("" for TrainSettings itself) and its field there.
FLAT_SETTINGS = {
    "nerf_steps": ("nerf", "steps"),
    "rays_per_batch": ("nerf", "rays_per_batch"),
    "samples_per_batch": ("nerf", "samples_per_batch"),
    "probe_samples": ("field", "samples_per_ray"),
    "hash_table_log2": ("field", "log2_table"),
    "finest_resolution": ("field", "max_res"),
    "mesh_resolution": ("mesh", "resolution"),
    "max_faces": ("mesh", "max_faces"),
    "feature_steps": ("features", "steps"),
    "augment": ("features", "augment"),
    "teacher": ("", "teacher"),
    "sam_checkpoint": ("", "sam_checkpoint"),
    "clip_model": ("", "clip_model"),
    "clip_pretrained": ("", "clip_pretrained"),
    "preset": ("", "preset"),
}


# Quality presets per compute device: the flat settings each changes from the records' defaults
# (the CPU's "standard"). A GPU's "standard" is instant-NGP's field (2^19 table entries a level,
# finest resolution 2048) with batches a GPU fills; the CPU's presets keep within minutes on
# 2 cores. Settings given explicitly win over the preset's.
PRESETS: dict[str, dict[str, dict[str, int]]] = {
    "cpu": {
        "preview": {"nerf_steps": 600, "rays_per_batch": 2048, "hash_table_log2": 16, "finest_resolution": 256,
                    "mesh_resolution": 128, "feature_steps": 200},
        "standard": {},
        "high": {"nerf_steps": 6000, "hash_table_log2": 19, "finest_resolution": 1024, "mesh_resolution": 384,
                 "feature_steps": 1500},
    },
    "cuda": {
        "preview": {"nerf_steps": 2000, "rays_per_batch": 8192, "samples_per_batch": 1 << 17, "hash_table_log2": 19,
                    "finest_resolution": 1024, "mesh_resolution": 256, "feature_steps": 1000},
        "standard": {"nerf_steps": 5000, "rays_per_batch": 16384, "samples_per_batch": 1 << 18,
                     "hash_table_log2": 19, "finest_resolution": 2048, "mesh_resolution": 384, "feature_steps": 3000},
        "high": {"nerf_steps": 20000, "rays_per_batch": 32768, "samples_per_batch": 1 << 19, "hash_table_log2": 21,
                 "finest_resolution": 4096, "mesh_resolution": 512, "feature_steps": 6000},
    },
}
assert all(set(table) == set(PRESET_NAMES) for table in PRESETS.values())


def from_flat(flat: Mapping[str, Any] | object | None = None, device_kind: str | None = None,
              **keywords: Any) -> TrainSettings:
    """TrainSettings from flat settings: a mapping (a request's params) or an object with
    attributes (the command line's namespace), then keywords, named as in `FLAT_SETTINGS`, on
    top of the preset they name ("preset", default DEFAULT_PRESET) for `device_kind` ("cpu" or
    "cuda"; default: the device this worker trains on). Other names (paths, the command) are no
    settings and are left out. None keeps a setting's preset value, and so does 0: each number
    here is a count that 0 leaves unset (the command line's options are None unless given;
    max_faces' default is 0)."""
    values = {**(flat if isinstance(flat, Mapping) else vars(flat) if flat is not None else {}), **keywords}
    preset = values.get("preset") or DEFAULT_PRESET
    if preset not in PRESET_NAMES:
        raise WorkerError("bad_request", f"preset '{preset}' is not one of {', '.join(PRESET_NAMES)}",
                          "Choose one of those.")
    if device_kind is None:
        from .training import device
        device_kind = device().type
    given = {key: value for key, value in values.items()
             if value is not None and not (isinstance(value, int) and not isinstance(value, bool) and value == 0)}
    values = {**PRESETS.get(device_kind, PRESETS["cpu"])[preset], "preset": preset, **given}
    settings = TrainSettings(device_kind=device_kind)
    for key, (record, name) in FLAT_SETTINGS.items():
        if key not in values:
            continue
        if record:
            setattr(settings, record, replace(getattr(settings, record), **{name: values[key]}))
        else:
            setattr(settings, name, values[key])
    return settings


def describe(settings: TrainSettings) -> str:
    """The settings a training runs with, in one line (printed and shown in Blender)."""
    return (f"{settings.preset} preset on {settings.device_kind}: {settings.nerf.steps} NeRF steps x "
            f"up to {settings.nerf.rays_per_batch} rays ({settings.nerf.samples_per_batch} samples), hash table 2^{settings.field.log2_table}, finest resolution "
            f"{settings.field.max_res}, mesh {settings.mesh.resolution}^3, {settings.features.steps} feature steps")
