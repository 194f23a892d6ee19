"""Benchmark one click on a real 360-degree capture against its object masks (ethiopian_head).

Protocol: label only a few training views (head = 1, background = 2, from their masks), train
the pipeline with the `labels` teacher, then from every held-out camera click once at the
centroid of that view's mask. Each selection (faces with probability > 0.5) is rasterised into
every held-out view and compared with the view's mask (2D IoU). The same IoU with every mesh
face selected is the geometry-only baseline: how much of the mask the mesh alone explains.

    python scripts/bench_click_capture.py                     # pipeline defaults at 200 px (about a minute on a GPU)
    python scripts/bench_click_capture.py --aabb-scale 0.5    # a tighter box about the same centre
    python scripts/bench_click_capture.py --overlays DIR      # also write what each click selected
"""

from __future__ import annotations

import argparse
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from tqdm import tqdm

from benchlib import StageClock, iou, train_labels, train_settings
from external_worker import pipeline
from external_worker.errors import WorkerError
from external_worker.geometry.camera import project
from external_worker.mesh.extract import Mesh
from external_worker.queries.click import ClickPrompt
from external_worker.queries.prompt import query_click
from external_worker.workspace import Files, Workspace

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SOURCE = REPO.parent / "shared" / "data" / "ethiopian_head"
HEAD, BACKGROUND = 1, 2
LABEL_NAMES = {HEAD: "head", BACKGROUND: "background"}
NEAR_PLANE = 1e-3  # triangles with a vertex closer than this (or behind the camera) are skipped


def farthest_views(directions: np.ndarray, candidates: np.ndarray, count: int) -> list[int]:
    """`count` of the candidate views whose viewing directions are spread furthest apart
    (greedy farthest-point sampling on the unit sphere, from the first candidate)."""
    unit = directions / np.linalg.norm(directions, axis=1, keepdims=True)
    chosen = [int(candidates[0])]
    closeness = unit[candidates] @ unit[chosen[0]]
    for _ in range(min(count, len(candidates)) - 1):
        pick = int(candidates[int(np.argmin(closeness))])
        chosen.append(pick)
        closeness = np.maximum(closeness, unit[candidates] @ unit[pick])
    return chosen


def mask_centroid(mask: np.ndarray) -> tuple[float, float]:
    """(row, col) image position of the mask's centroid, pixel centres at integer + 0.5."""
    rows, cols = np.nonzero(mask)
    if len(rows) == 0:
        raise WorkerError("empty_mask", "a held-out view's object mask is empty",
                          "Give every view a mask of the object.")
    return float(rows.mean()) + 0.5, float(cols.mean()) + 0.5


def pixel_ray(c2w: np.ndarray, intrinsics: np.ndarray, row: float, col: float) -> tuple[np.ndarray, np.ndarray]:
    """World-frame ray through an image position of an OpenGL camera (x right, y up, looking down -z)."""
    fx, fy, cx, cy = intrinsics
    local = np.array([(col - cx) / fx, -(row - cy) / fy, -1.0])
    direction = c2w[:3, :3] @ local
    return c2w[:3, 3].astype(np.float64), direction / np.linalg.norm(direction)


def face_index_image(vertices: np.ndarray, faces: np.ndarray, c2w: np.ndarray, intrinsics: np.ndarray,
                     width: int, height: int) -> np.ndarray:
    """(height, width) int32 image of the nearest face at each pixel (-1: none), by the painter's
    algorithm: triangles drawn far to near, so nearer ones overwrite. One image serves every
    selection (selected[ids]) and the all-faces baseline (ids >= 0).

    PIL fills the pixels from floor(first) to floor(last) vertex coordinate inclusive; shifting
    by half a pixel makes that the pixels whose centres are covered, give or take one pixel on
    the top and left edges (so render at the masks' full size)."""
    u, v, depth = project(vertices.astype(np.float64), c2w.astype(np.float64), intrinsics.astype(np.float64))
    u, v = u - 0.5, v - 0.5
    tri_u, tri_v, tri_depth = u[faces], v[faces], depth[faces]
    in_front = (tri_depth > NEAR_PLANE).all(1)
    overlaps = (tri_u.max(1) >= 0) & (tri_u.min(1) <= width) & (tri_v.max(1) >= 0) & (tri_v.min(1) <= height)
    drawn = np.flatnonzero(in_front & overlaps)
    drawn = drawn[np.argsort(-tri_depth[drawn].mean(1), kind="stable")]
    image = Image.new("I", (width, height), -1)
    draw = ImageDraw.Draw(image)
    corners = np.stack([tri_u, tri_v], -1)  # (F, 3, 2)
    for face in drawn:
        draw.polygon([tuple(p) for p in corners[face]], fill=int(face))
    return np.asarray(image, np.int32)


