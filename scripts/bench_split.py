"""Benchmark Separate All (the split) on a grounded generated scene (make_scene.py --ground: objects
on a floor reaching past the box, the cone standing on the cube, the others touching), whose
ground truth is exact.

Prints, per object:
  - IoU of the labels teacher's split against the ground truth (area-weighted per face, each
    face taking the label of the nearest true surface), and the mean over objects;
  - the same for the sam path (the split clicking by itself) with an ideal 2D segmenter
    (teachers.oracles.LabelOracle on the labels features) in place of SAM's decoder: the
    part that best matches each object;
  - whether the object came out watertight, and the Chamfer distance of the closed object to
    its true (closed) surface, as a share of the scene's extent and of the object's;
  - the background's fill: of the true floor within a few voxels of where the object stood,
    the share within a tolerance of the background mesh, before and after filling its holes;
    the tolerance is the reconstruction's own (FloorCover), so 95% means as well covered as
    the floor away from the objects.
And the time of each split. A given workspace is copied first and never written.

    python scripts/bench_split.py                                    # make the scene and train (bench_pipeline.py's way)
    python scripts/bench_split.py --scene SCENE --workspace WS       # a workspace trained with the labels teacher
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import trimesh
from scipy.spatial import cKDTree
from tqdm import tqdm

from benchlib import StageClock, generated_scene, iou, scratch_copy, train_labels, train_settings
from blender_dff.wire.api import BACKGROUND_PART
from external_worker import pipeline
from external_worker.evaluation import chamfer, crop_to_box, nearest_ground_truth_labels
from external_worker.mesh.stored import load_mesh, mesh_voxel
from external_worker.parts.assign import self_prompted
from external_worker.queries.faces import load_face_features
from external_worker.teachers.oracles import LabelOracle
from external_worker.workspace import Workspace

NEAR_VOXELS = 3  # true floor this near an object is where it stood (bench_pipeline's contact radius)
FAR_VOXELS = 10  # true floor farther than this from every object: where nothing was cut
FAR_COVER = 0.95  # the share of that floor the background covers within the tolerance, by definition
FLOOR_SAMPLES = 200_000  # points on the true floor
MESH_SAMPLES = 1_000_000  # points on a mesh (the background, a true object) to measure distances to it
CHAMFER_SAMPLES = 50_000  # points on each object and its truth


class FloorCover:
    """Points on the true floor, and which of them lie within the tolerance of the background
    mesh before and after its holes are filled. The tolerance is what the reconstruction itself
    holds to: the distance within which the background covers FAR_COVER of the floor away from
    every object (more than FAR_VOXELS from one), where nothing was cut or filled."""

    def __init__(self, truth: tuple, floor_label: int, before: trimesh.Trimesh, after: trimesh.Trimesh,
                 voxel: float) -> None:
        vertices, faces, labels = truth
        floor = trimesh.Trimesh(vertices, faces[labels == floor_label], process=False)
        self.points = trimesh.sample.sample_surface(floor, FLOOR_SAMPLES, seed=0)[0]
        self.to_object = {int(label): self._distance(trimesh.Trimesh(vertices, faces[labels == label], process=False),
                                                     FAR_VOXELS * voxel)
                          for label in np.unique(labels) if label != floor_label}
        far = np.min(list(self.to_object.values()), axis=0) > FAR_VOXELS * voxel
        distances = [self._distance(mesh, FAR_VOXELS * voxel) for mesh in (before, after)]
        # At most FAR_VOXELS: a background that far from the floor (a short training run) covers nothing.
        self.tolerance = min(float(np.quantile(distances[0][far], FAR_COVER, method="higher")), FAR_VOXELS * voxel)
        self.covered = [d < self.tolerance for d in distances]
        self.voxel = voxel

    def _distance(self, mesh: trimesh.Trimesh, bound: float) -> np.ndarray:
        """Distance of each floor point to `mesh` (inf beyond `bound`: a far query is slow)."""
        points = trimesh.sample.sample_surface(mesh, MESH_SAMPLES, seed=0)[0]
        return cKDTree(points).query(self.points, distance_upper_bound=bound)[0]

    def near(self, label: int) -> tuple[float, float, int]:
        """Of the floor within NEAR_VOXELS of the true object `label`: the share covered before
        and after filling, and how many points that is."""
        near = self.to_object[label] < NEAR_VOXELS * self.voxel
        if not near.any():
            return float("nan"), float("nan"), 0
        return float(self.covered[0][near].mean()), float(self.covered[1][near].mean()), int(near.sum())


def best_match_iou(face_part: np.ndarray, n_parts: int, truth: np.ndarray, label: int, area: np.ndarray) -> float:
    """IoU of the part (any but the last, the background) that best matches the object `label`."""
    return max((iou(face_part == p, truth == label, area) for p in range(n_parts - 1)), default=0.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scene", type=Path, help="make_scene.py --ground output (default: generate one)")
    parser.add_argument("--workspace", type=Path, help="workspace trained on it with the labels teacher "
                        "(copied; default: train one)")
    parser.add_argument("--objects", type=int, default=5)
    parser.add_argument("--resolution", type=int, default=128)
    parser.add_argument("--views", type=int, default=60)
    parser.add_argument("--steps", type=int, default=None, help="NeRF steps when training (default: the preset's)")
    parser.add_argument("--feature-steps", type=int, default=None)
    parser.add_argument("--mesh-resolution", type=int, default=None)
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="dff_split_"))
    clock = StageClock()
    options = ["--objects", str(args.objects), "--resolution", str(args.resolution), "--views", str(args.views),
               "--ground"]
    scene_dir = clock.run("render scene (Cycles)", generated_scene, args.scene or tmp / "scene", *options)
    if args.workspace:
        ws = scratch_copy(args.workspace, tmp / "workspace")
    else:
        ws = Workspace(tmp / "workspace")
        clock.run("import", pipeline.import_dataset, scene_dir, ws)
        train_labels(ws, train_settings(steps=args.steps, feature_steps=args.feature_steps,
                                        mesh_resolution=args.mesh_resolution), clock)

    split = clock.run("split (labels)", pipeline.run_split, ws, "labels", "", True, True, clock.reporter)
    labels = load_face_features(ws, "labels")
    sam = clock.run("parts (sam path, ideal segmenter)", self_prompted, ws, labels, LabelOracle(labels.background),
                    clock.reporter)

    mesh = load_mesh(ws)
    tm = trimesh.Trimesh(mesh.vertices, mesh.faces, process=False)
    names = {int(k): v for k, v in json.loads((scene_dir / "labels.json").read_text()).items()}
    with np.load(scene_dir / "ground_truth.npz") as gt:
        whole = (gt["vertices"], gt["faces"], gt["face_labels"])
    truth = crop_to_box(*whole, pipeline.open_scene(ws).dataset.aabb.astype(np.float64))
    face_truth = nearest_ground_truth_labels(tm.triangles_center, *truth)
    extent = float(np.linalg.norm(truth[0].max(0) - truth[0].min(0)))
    voxel = mesh_voxel(ws)
    floor = next(label for label, name in names.items() if name == "ground")
    index = {name: i for i, name in enumerate(split.names)}
    background = len(split.names) - 1
    vertices = np.concatenate([mesh.vertices, split.patch_vertices])
    own = mesh.faces[split.face_part == background]
    before = trimesh.Trimesh(vertices, own, process=False)
    after = trimesh.Trimesh(vertices, np.concatenate([own, split.patch_faces[split.patch_part == background]]),
                            process=False)
    cover = FloorCover(truth, floor, before, after, voxel)

    print(f"\n== Separate All: {scene_dir} ({len(mesh.faces):,} faces, voxel {voxel:.4f}) ==")
    print(f"labels split: {', '.join(split.names)}; sam path: {len(sam.names) - 1} objects found")
    print(f"{'object':>10} {'IoU':>7} {'IoU sam':>8} {'closed':>7} {'Chamfer':>8} {'(object)':>9} "
          f"{'floor before':>13} {'after':>7} {'(points)':>9}")
    rows = []
    for label, name in tqdm(sorted(names.items()), desc="scoring", leave=False):
        if label == floor:
            continue
        part = index.get(name, background)
        found = iou(split.face_part == part, face_truth == label, tm.area_faces) if part != background else 0.0
        by_clicks = best_match_iou(sam.face_part, len(sam.names), face_truth, label, tm.area_faces)
        closed = part != background and split.closed[part]
        faces = np.concatenate([mesh.faces[split.face_part == part], split.patch_faces[split.patch_part == part]])
        distance, relative = chamfer(vertices, faces, whole[0], whole[1][whole[2] == label], samples=CHAMFER_SAMPLES)
        shares = cover.near(label)
        rows.append((found, by_clicks, closed, distance / extent, *shares))
        tqdm.write(f"{name:>10} {found:7.4f} {by_clicks:8.4f} {'yes' if closed else 'no':>7} {distance / extent * 100:7.2f}% "
              f"{relative * 100:8.2f}% {shares[0] * 100:12.1f}% {shares[1] * 100:6.1f}% {shares[2]:9d}")
    table = np.array(rows, float)
    print(f"{'mean':>10} {table[:, 0].mean():7.4f} {table[:, 1].mean():8.4f} {int(table[:, 2].sum())}/{len(rows):<5} "
          f"{np.nanmean(table[:, 3]) * 100:7.2f}% {'':>9} {np.nanmean(table[:, 4]) * 100:12.1f}% "
          f"{np.nanmean(table[:, 5]) * 100:6.1f}%")
    print(f"floor tolerance: {cover.tolerance / voxel:.2f} voxels (the floor away from objects: "
          f"{FAR_COVER * 100:.0f}% covered within it)")
    floor_iou = iou(split.face_part == background, face_truth == floor, tm.area_faces)
    print(f"background ({BACKGROUND_PART}) against the true floor: IoU {floor_iou:.4f}")
    clock.print_times()
    if args.workspace:  # a copy (the workspace given stays as it was), and with it a generated scene's folder
        shutil.rmtree(tmp if args.scene else ws.root)
    else:
        print(f"workspace: {ws.root}")


if __name__ == "__main__":
    main()
