"""What the benchmarks (and the demo) share: the stopwatches, IoU, a generated scene, a workspace
trained with the `labels` teacher, a profile of the NeRF's training step, and scratch copies of
a workspace.

The scripts beside it import it as `benchlib` (Python puts a script's folder on sys.path).
It is light to import: the stages' modules (torch) are imported by the helpers that run them,
so a benchmark that does not train starts without torch.
"""

from __future__ import annotations

import fnmatch
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable, TypeVar

import numpy as np

from external_worker.config import TrainSettings, from_flat
from external_worker.progress import TqdmReporter
from external_worker.workspace import Workspace

if TYPE_CHECKING:
    from external_worker.mesh.extract import Mesh
    from external_worker.pipeline import Scene

MAKE_SCENE = Path(__file__).with_name("make_scene.py")
T = TypeVar("T")


def timed(fn: Callable[[], T], repeats: int) -> tuple[float, T]:
    """Median seconds of `repeats` calls after one warm-up, and the last result."""
    import torch

    result = fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return float(np.median(times)), result


class StageClock:
    """Seconds of each named step of a benchmark, in the order they ran, printed as
    `time NAME: S s` lines."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.reporter = TqdmReporter()

    def run(self, name: str, fn: Callable[..., T], *args) -> T:
        """fn(*args), timed under `name`; then the progress bar it left open is closed."""
        start = time.perf_counter()
        result = fn(*args)
        self.seconds[name] = time.perf_counter() - start
        self.reporter.close()
        return result

    def print_times(self) -> None:
        for name, value in self.seconds.items():
            print(f"time {name}: {value:.1f} s")


def iou(selected: np.ndarray, truth: np.ndarray, weights: np.ndarray | None = None) -> float:
    """Intersection over union of two boolean masks, each element counted with its weight (face
    areas, say; 1 by default: pixels); NaN when both masks are empty."""
    if weights is None:
        weights = np.ones(np.shape(selected))
    union = weights[selected | truth].sum()
    return float(weights[selected & truth].sum() / union) if union else float("nan")


def generated_scene(out: Path, *options: str) -> Path:
    """make_scene.py's scene in `out` with its command-line `options`, unless one is there; made
    in a process of its own, so Blender's state stays out of this one."""
    if not (out / "labels.json").exists():
        subprocess.run([sys.executable, str(MAKE_SCENE), "--out", str(out), *options], check=True)
    return out


def train_settings(steps: int | None = None, rays: int | None = None, feature_steps: int | None = None,
                   mesh_resolution: int | None = None, preset: str | None = None,
                   samples: int | None = None) -> TrainSettings:
    """The pipeline's settings: the preset's (default: standard) for this device, with each figure
    that is given (not None or 0) in its place."""
    return from_flat(nerf_steps=steps, rays_per_batch=rays, samples_per_batch=samples, feature_steps=feature_steps,
                     mesh_resolution=mesh_resolution, preset=preset)


def train_labels(ws: Workspace, settings: TrainSettings, clock: StageClock) -> tuple[Scene, dict, Mesh]:
    """NeRF, mesh and the `labels` feature field on an imported workspace, each stage timed by
    `clock`; returns the scene, the NeRF stage's figures and the mesh."""
    from external_worker import pipeline
    from external_worker.training import device

    scene = pipeline.open_scene(ws)
    teacher = pipeline.make_teacher("labels", scene.dataset, device=device())  # fails before the NeRF without labels
    nerf = clock.run("nerf", pipeline.run_nerf, scene, settings.nerf, clock.reporter, settings.field)
    mesh = clock.run("mesh", pipeline.run_mesh, scene, settings.mesh, clock.reporter)
    clock.run("features", pipeline.run_features, scene, teacher, settings.features, clock.reporter)
    return scene, nerf, mesh


PROFILE_BATCHES = 8


