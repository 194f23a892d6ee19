"""Benchmark selections with an imperfect teacher: label maps corrupted per view the way a real
segmenter errs (boundaries off by a pixel or two, objects missed or merged with a neighbour,
stray blobs; `teachers.imperfect`), at rising corruption levels, on a generated scene with exact
ground truth (make_scene.py --ground: touching objects on a floor).

For each level it prints the corrupted maps' mean 2D IoU against the true maps (what the teacher
scores) next to what the 3D field makes of them:
  - lifting: the `labels` teacher trained on the corrupted maps, each face labelled by its most
    probable label: the field's alone, with the views' votes on the faces, and smoothed along the
    mesh (what the pipeline stores); per-face mIoU against the ground truth (area-weighted);
  - clicks: --clicks clicks per object, each from another held-out view at a point of the object
    it sees, the ideal segmenter (`LabelOracle` on the clean labels features) corrupted at the
    same level standing in for SAM's decoder, carried to --views training views; per-face IoU of
    the whole selected object, mean per object, then over objects.

The workspace needs the NeRF, the mesh and the labels teacher trained (bench_pipeline.py leaves
one); each level distils its field into a scratch copy, leaving the workspace as it was.

    python scripts/bench_quality.py --scene SCENE --workspace WS [--levels 0,0.5,1,1.5,2] [--picture docs/quality.png]
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np

from bench_click import Bench, load_bench
from benchlib import iou, scratch_copy, train_settings
from external_worker import pipeline
from external_worker.evaluation import crop_to_box, nearest_ground_truth_labels
from external_worker.features.face_votes import voted_probability
from external_worker.features.field import face_codes
from external_worker.features.train import load_features
from external_worker.mesh.stored import load_mesh, seen_tolerance
from external_worker.progress import SilentReporter, TqdmReporter
from external_worker.queries.click import ClickPrompt, ViewRenderer, sam_click
from external_worker.queries.faces import load_face_features
from external_worker.queries.prompt import DEFAULT_CLICK_VIEWS
from external_worker.queries.readers import load_reader
from external_worker.teachers.imperfect import Corruption, corrupt_label_map, corrupt_label_maps, label_map_iou
from external_worker.teachers.oracles import LabelOracle
from external_worker.training import device
from external_worker.workspace import Workspace

FEATURE_STAGES = "*features_labels*"  # the labels field and its per-face features: distilled anew per level


def face_truth(bench: Bench, scene_dir: Path, box: np.ndarray) -> np.ndarray:
    """Each face's true label, from the ground truth cut at the scene box (all the mesh can hold)."""
    with np.load(scene_dir / "ground_truth.npz") as gt:
        cut = crop_to_box(gt["vertices"], gt["faces"], gt["face_labels"], box)
    return nearest_ground_truth_labels(bench.geometry.centroids, *cut)


LIFTING_STEPS = ("field alone", "+ votes of the views", "+ smoothing on the mesh")


def lift(workspace: Path, scratch: Path, maps: np.ndarray, feature_steps: int | None) -> dict[str, np.ndarray]:
    """Each face's label id after distilling the labels field from `maps` in place of the
    dataset's label maps, in a scratch copy of the workspace: after each of LIFTING_STEPS (the
    last is what the pipeline stores)."""
    ws = scratch_copy(workspace, scratch, FEATURE_STAGES)
    try:
        scene = pipeline.open_scene(ws)
        scene.dataset.labels = maps
        teacher = pipeline.make_teacher("labels", scene.dataset, device=device())
        pipeline.run_features(scene, teacher, train_settings(feature_steps=feature_steps).features, TqdmReporter())
        reader = load_reader(ws, "labels")
        ids = np.asarray(reader.teacher.class_ids)
        model, _ = load_features(ws, "labels")
        mesh = load_mesh(ws)
        field = face_codes(model, scene.frame.normalise_points(mesh.vertices[mesh.faces].mean(1)))
        train = np.flatnonzero(scene.dataset.split == "train")
        voted = voted_probability(scene.dataset, mesh, field, teacher.targets(scene.dataset, train),
                                  seen_tolerance(ws), SilentReporter())
        steps = (field.rows(), voted, reader.codes.rows())
        return {name: ids[step.argmax(1)] for name, step in zip(LIFTING_STEPS, steps)}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def spread_clicks(bench: Bench, per_object: int, seed: int) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """Up to `per_object` clicks (label, origin, direction) on each object, each from another
    held-out camera, at a random point of the object that camera sees."""
    cameras = bench.cameras
    eyes = cameras["c2w"][cameras["split"] == "test"][:, :3, 3]
    rng = np.random.default_rng(seed)
    clicks = []
    for label in bench.names:
        faces = rng.permutation(np.flatnonzero(bench.truth == label))[:200]
        for eye in eyes:
            for face in faces:
                direction = bench.geometry.centroids[face] - eye
                if bench.geometry.hit(eye, direction)[0] == face:
                    clicks.append((label, eye, direction))
                    break
            if sum(c[0] == label for c in clicks) == per_object:
                break
    return clicks


