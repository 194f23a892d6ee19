"""Benchmark the radiance field on a dataset: import time, training time, held-out PSNR.

Held-out views are the dataset's test split (NeRF-synthetic: transforms_test.json; LLFF:
every 8th view). RGBA views are scored composited on white, opaque photos as they are.

    python scripts/bench_nerf.py --dataset ../shared/data/nerf_synthetic_lego --downscale 2 --steps 2000
    python scripts/bench_nerf.py --dataset ../shared/data/llff_fern --downscale 8 --steps 2000
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from external_worker import pipeline
from external_worker.config import NerfConfig, TrainConfig, from_flat
from external_worker.progress import TqdmReporter
from external_worker.training import device
from external_worker.workspace import Workspace


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", type=Path, required=True)
    parser.add_argument("--downscale", type=int, default=1)
    parser.add_argument("--steps", type=int, default=TrainConfig().steps)
    parser.add_argument("--rays", type=int, default=TrainConfig().rays_per_batch)
    parser.add_argument("--probe-samples", type=int, default=NerfConfig().samples_per_ray,
                        help="density probe samples per ray (the full pass gets importance samples)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        ws = Workspace(Path(tmp) / "ws")
        start = time.perf_counter()
        dataset = pipeline.import_dataset(args.dataset, ws, downscale=args.downscale)
        imported = time.perf_counter() - start
        scene = pipeline.open_scene(ws)
        settings = from_flat(nerf_steps=args.steps, rays_per_batch=args.rays, probe_samples=args.probe_samples)
        info = pipeline.run_nerf(scene, settings.nerf, TqdmReporter(), settings.field)
    test = int((dataset.split == "test").sum())
    print(f"\n{args.dataset.name}: {len(dataset)} views at {dataset.width}x{dataset.height} ({test} held out), "
          f"device {device()}")
    print(f"import {imported:.1f} s   training {info['seconds']:.0f} s ({args.steps} steps x {args.rays} rays)   "
          f"held-out PSNR {info['psnr']:.2f} dB   (probe {args.probe_samples} samples per ray)")


if __name__ == "__main__":
    main()