def profile_nerf(ws: Workspace, rays: int) -> None:
    """Where the trained field's training step spends its time: the density probe (no
    gradients), the full pass (colour, with gradients) and the backward pass, with the samples
    per ray that reach the field in each, the occupied share of the grid and the rays resampled."""
    import torch

    from external_worker import pipeline
    from external_worker.geometry.camera import rays_for_pixels
    from external_worker.nerf import render
    from external_worker.nerf.train import SceneTensors, load_field
    from external_worker.training import device

    scene = pipeline.open_scene(ws)
    field, grid = load_field(ws)
    field.train()
    data = SceneTensors(scene.dataset, scene.frame, "train", device())
    counts = {"probe": 0, "full": 0}
    seconds = {"probe": 0.0, "full": 0.0, "backward": 0.0}
    density, forward = field.density, field.forward

    def timed(part, fn):
        def wrapper(x, *args):
            start = time.perf_counter()
            out = fn(x, *args)
            seconds[part] += time.perf_counter() - start
            counts[part] += len(x)
            return out
        return wrapper

    field.density, field.forward = timed("probe", density), timed("full", forward)
    resampled = []
    probe_intervals = render._probe_intervals

    def count_resampled(t, edges, weights, n):
        resampled.append(((weights > render.CONTRIBUTION_EPS).sum(1) > n).float().mean().item())
        return probe_intervals(t, edges, weights, n)

    render._probe_intervals = count_resampled
    n_pixels = data.height * data.width
    total = 0.0
    for _ in range(PROFILE_BATCHES):
        flat = torch.randint(0, len(data) * n_pixels, (rays,), device=data.rgb.device)
        cam, pix = flat // n_pixels, flat % n_pixels
        origins, dirs = rays_for_pixels(data.c2w, data.intrinsics, cam, (pix // data.width).float(),
                                        (pix % data.width).float())
        start = time.perf_counter()
        out = render.render_rays(field, grid, origins, dirs, torch.rand(rays, 3, device=origins.device), perturb=True)
        before = time.perf_counter()
        out.rgb.sum().backward()
        seconds["backward"] += time.perf_counter() - before
        total += time.perf_counter() - start
    field.zero_grad()
    render._probe_intervals = probe_intervals
    batch_rays = PROFILE_BATCHES * rays
    print(f"profile ({PROFILE_BATCHES} batches of {rays} rays, scene {'unbounded' if scene.dataset.unbounded else 'bounded'}):")
    print(f"  occupied cells: {grid.occupied.float().mean().item() * 100:.1f}% of the grid "
          f"({grid.hull.float().mean().item() * 100:.1f}% in the visual hull)")
    print(f"  probe samples reaching the field: {counts['probe'] / batch_rays:.1f} per ray "
          f"(of {field.config.samples_per_ray})")
    print(f"  full-pass samples: {counts['full'] / batch_rays:.1f} per ray (at most {field.config.importance_samples}); "
          f"rays resampled: {sum(resampled) / max(len(resampled), 1) * 100:.1f}%")
    other = total - sum(seconds.values())
    print(f"  time per batch: {total / PROFILE_BATCHES * 1000:.0f} ms = probe {seconds['probe'] / PROFILE_BATCHES * 1000:.0f}"
          f" + full pass {seconds['full'] / PROFILE_BATCHES * 1000:.0f} + backward "
          f"{seconds['backward'] / PROFILE_BATCHES * 1000:.0f} + sampling and compositing {other / PROFILE_BATCHES * 1000:.0f} ms")


def forget_stages(ws: Workspace, *patterns: str) -> None:
    """Delete the workspace's files and state.json stages whose names match any of the
    shell-style `patterns`, so that those stages run again from scratch."""
    for pattern in patterns:
        for path in ws.root.glob(pattern):
            path.unlink()
    state = ws.load_state()
    state["stages"] = {k: v for k, v in state["stages"].items() if not any(fnmatch.fnmatch(k, p) for p in patterns)}
    ws.save_state(state)


def scratch_copy(workspace: Path, root: Path, *forget: str) -> Workspace:
    """A copy of `workspace` at `root` without the stages matching `forget` (see `forget_stages`):
    a benchmark runs them again there, leaving the workspace as it was."""
    shutil.copytree(workspace, root, ignore=shutil.ignore_patterns(*forget))
    ws = Workspace(root)
    forget_stages(ws, *forget)
    return ws
