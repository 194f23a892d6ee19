"""Benchmark the headless pipeline on a generated scene with exact ground truth.

Prints held-out PSNR, per-face mIoU of the `labels` teacher's segmentation against the
ground-truth mesh (each predicted face takes the label of the nearest ground-truth surface;
area-weighted IoU per object, mean over objects), mesh Chamfer distance, and seconds per stage.

    python scripts/bench_pipeline.py                      # default scene: 5 objects, 128 px, 60 views
    python scripts/bench_pipeline.py --scene DIR          # an existing make_scene.py output
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

from benchlib import StageClock, generated_scene, train_labels, train_settings
from external_worker import pipeline
from external_worker.evaluation import chamfer, face_miou
from external_worker.queries.text import query_text
from external_worker.workspace import Workspace


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scene", type=Path, help="scene folder from make_scene.py (default: generate one)")
    parser.add_argument("--workspace", type=Path, help="workspace folder (default: a temporary one)")
    parser.add_argument("--objects", type=int, default=5)
    parser.add_argument("--resolution", type=int, default=128)
    parser.add_argument("--views", type=int, default=60)
    parser.add_argument("--steps", type=int, default=None, help="NeRF steps")
    parser.add_argument("--feature-steps", type=int, default=None)
    parser.add_argument("--mesh-resolution", type=int, default=None)
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="dff_bench_"))
    clock = StageClock()
    scene_dir = args.scene
    if scene_dir is None:
        scene_dir = clock.run("render scene (Cycles)", generated_scene, tmp / "scene", "--objects", str(args.objects),
                              "--resolution", str(args.resolution), "--views", str(args.views))
    ws = Workspace(args.workspace or tmp / "workspace")
    settings = train_settings(steps=args.steps, feature_steps=args.feature_steps, mesh_resolution=args.mesh_resolution)
    clock.run("import", pipeline.import_dataset, scene_dir, ws)
    scene, nerf, mesh = train_labels(ws, settings, clock)

    names = json.loads((scene_dir / "labels.json").read_text())
    probabilities = clock.run("queries (all labels)",
                              lambda: np.stack([query_text(ws, name) for name in names.values()], 1))
    ids = [int(i) for i in names]
    predicted = np.asarray(ids)[probabilities.argmax(1)]
    gt = np.load(scene_dir / "ground_truth.npz")
    miou, per_object = face_miou(mesh.vertices, mesh.faces, predicted, gt["vertices"], gt["faces"],
                                 gt["face_labels"], ids)
    distance, relative = chamfer(mesh.vertices, mesh.faces, gt["vertices"], gt["faces"])

    print("\n== blender_dff pipeline benchmark ==")
    print(f"scene: {scene_dir} ({len(scene.dataset)} views, {scene.dataset.width}x{scene.dataset.height})")
    print(f"held-out PSNR: {nerf['psnr']:.2f} dB (train {nerf['train_psnr']:.2f} dB)")
    print(f"per-face mIoU (labels teacher): {miou:.4f}")
    for label, iou in per_object.items():
        print(f"  {names[str(label)]:>10}: {iou:.4f}")
    print(f"mesh: {len(mesh.faces)} faces, Chamfer {distance:.4f} ({relative * 100:.2f}% of the scene's extent)")
    clock.print_times()
    pipeline_seconds = sum(v for k, v in clock.seconds.items() if "Cycles" not in k)
    print(f"time pipeline total (import..queries): {pipeline_seconds:.1f} s")


if __name__ == "__main__":
    main()
