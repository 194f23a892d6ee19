"""Benchmark the radiance field on a dataset: import time, training time, held-out PSNR, and
with `--profile` where a training step's time goes.

Held-out views are the dataset's test split (NeRF-synthetic: transforms_test.json; LLFF:
every 8th view). RGBA views are scored composited on white, opaque photos as they are.

    python scripts/bench_nerf.py --dataset ../shared/data/nerf_synthetic_lego --downscale 2 --steps 2000
    python scripts/bench_nerf.py --dataset ../shared/data/llff_fern --downscale 8 --steps 2000
    python scripts/bench_nerf.py --dataset SCENE --steps 300 --profile   # samples per ray, occupancy, time per part
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from blender_dff.wire.api import BOUNDS, DEFAULT_BOUNDS, DEFAULT_DOWNSCALE
from external_worker import pipeline
from external_worker.config import NerfConfig, TrainConfig, from_flat
from external_worker.progress import TqdmReporter
from external_worker.training import device
from external_worker.workspace import Workspace

PROFILE_BATCHES = 8


def profile(ws: Workspace, rays: int) -> None:
    """Where the trained field's training step spends its time: the density probe (no
    gradients), the full pass (colour, with gradients) and the backward pass, with the samples
    per ray that reach the field in each, the occupied share of the grid and the rays resampled."""
    import torch

    from external_worker.geometry.camera import rays_for_pixels
    from external_worker.nerf import render
    from external_worker.nerf.train import SceneTensors, load_field

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", type=Path, required=True)
    parser.add_argument("--downscale", type=int, default=DEFAULT_DOWNSCALE)
    parser.add_argument("--bounds", choices=BOUNDS, default=DEFAULT_BOUNDS)
    parser.add_argument("--steps", type=int, default=TrainConfig().steps)
    parser.add_argument("--rays", type=int, default=TrainConfig().rays_per_batch)
    parser.add_argument("--probe-samples", type=int, default=NerfConfig().samples_per_ray,
                        help="density probe samples per ray (the full pass gets importance samples)")
    parser.add_argument("--profile", action="store_true", help="then print where a training step's time goes")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        ws = Workspace(Path(tmp) / "ws")
        start = time.perf_counter()
        dataset = pipeline.import_dataset(args.dataset, ws, downscale=args.downscale, bounds=args.bounds)
        imported = time.perf_counter() - start
        scene = pipeline.open_scene(ws)
        settings = from_flat(nerf_steps=args.steps, rays_per_batch=args.rays, probe_samples=args.probe_samples)
        info = pipeline.run_nerf(scene, settings.nerf, TqdmReporter(), settings.field)
        test = int((dataset.split == "test").sum())
        print(f"\n{args.dataset.name}: {len(dataset)} views at {dataset.width}x{dataset.height} ({test} held out), "
              f"device {device()}, {'unbounded' if dataset.unbounded else 'bounded'}")
        print(f"import {imported:.1f} s   training {info['seconds']:.0f} s ({args.steps} steps x {args.rays} rays, "
              f"{info['seconds'] / args.steps:.2f} s a step)   held-out PSNR {info['psnr']:.2f} dB   "
              f"(probe {args.probe_samples} samples per ray)")
        if args.profile:
            profile(ws, args.rays)


if __name__ == "__main__":
    main()