def click_ious(bench: Bench, clicks: list, oracle: LabelOracle, renderer: ViewRenderer, views: int) -> dict[int, float]:
    """Per-face IoU of the clicks carried to `views` training views, mean per object."""
    scores: dict[int, list[float]] = {}
    for label, eye, direction in clicks:
        probability, _ = sam_click(oracle, renderer, ClickPrompt.single(eye, direction), bench.train_eyes, views)
        scores.setdefault(label, []).append(bench.iou(probability, label))
    return {label: float(np.mean(values)) for label, values in scores.items()}


class ImperfectSegmenter:
    """The corruption the oracle applies to each map it reads a prompt from, keeping the 2D IoU
    of every corrupted map against the map it was given."""

    def __init__(self, corruption: Corruption, seed: int, background: frozenset[int]) -> None:
        self.corruption, self.background = corruption, background
        self.rng = np.random.default_rng(seed)
        self.scores: list[float] = []

    def __call__(self, objects: np.ndarray) -> np.ndarray:
        corrupted = corrupt_label_map(objects, self.corruption, self.rng, self.background)
        self.scores.append(label_map_iou(corrupted[None], objects[None]))
        return corrupted


def per_object(predicted: np.ndarray, bench: Bench) -> dict[int, float]:
    return {label: iou(predicted == label, bench.truth == label, bench.area) for label in bench.names}


