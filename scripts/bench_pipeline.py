"""Benchmark the headless pipeline on a generated scene with exact ground truth.

By default the scene is a grounded one (make_scene.py --ground: objects on a floor that reaches
past the box, one standing on another, the others touching), as real captures are; `--floating`
renders the objects alone on a transparent background instead.

Prints held-out PSNR, per-face mIoU of the `labels` teacher's segmentation against the
ground-truth mesh (each predicted face takes the label of the nearest ground-truth surface;
area-weighted IoU per object, mean over objects), the same over the faces where objects touch
(contact IoU), mesh Chamfer distance, the surface below the floor and on the box's walls, and
seconds per stage. The ground truth is cropped to the scene box, which is all the mesh can hold.

    python scripts/bench_pipeline.py                      # grounded scene: 5 objects and a floor, 128 px, 60 views
    python scripts/bench_pipeline.py --floating           # the objects alone
    python scripts/bench_pipeline.py --scene DIR          # a make_scene.py output (made there first if missing)
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

from blender_dff.wire.api import PRESETS
from benchlib import StageClock, generated_scene, profile_nerf, train_labels, train_settings
from external_worker import pipeline
from external_worker.config import describe
from external_worker.evaluation import chamfer, contact_miou, crop_to_box, face_miou, stray_area
from external_worker.mesh.stored import mesh_voxel
from external_worker.queries.text import query_text
from external_worker.workspace import Workspace

CONTACT_RADIUS_VOXELS = 3  # a face within this many mesh cells of another object's surface is a contact face


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scene", type=Path, help="scene folder from make_scene.py (default: generate one)")
    parser.add_argument("--floating", action="store_true", help="generate the objects without a floor")
    parser.add_argument("--workspace", type=Path, help="workspace folder (default: a temporary one)")
    parser.add_argument("--objects", type=int, default=5)
    parser.add_argument("--resolution", type=int, default=128)
    parser.add_argument("--views", type=int, default=60)
    parser.add_argument("--preset", choices=PRESETS, help="quality preset (default: standard, for this device)")
    parser.add_argument("--steps", type=int, default=None, help="NeRF steps")
    parser.add_argument("--samples", type=int, default=None, help="full-pass samples a NeRF step aims at")
    parser.add_argument("--feature-steps", type=int, default=None)
    parser.add_argument("--mesh-resolution", type=int, default=None)
    parser.add_argument("--profile", action="store_true", help="also print where a NeRF training step's time goes")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="dff_bench_"))
    clock = StageClock()
    options = ["--objects", str(args.objects), "--resolution", str(args.resolution), "--views", str(args.views)]
    options += [] if args.floating else ["--ground"]
    scene_dir = clock.run("render scene (Cycles)", generated_scene, args.scene or tmp / "scene", *options)
    ws = Workspace(args.workspace or tmp / "workspace")
    settings = train_settings(steps=args.steps, feature_steps=args.feature_steps, mesh_resolution=args.mesh_resolution,
                              preset=args.preset, samples=args.samples)
    print(describe(settings))
    clock.run("import", pipeline.import_dataset, scene_dir, ws)
    scene, nerf, mesh = train_labels(ws, settings, clock)
    if args.profile:
        profile_nerf(ws, settings.nerf.rays_per_batch)

    names = json.loads((scene_dir / "labels.json").read_text())
    probabilities = clock.run("queries (all labels)",
                              lambda: np.stack([query_text(ws, name) for name in names.values()], 1))
    ids = [int(i) for i in names]
    predicted = np.asarray(ids)[probabilities.argmax(1)]
    gt = np.load(scene_dir / "ground_truth.npz")
    box = scene.dataset.aabb.astype(np.float64)
    truth = crop_to_box(gt["vertices"], gt["faces"], gt["face_labels"], box)
    miou, per_object = face_miou(mesh.vertices, mesh.faces, predicted, *truth, ids)
    voxel = mesh_voxel(ws)
    contact, per_contact, contact_share = contact_miou(mesh.vertices, mesh.faces, predicted, *truth, ids,
                                                       radius=CONTACT_RADIUS_VOXELS * voxel)
    distance, relative = chamfer(mesh.vertices, mesh.faces, *truth[:2])
    ground = [int(i) for i, name in names.items() if name == "ground"]
    floor = float(gt["vertices"][np.unique(gt["faces"][gt["face_labels"] == ground[0]])][:, 2].max()) if ground else None
    below, on_walls = stray_area(mesh.vertices, mesh.faces, box, floor, tolerance=2 * voxel)
    true_area = float(np.sum(np.linalg.norm(np.cross(*(truth[0][truth[1]][:, 1:] - truth[0][truth[1]][:, :1])
                                                       .transpose(1, 0, 2)), axis=1)) / 2)

    print("\n== blender_dff pipeline benchmark ==")
    print(f"scene: {scene_dir} ({len(scene.dataset)} views, {scene.dataset.width}x{scene.dataset.height}, "
          f"{'grounded' if ground else 'floating'}, {'unbounded' if scene.dataset.unbounded else 'bounded'})")
    print(f"held-out PSNR: {nerf['psnr']:.2f} dB (train {nerf['train_psnr']:.2f} dB); "
          f"{nerf['mean_rays']:.0f} rays a NeRF step on average, {nerf['seconds'] / settings.nerf.steps:.2f} s a step")
    print(f"per-face mIoU (labels teacher): {miou:.4f}")
    for label, value in per_object.items():
        print(f"  {names[str(label)]:>10}: {value:.4f}   contact {per_contact.get(label, float('nan')):.4f}")
    print(f"contact IoU (faces within {CONTACT_RADIUS_VOXELS} mesh cells of another object, "
          f"{contact_share * 100:.1f}% of the area): {contact:.4f}")
    print(f"mesh: {len(mesh.faces)} faces, Chamfer {distance:.4f} ({relative * 100:.2f}% of the scene's extent)")
    area = float(np.sum(np.linalg.norm(np.cross(*(mesh.vertices[mesh.faces][:, 1:] - mesh.vertices[mesh.faces][:, :1])
                                               .transpose(1, 0, 2)), axis=1)) / 2)
    print(f"surface: {area:.2f} units^2 (truth in the box {true_area:.2f}); below the floor {below:.3f}, "
          f"on the box's walls {on_walls:.3f}")
    clock.print_times()
    pipeline_seconds = sum(v for k, v in clock.seconds.items() if "Cycles" not in k)
    print(f"time pipeline total (import..queries): {pipeline_seconds:.1f} s")


if __name__ == "__main__":
    main()
