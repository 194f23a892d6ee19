"""Benchmark clicks on a trained workspace of a generated scene (make_scene.py, exact ground truth).

Prints:
  1. `labels` teacher: one click per object from a held-out camera -> per-face IoU of the whole
     object against ground truth (area-weighted), and the click latency.
  2. The 3D part of a SAM click with an ideal 2D segmenter (masks read off the label features):
     per-object IoU from the clicked view alone and carried to --views training views.
  3. SAM click latency (click -> per-face probability), single view and multi-view, with SAM's
     real-size decoder (the checkpoint's, or vit_b's architecture with random weights).
  4. Feature map for a new view: mesh splatting (SAN eq. 7, what clicks use) and volume
     rendering (eq. 6) against SAM's image encoder on one image (SAN reports 52x on a V100).
  5. SAN's mask protocol: a 5 x 5 grid of clicks on every held-out view, SAM's decoder on the
     rendered features vs on the encoder's features, mean mask IoU (SAN: 0.822). Meaningful
     only with --sam-checkpoint; without one the tiny random model runs and the figure is
     wiring only.

The workspace needs the labels teacher trained (bench_pipeline.py leaves one). The `sam`
feature field is distilled into it first when missing (--sam-checkpoint, or the tiny model).

    python scripts/bench_click.py --scene SCENE --workspace WS [--sam-checkpoint sam_vit_h.pth]
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import trimesh
from tqdm import tqdm

from benchlib import iou, timed
from external_worker import pipeline
from external_worker.config import FeatureConfig
from external_worker.evaluation import nearest_ground_truth_labels
from external_worker.teachers.oracles import LabelOracle
from external_worker.features.field import quadrature_samples
from external_worker.features.train import load_features
from external_worker.geometry.raycast import first_hit
from external_worker.mesh.stored import seen_tolerance
from external_worker.nerf.train import load_field
from external_worker.progress import SilentReporter, TqdmReporter
from external_worker.queries.click import ClickPrompt, ViewRenderer, sam_click
from external_worker.queries.faces import FaceFeatures, Geometry, load_face_features, load_geometry
from external_worker.queries.prompt import DEFAULT_CLICK_VIEWS, query_click
from external_worker.teachers.sam_model import SAM_FEATURE_SIZE, SamModel
from external_worker.training import device
from external_worker.workspace import Files, Stages, Workspace


def object_clicks(geometry: Geometry, truth: np.ndarray, eyes: np.ndarray) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """For each object, a click (origin, direction) at the point of its surface nearest to its
    centre (a torus' centre is empty space), from the first held-out camera that sees it."""
    clicks = {}
    for label in np.unique(truth):
        on_object = geometry.centroids[truth == label]
        centre = on_object[np.argmin(np.linalg.norm(on_object - on_object.mean(0), axis=1))]
        for eye in eyes:
            face, _ = first_hit(geometry.vertices, geometry.faces, eye, centre - eye)
            if face >= 0 and truth[face] == label:
                clicks[int(label)] = (eye, centre - eye)
                break
    return clicks


@dataclass
class Bench:
    """What every section clicks on: the workspace's mesh, one click per object from a held-out
    camera, and the ground truth to score a selection against."""

    ws: Workspace
    geometry: Geometry
    area: np.ndarray            # (F,) face areas
    truth: np.ndarray           # (F,) ground-truth label of each face
    cameras: dict               # the workspace's cameras.npz
    train_eyes: np.ndarray      # (N, 3) training camera positions: the views a click is carried to
    clicks: dict[int, tuple[np.ndarray, np.ndarray]]  # label -> (origin, direction)
    names: dict[int, str]
    repeats: int

    def iou(self, probability: np.ndarray, label: int) -> float:
        """Per-face IoU (area-weighted) of the faces over 0.5 against the object `label`."""
        return iou(probability > 0.5, self.truth == label, self.area)


def load_bench(ws: Workspace, scene_dir: Path, labels: FaceFeatures, repeats: int) -> Bench:
    geometry = load_geometry(ws)
    area = trimesh.Trimesh(geometry.vertices, geometry.faces, process=False).area_faces
    with np.load(scene_dir / "ground_truth.npz") as gt:
        truth = nearest_ground_truth_labels(geometry.centroids, gt["vertices"], gt["faces"], gt["face_labels"])
    cameras = ws.load_npz(Files.CAMERAS)
    train_eyes = cameras["c2w"][cameras["split"] == "train"][:, :3, 3]
    test_eyes = cameras["c2w"][cameras["split"] == "test"][:, :3, 3]
    names = dict(zip(labels.teacher.class_ids, labels.teacher.class_names))
    return Bench(ws, geometry, area, truth, cameras, train_eyes, object_clicks(geometry, truth, test_eyes), names,
                 repeats)


def random_sam(model_type: str) -> SamModel:
    """SAM of `model_type`'s architecture with random weights: its speed does not depend on them."""
    from segment_anything import sam_model_registry

    return SamModel(sam_model_registry[model_type]().to(device()))


def real_size_decoder(checkpoint: str) -> tuple[SamModel, str]:
    """SAM with the checkpoint's weights, else vit_b's architecture with random weights: the
    decoder is the same size for every model type, so its timing holds."""
    from external_worker.teachers.sam_model import load_sam

    if checkpoint and checkpoint != "tiny":
        return SamModel(load_sam(Path(checkpoint)).to(device())), checkpoint
    return random_sam("vit_b"), "vit_b architecture, random weights"


def labels_clicks(bench: Bench) -> None:
    print("\n1. labels teacher, one click per object from a held-out view: per-face IoU")
    ious, seconds = [], []
    for label, (eye, direction) in bench.clicks.items():
        t, result = timed(lambda: query_click(bench.ws, ClickPrompt.single(eye, direction), "labels"), bench.repeats)
        ious.append(bench.iou(result.probability, label))
        seconds.append(t)
        print(f"  {bench.names[label]:>10}: IoU {ious[-1]:.4f}  ({t * 1000:.0f} ms)")
    print(f"  mIoU {np.mean(ious):.4f}   click latency median {np.median(seconds) * 1000:.0f} ms")


def ideal_segmenter(bench: Bench, labels: FaceFeatures, views: int) -> None:
    """The 3D part of a SAM click, with perfect 2D masks."""
    print(f"\n2. ideal 2D segmenter: IoU of the clicked view alone vs carried to {views} views")
    renderer = ViewRenderer(bench.geometry, labels.features, labels.background, seen_tolerance(bench.ws))
    oracle = LabelOracle(labels.background)
    single, multi = [], []
    for label, (eye, direction) in bench.clicks.items():
        prompt = ClickPrompt.single(eye, direction)
        one = sam_click(oracle, renderer, prompt, bench.train_eyes, 0)[0]
        many, used = sam_click(oracle, renderer, prompt, bench.train_eyes, views)
        single.append(bench.iou(one, label))
        multi.append(bench.iou(many, label))
        print(f"  {bench.names[label]:>10}: one view {single[-1]:.4f}   {used} views {multi[-1]:.4f}")
    print(f"  mIoU one view {np.mean(single):.4f}   multi-view {np.mean(multi):.4f}")


def sam_click_latency(bench: Bench, decoder: SamModel, decoder_name: str, renderer: ViewRenderer,
                      views: int) -> None:
    print(f"\n3. SAM click latency (decoder: {decoder_name}), median of {bench.repeats} x {len(bench.clicks)} clicks")
    for carried_to in (0, views):
        times = []
        for eye, direction in bench.clicks.values():
            t, (_, used) = timed(lambda: sam_click(decoder, renderer, ClickPrompt.single(eye, direction),
                                                   bench.train_eyes, carried_to), bench.repeats)
            times.append(t)
        label = "single view" if carried_to == 0 else f"carried to {carried_to} views"
        print(f"  {label:>22}: {np.median(times) * 1000:.0f} ms")


def render_vs_encoder(bench: Bench, scene: pipeline.Scene, renderer: ViewRenderer,
                      checkpoint_sam: tuple[str, SamModel] | None, random_types: list[str]) -> None:
    """One feature map of the first held-out view: mesh splatting and volume rendering against
    SAM's image encoder on a 1024 x 1024 image, the checkpoint's or each of `random_types`."""
    print("\n4. one 64 x 64 feature map: rendering vs SAM's image encoder")
    ws, cameras = bench.ws, bench.cameras
    field, grid = load_field(ws)
    model, _ = load_features(ws, "sam")
    c2w_world = cameras["c2w"][cameras["split"] == "test"][0]
    k = cameras["intrinsics"][cameras["split"] == "test"][0]
    cell, rows, cols = feature_grid(scene)
    splat_time, _ = timed(lambda: renderer.feature_map(c2w_world, k / cell, rows, cols), bench.repeats)
    r, c = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    dev = device()
    c2w_norm = torch.from_numpy(scene.frame.normalise_poses(c2w_world[None])).to(dev)
    k_t = torch.from_numpy(k[None].astype(np.float32)).to(dev)
    view = torch.zeros(rows * cols, dtype=torch.long, device=dev)
    row_t = torch.from_numpy(((r.ravel() + 0.5) * cell - 0.5).astype(np.float32)).to(dev)
    col_t = torch.from_numpy(((c.ravel() + 0.5) * cell - 0.5).astype(np.float32)).to(dev)

    @torch.no_grad()
    def volume() -> torch.Tensor:
        points, weights = quadrature_samples(field, grid, c2w_norm, k_t, view, row_t, col_t, 4, SilentReporter())
        return model.render(points, weights)

    volume_time, _ = timed(volume, bench.repeats)
    image = torch.rand(1024, 1024, 3, device=dev)
    encoders = [checkpoint_sam] if checkpoint_sam else [(f"{t} (random weights)", random_sam(t)) for t in random_types]
    print(f"  mesh splatting (eq. 7): {splat_time * 1000:.1f} ms   "
          f"volume rendering (eq. 6): {volume_time * 1000:.1f} ms")
    for name, encoder in encoders:
        encoder_time, _ = timed(lambda: encoder.encode(image), max(1, bench.repeats // 2))
        print(f"  encoder {name}: {encoder_time * 1000:.0f} ms   -> splatting is {encoder_time / splat_time:.0f}x "
              f"faster, volume rendering {encoder_time / volume_time:.0f}x")
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def feature_grid(scene: pipeline.Scene) -> tuple[float, int, int]:
    """Image pixels per cell of SAM's feature map, and its rows and columns for the scene's images."""
    height, width = scene.dataset.height, scene.dataset.width
    cell = max(height, width) / SAM_FEATURE_SIZE
    return cell, int(np.ceil(height / cell)), int(np.ceil(width / cell))


def mask_protocol(scene: pipeline.Scene, sam: FaceFeatures, renderer: ViewRenderer, note: str) -> None:
    """SAN's protocol: SAM's decoder on rendered vs teacher features, 5 x 5 clicks per held-out view."""
    teacher = sam.teacher.model
    height, width = scene.dataset.height, scene.dataset.width
    cell, rows, cols = feature_grid(scene)
    test_views = np.flatnonzero(scene.dataset.split == "test")
    scores = []
    for v in tqdm(test_views, desc="mask IoU vs teacher", leave=False):
        encoded = teacher.encode(scene.dataset.images[v])[0]
        rendered = renderer.feature_map(scene.dataset.c2w[v], scene.dataset.intrinsics[v] / cell, rows, cols)
        for y in (np.arange(5) + 0.5) * height / 5:
            for x in (np.arange(5) + 0.5) * width / 5:
                point = np.array([[x, y]])
                a = teacher.decode(encoded, (height, width), point, np.array([1]))[0][0]
                b = teacher.decode(rendered.to(teacher.device), (height, width), point, np.array([1]))[0][0]
                scores.append(np.nan_to_num(iou(a, b)))  # two empty masks score 0
    print(f"\n5. mask IoU, decoder on rendered vs teacher features (5 x 5 clicks x {len(test_views)} held-out "
          f"views): {np.mean(scores):.3f}{note}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scene", type=Path, required=True, help="make_scene.py output (ground truth)")
    parser.add_argument("--workspace", type=Path, required=True, help="workspace trained on it (labels teacher)")
    parser.add_argument("--sam-checkpoint", default="", help="segment-anything checkpoint (default: tiny model)")
    parser.add_argument("--views", type=int, default=DEFAULT_CLICK_VIEWS, help="views a click is carried to")
    parser.add_argument("--sam-steps", type=int, default=600, help="distillation steps when the sam field is missing")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats per latency figure")
    parser.add_argument("--encoders", default="vit_b,vit_h", help="SAM encoders to time without a checkpoint")
    args = parser.parse_args()
    real_sam = args.sam_checkpoint not in ("", "tiny")

    ws = Workspace(args.workspace)
    labels = load_face_features(ws, "labels")
    bench = load_bench(ws, args.scene, labels, args.repeats)
    print(f"device: {device()}  mesh: {len(bench.geometry.faces):,} faces  objects clicked: {len(bench.clicks)} "
          f"of {len(bench.names)}")
    labels_clicks(bench)
    ideal_segmenter(bench, labels, args.views)

    if not ws.stage(Stages.face_features("sam")).get("done"):
        print(f"\n(distilling the sam teacher into {ws.root}: {args.sam_checkpoint or 'tiny'}, {args.sam_steps} steps)")
        scene = pipeline.open_scene(ws)
        teacher = pipeline.make_teacher("sam", scene.dataset, args.sam_checkpoint or "tiny", device=device())
        pipeline.run_features(scene, teacher, replace(FeatureConfig(), steps=args.sam_steps), TqdmReporter())
    sam = load_face_features(ws, "sam")
    decoder, decoder_name = real_size_decoder(args.sam_checkpoint)
    sam_renderer = ViewRenderer(bench.geometry, sam.features, sam.background, seen_tolerance(ws))
    sam_click_latency(bench, decoder, decoder_name, sam_renderer, args.views)

    scene = pipeline.open_scene(ws)
    render_vs_encoder(bench, scene, sam_renderer, (decoder_name, decoder) if real_sam else None,
                      args.encoders.split(","))
    mask_protocol(scene, sam, sam_renderer, "" if real_sam else " [tiny random model: wiring only]")


if __name__ == "__main__":
    main()