def save_curve(path: Path, rows: list[dict]) -> None:
    """The 3D results against the teacher's 2D IoU, the teacher itself as the diagonal."""
    import matplotlib

    rows = sorted(rows, key=lambda row: row["level"])

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    teacher = [row["teacher"] for row in rows]
    figure, axes = plt.subplots(figsize=(6, 4.2), dpi=110)
    axes.plot([0, 1], [0, 1], color="0.7", linestyle="--", label="the teacher itself (y = x)")
    axes.plot(teacher, [row["lifted"] for row in rows], "o-", label="labels lifted to the mesh (x: the maps' 2D IoU)")
    axes.plot([row["segmenter"] for row in rows], [row["clicks"] for row in rows], "s-",
              label="a click carried to 8 views (x: the segmenter's 2D IoU)")
    for row in rows:
        axes.annotate(f"level {row['level']:g}", (row["teacher"], row["lifted"]), textcoords="offset points",
                      xytext=(4, -12), fontsize=7, color="0.4")
    axes.set_xlabel("imperfect teacher: mean 2D IoU against the truth")
    axes.set_ylabel("3D selection: per-face mIoU")
    low = np.nanmin([*teacher, *(row["segmenter"] for row in rows), *(row["clicks"] for row in rows)]) - 0.05
    axes.set_xlim(low, 1.01)
    axes.set_ylim(low, 1.01)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8, loc="lower right")
    axes.set_title("Selections from an imperfect teacher (grounded scene of touching objects)", fontsize=9)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial.png")
    figure.savefig(partial)
    partial.replace(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scene", type=Path, required=True, help="make_scene.py output (ground truth)")
    parser.add_argument("--workspace", type=Path, required=True, help="workspace trained on it (labels teacher)")
    parser.add_argument("--levels", default="0,0.5,1,1.5,2", help="corruption levels (Corruption.at_level)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--background", default="ground", help="label names never missed or merged into")
    parser.add_argument("--views", type=int, default=DEFAULT_CLICK_VIEWS, help="views a click is carried to")
    parser.add_argument("--feature-steps", type=int, default=None, help="distillation steps (default: the preset's)")
    parser.add_argument("--clicks", type=int, default=4, help="clicks per object, each from another held-out view")
    parser.add_argument("--sections", default="lifting,clicks", help="what to measure at each level")
    parser.add_argument("--picture", type=Path, help="write the curve here (PNG)")
    args = parser.parse_args()

    ws = Workspace(args.workspace)
    labels = load_face_features(ws, "labels")
    bench = load_bench(ws, args.scene, labels, repeats=1)
    scene = pipeline.open_scene(ws)
    bench.truth = face_truth(bench, args.scene, scene.dataset.aabb.astype(np.float64))
    names = json.loads((args.scene / "labels.json").read_text())
    background = frozenset(int(i) for i, name in names.items() if name in args.background.split(","))
    train = np.flatnonzero((scene.dataset.split == "train") & scene.dataset.has_labels)
    true_maps = scene.dataset.labels
    renderer = ViewRenderer(bench.geometry, labels.features, labels.background, seen_tolerance(ws))
    scratch = Path(tempfile.mkdtemp(prefix="dff_quality_")) / "workspace"
    spread = spread_clicks(bench, args.clicks, args.seed)

    rows = []
    for level in (float(x) for x in args.levels.split(",")):
        corruption = Corruption.at_level(level)
        row = {"level": level, "lifted": float("nan"), "segmenter": float("nan"), "clicks": float("nan")}
        print(f"\nlevel {level:g} ({corruption}):")
        maps = corrupt_label_maps(true_maps, train, corruption, args.seed, background)
        row["teacher"] = label_map_iou(maps[train], true_maps[train])
        print(f"  teacher (corrupted maps): mean 2D IoU {row['teacher']:.4f}")
        if "lifting" in args.sections:
            for name, predicted in lift(ws.root, scratch, maps, args.feature_steps).items():
                scores = per_object(predicted, bench)
                row["lifted"] = float(np.nanmean(list(scores.values())))  # the last step's is the pipeline's
                print(f"  lifted, {name:>24}: per-face mIoU {row['lifted']:.4f}   "
                      + "  ".join(f"{bench.names[k]} {v:.3f}" for k, v in scores.items()))
        if "clicks" in args.sections:
            # The oracle numbers objects by label index + 1: the background ids move with them.
            segmenter = ImperfectSegmenter(corruption, args.seed,
                                           frozenset(labels.teacher.class_ids.index(i) + 1 for i in background))
            clicks = click_ious(bench, spread, LabelOracle(labels.background, segmenter), renderer, args.views)
            row["segmenter"], row["clicks"] = float(np.nanmean(segmenter.scores)), float(np.mean(list(clicks.values())))
            print(f"  segmenter (corrupted masks of the clicks): mean 2D IoU {row['segmenter']:.4f}")
            print(f"  clicks carried to {args.views} views: per-face mIoU {row['clicks']:.4f}   "
                  + "  ".join(f"{bench.names[k]} {v:.3f}" for k, v in clicks.items()))
        rows.append(row)
        if args.picture:  # after each level: a long run stopped early still leaves its curve so far
            save_curve(args.picture, rows)

    print("\n== blender_dff quality with an imperfect teacher ==")
    print(f"scene: {args.scene} ({len(train)} labelled training views, {len(bench.geometry.faces):,} faces)")
    print("level  teacher 2D IoU  lifted per-face mIoU  segmenter 2D IoU  click per-face mIoU")
    for row in rows:
        print(f"{row['level']:5g}  {row['teacher']:14.4f}  {row['lifted']:20.4f}  {row['segmenter']:16.4f}  "
              f"{row['clicks']:18.4f}")
    if args.picture:
        print(f"curve: {args.picture}")


if __name__ == "__main__":
    main()