def decibels(value: float | None) -> str:
    """A PSNR for printing; a resumed run does not know its training PSNR."""
    return "n/a" if value is None else f"{value:.2f} dB"


def read_mask(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("L")) > 127


def save_overlay(path: Path, image_path: Path, selected: np.ndarray, mask: np.ndarray) -> None:
    """The photo with selected pixels outside the mask in red and missed mask pixels in blue."""
    with Image.open(image_path) as image:
        pixels = np.asarray(image.convert("RGB")).copy()
    pixels[selected & ~mask] = (255, 0, 0)
    pixels[mask & ~selected] = (0, 0, 255)
    Image.fromarray(pixels).save(path)


def build_dataset(source: Path, out: Path, labelled_stems: list[str]) -> None:
    """An LLFF folder our loader reads: links to the source's poses and 800 px images (as
    `images/`, so any --downscale resizes them), and label maps for the given views only."""
    out.mkdir(parents=True, exist_ok=True)
    for link, target in (("poses_bounds.npy", source / "poses_bounds.npy"), ("images", source / "images_5")):
        if not (out / link).exists():
            (out / link).symlink_to(target.resolve())
    labels_dir = out / "labels" / "images"
    if labels_dir.exists():
        for stale in labels_dir.glob("*.png"):  # a previous run may have labelled other views
            stale.unlink()
    labels_dir.mkdir(parents=True, exist_ok=True)
    for stem in labelled_stems:
        head = read_mask(source / "masks_5" / f"{stem}.png")
        Image.fromarray(np.where(head, HEAD, BACKGROUND).astype(np.uint8), "L").save(labels_dir / f"{stem}.png")
    (out / "labels.json").write_text(json.dumps({str(k): v for k, v in LABEL_NAMES.items()}))


def scale_scene_box(ws: Workspace, factor: float, previous_frame: dict | None) -> None:
    """Shrink (factor < 1) the normalised box about its centre before training. A workspace
    trained in another box cannot be reused: its fields live in that box."""
    state = ws.load_state()
    state["frame"]["scale"] *= factor
    if previous_frame is not None and state["stages"].get("nerf") and previous_frame != state["frame"]:
        raise WorkerError("workspace_in_use", f"the workspace {ws.root} was trained in another scene box",
                          "Pass the --aabb-scale it was trained with, or a new --workspace.")
    ws.save_state(state)


def import_with_labels(args: argparse.Namespace, dataset_dir: Path, ws: Workspace) -> tuple[list[str], list[int]]:
    """Build and import the dataset, labelling `args.labelled` training views spread around the
    object; returns every view's file stem and the labelled views. The split and cameras come
    from the loader itself, so the views are chosen before any label map exists."""
    build_dataset(args.source, dataset_dir, [])
    previous_frame = ws.load_state().get("frame")
    dataset = pipeline.import_dataset(dataset_dir, ws, args.downscale)
    scale_scene_box(ws, args.aabb_scale, previous_frame)
    stems = [Path(name).stem for name in dataset.names]
    labelled = farthest_views(-dataset.c2w[:, :3, 2], np.flatnonzero(dataset.split == "train"), args.labelled)
    build_dataset(args.source, dataset_dir, [stems[i] for i in labelled])
    return stems, labelled


@dataclass
class Click:
    view: int
    query: str              # the label name(s) selected, or the error code of a click that failed
    selected: np.ndarray    # (F,) bool
    ious: np.ndarray        # (held-out views,) 2D IoU of the selection in each


