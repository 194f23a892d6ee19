"""Benchmark the radiance field on a dataset: import time, training time, held-out PSNR.

Held-out views are the dataset's test split (NeRF-synthetic: transforms_test.json; LLFF:
every 8th view). RGBA views are scored composited on white, opaque photos as they are.

    python scripts/bench_nerf.py --dataset ../shared/data/nerf_synthetic_lego --downscale 2 --steps 2000
    python scripts/bench_nerf.py --dataset ../shared/data/llff_fern --downscale 8 --steps 2000
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from external_worker import pipeline  # noqa: E402
from external_worker.config import NerfConfig, TrainConfig# noqa: E402
from external_worker.training import device
from external_worker.nerf.train import train_nerf  # noqa: E402
from external_worker.progress import TqdmReporter  # noqa: E402
from external_worker.workspace import Workspace  # noqa: E402


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
        config = replace(TrainConfig(), steps=args.steps, rays_per_batch=args.rays)
        info = train_nerf(scene.dataset, scene.frame, ws, config, TqdmReporter(),
                          NerfConfig(samples_per_ray=args.probe_samples))
    test = int((dataset.split == "test").sum())
    print(f"\n{args.dataset.name}: {len(dataset)} views at {dataset.width}x{dataset.height} ({test} held out), "
          f"device {device()}")
    print(f"import {imported:.1f} s   training {info['seconds']:.0f} s ({args.steps} steps x {args.rays} rays)   "
          f"held-out PSNR {info['psnr']:.2f} dB   (probe {args.probe_samples} samples per ray)")


if __name__ == "__main__":
    main()
