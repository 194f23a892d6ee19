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

from blender_dff.wire.api import BOUNDS, DEFAULT_BOUNDS, DEFAULT_DOWNSCALE, PRESETS
from benchlib import profile_nerf
from external_worker import pipeline
from external_worker.config import describe, from_flat
from external_worker.progress import TqdmReporter
from external_worker.training import device
from external_worker.workspace import Workspace

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", type=Path, required=True)
    parser.add_argument("--downscale", type=int, default=DEFAULT_DOWNSCALE)
    parser.add_argument("--bounds", choices=BOUNDS, default=DEFAULT_BOUNDS)
    parser.add_argument("--preset", choices=PRESETS, help="quality preset (default: standard, for this device)")
    parser.add_argument("--steps", type=int, help="default: the preset's")
    parser.add_argument("--rays", type=int, help="rays per step at most (default: the preset's)")
    parser.add_argument("--samples", type=int, help="full-pass samples a step aims at (default: the preset's)")
    parser.add_argument("--probe-samples", type=int,
                        help="density probe samples per ray (the full pass gets importance samples)")
    parser.add_argument("--profile", action="store_true", help="then print where a training step's time goes")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        ws = Workspace(Path(tmp) / "ws")
        start = time.perf_counter()
        dataset = pipeline.import_dataset(args.dataset, ws, downscale=args.downscale, bounds=args.bounds)
        imported = time.perf_counter() - start
        scene = pipeline.open_scene(ws)
        settings = from_flat(nerf_steps=args.steps, rays_per_batch=args.rays, samples_per_batch=args.samples,
                             probe_samples=args.probe_samples,
                             preset=args.preset)
        print(describe(settings))
        info = pipeline.run_nerf(scene, settings.nerf, TqdmReporter(), settings.field)
        test = int((dataset.split == "test").sum())
        print(f"\n{args.dataset.name}: {len(dataset)} views at {dataset.width}x{dataset.height} ({test} held out), "
              f"device {device()}, {'unbounded' if dataset.unbounded else 'bounded'}")
        steps = settings.nerf.steps
        print(f"import {imported:.1f} s   training {info['seconds']:.0f} s ({steps} steps x {info['mean_rays']:.0f} rays, "
              f"{info['seconds'] / steps:.2f} s a step)   held-out PSNR {info['psnr']:.2f} dB   "
              f"(probe {settings.field.samples_per_ray} samples per ray)")
        if args.profile:
            profile_nerf(ws, settings.nerf.rays_per_batch)


if __name__ == "__main__":
    main()