def click_held_out_views(ws: Workspace, mesh: Mesh, scene: pipeline.Scene, stems: list[str], source: Path,
                         overlays: Path | None) -> tuple[list[Click], dict[int, float]]:
    """One click per held-out view at its mask's centroid, each selection scored in every held-out
    view; also the IoU of all mesh faces in each view."""
    cameras = ws.load_npz(Files.CAMERAS)
    held_out = np.flatnonzero(cameras["split"] == "test")
    masks = {i: read_mask(source / "masks_5" / f"{stems[i]}.png") for i in held_out}
    # Clicks and renders at the masks' full size: the loaded images' cameras, scaled up.
    mask_height, mask_width = masks[held_out[0]].shape
    scale = np.array([mask_width / scene.dataset.width, mask_height / scene.dataset.height] * 2)  # fx fy cx cy
    intrinsics = {i: cameras["intrinsics"][i] * scale for i in held_out}
    face_ids = {i: face_index_image(mesh.vertices, mesh.faces, cameras["c2w"][i], intrinsics[i], mask_width,
                                    mask_height) for i in tqdm(held_out, desc="rasterise", unit="view")}
    baseline = {int(i): iou(face_ids[i] >= 0, masks[i]) for i in held_out}
    clicks = []
    for i in held_out:
        try:
            origin, direction = pixel_ray(cameras["c2w"][i], intrinsics[i], *mask_centroid(masks[i]))
            result = query_click(ws, ClickPrompt.single(origin, direction), teacher="labels")
            query, selected = result.query, result.probability > 0.5
        except WorkerError as exc:  # a click that misses the mesh (or has no mask) selects nothing
            query, selected = exc.code, np.zeros(len(mesh.faces), bool)
        rendered = {j: selected[face_ids[j]] & (face_ids[j] >= 0) for j in held_out}
        clicks.append(Click(int(i), query, selected, np.array([iou(rendered[j], masks[j]) for j in held_out])))
        if overlays:
            overlays.mkdir(parents=True, exist_ok=True)
            save_overlay(overlays / f"{stems[i]}.png", source / "images_5" / f"{stems[i]}.jpg", rendered[i], masks[i])
    return clicks, baseline


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE,
                        help="ethiopian_head folder (poses_bounds.npy, images_5/, masks_5/)")
    parser.add_argument("--out", type=Path, help="folder for the built dataset (default: a temporary one)")
    parser.add_argument("--workspace", type=Path, help="workspace folder (default: a temporary one)")
    parser.add_argument("--labelled", type=int, default=3, help="training views given a label map")
    parser.add_argument("--downscale", type=int, default=4, help="train on 800/k px images")
    parser.add_argument("--aabb-scale", type=float, default=1.0,
                        help="scale the scene box (from the LLFF frustums) about its centre")
    parser.add_argument("--steps", type=int, default=None, help="NeRF steps")
    parser.add_argument("--rays", type=int, default=None, help="rays per NeRF step")
    parser.add_argument("--feature-steps", type=int, default=None)
    parser.add_argument("--mesh-resolution", type=int, default=None)
    parser.add_argument("--overlays", type=Path,
                        help="write each held-out view with its click's selection against its mask here")
    args = parser.parse_args()
    if not (args.source / "masks_5").is_dir():
        raise WorkerError("bad_request", f"{args.source} has no masks_5/ folder",
                          "Point --source at the ethiopian_head capture (poses_bounds.npy, images_5/, masks_5/).")

    tmp = Path(tempfile.mkdtemp(prefix="dff_click_bench_"))
    dataset_dir = args.out or tmp / "dataset"
    ws = Workspace(args.workspace or tmp / "workspace")
    settings = train_settings(args.steps, args.rays, args.feature_steps, args.mesh_resolution)
    clock = StageClock()
    stems, labelled = clock.run("build dataset + import", import_with_labels, args, dataset_dir, ws)
    scene, nerf, mesh = train_labels(ws, settings, clock)
    clicks, baseline = clock.run("rasterise + clicks", click_held_out_views, ws, mesh, scene, stems, args.source,
                                 args.overlays)

    n_test = len(baseline)
    print("\n== blender_dff click benchmark: ethiopian_head (real capture) ==")
    print(f"dataset: {dataset_dir} ({len(scene.dataset)} views at {scene.dataset.width}x{scene.dataset.height}, "
          f"{len(scene.dataset) - n_test} train / {n_test} held out)")
    print(f"labelled training views ({len(labelled)}): {', '.join(stems[i] for i in labelled)}")
    print(f"settings: downscale {args.downscale}, aabb scale {args.aabb_scale}, NeRF {settings.nerf.steps} steps x "
          f"{settings.nerf.rays_per_batch} rays, features {settings.features.steps} steps, "
          f"mesh resolution {settings.mesh.resolution}")
    print(f"held-out PSNR: {decibels(nerf.get('psnr'))} (train {decibels(nerf.get('train_psnr'))})")
    print(f"mesh: {len(mesh.faces)} faces")
    print("click from view  -> selected as    faces  IoU there  mean IoU (all held-out)  | all-faces IoU there")
    for position, click in enumerate(clicks):
        print(f"  {stems[click.view]:>12}  -> {click.query:<14} {int(click.selected.sum()):>7}  "
              f"{click.ious[position]:9.3f}  {np.nanmean(click.ious):23.3f}  | {baseline[click.view]:.3f}")
    scores = np.array([click.ious for click in clicks])
    print(f"mean 2D IoU, click selection: {np.nanmean(scores):.4f} (over {scores.size} click x view pairs)")
    print(f"mean 2D IoU, all mesh faces (geometry-only baseline): {np.nanmean(list(baseline.values())):.4f}")
    clock.print_times()
    print(f"time total: {sum(clock.seconds.values()):.1f} s")


if __name__ == "__main__":
    main()
