"""Benchmark text queries through a CLIP feature field (DFF).

Prints:
  1. Text query latency over --faces faces, after the text embedding (goal <= 50 ms for 1M faces
     on two CPU cores): against the canonical negatives and within a 10-label set. Faces hold
     64-wide codes of the field's last layer (features.FaceCodes), as the workspace stores them.
  2. The CLIP teacher's time per image (MaskCLIP, --sizes scales) against rendering the same
     feature map from the feature field (quadrature samples given, SAN eq. 6) and against
     computing every face's code (eq. 7, done once per mesh). Random weights unless
     --pretrained: the speed does not depend on them.
  3. 3D mIoU in label-set mode (the DFF protocol: every face takes the most relevant label of
     labels.json; area-weighted IoU against the exact ground truth of a generated scene):
     a. with an ideal text-aligned teacher (each pixel's target is the text embedding of its
        label): what distillation, face codes and relevancy lose with perfect features;
     b. with the real CLIP teacher, when --pretrained is given (open_clip weights, a tag or a
        file); without weights this is skipped, as random weights would only measure chance.

The workspace needs a NeRF and a mesh (bench_pipeline.py leaves one); it is copied, not changed.

    python scripts/bench_text.py --scene SCENE --workspace WS [--clip-model ViT-B-16 --pretrained TAG]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from benchlib import forget_stages, scratch_copy, timed
from blender_dff.wire.api import CLIP_MODEL, TINY_MODEL
from external_worker import pipeline
from external_worker.config import FeatureConfig
from external_worker.evaluation import face_miou
from external_worker.teachers.oracles import LabelTextOracle
from external_worker.features.face_codes import FaceCodes
from external_worker.features.field import FeatureField, face_codes
from external_worker.mesh.stored import load_mesh
from external_worker.progress import TqdmReporter
from external_worker.queries.faces import load_face_features
from external_worker.queries.relevancy import CANONICAL_NEGATIVES, against_negatives, in_label_set
from external_worker.teachers.clip_model import DEFAULT_SIZES, ClipEncoder, load_clip
from external_worker.training import device
from external_worker.workspace import Workspace

FEATURES = "*features_*"  # the files and stages of every teacher's feature field and per-face features


def query_latency(n_faces: int, dim: int, repeats: int) -> None:
    rng = np.random.default_rng(0)
    codes = FaceCodes(rng.random((n_faces, 64), np.float32).astype(np.float16),
                      rng.normal(size=(dim, 64)).astype(np.float32), rng.normal(size=dim).astype(np.float32),
                      rng.uniform(1, 2, n_faces).astype(np.float32))
    texts = rng.normal(size=(11, dim)).astype(np.float32)  # stand-ins for text embeddings
    start = time.perf_counter()
    codes.code_with_one  # the fp32 copy of the codes, made at the first query after loading
    first = time.perf_counter() - start

    negative_names = list(CANONICAL_NEGATIVES)
    queries = iter(range(10**6))

    def negatives_query(cached: bool):
        """A query against the negatives: with their rows cached (a new phrase, as a user types
        one query after another) or not (the first query, or new negatives: new names here)."""
        call = next(queries)
        names = [f"query {call}", *(negative_names if cached else [f"{n} {call}" for n in negative_names])]
        similarity = codes.cosine_named(names, texts[:len(names)])
        return against_negatives(similarity[:1], similarity[1:], 100.0)

    def label_set_query(labels: int, cached: bool):
        call = next(queries)
        names = [f"query {call}", *(f"label {i}" + ("" if cached else f" {call}") for i in range(labels - 1))]
        return in_label_set(codes.cosine_named(names, texts[:labels]), np.arange(labels) == 0, 100.0)

    cold, _ = timed(lambda: negatives_query(False), repeats)
    warm, _ = timed(lambda: negatives_query(True), repeats)
    five_cold, _ = timed(lambda: label_set_query(5, False), repeats)
    five_warm, _ = timed(lambda: label_set_query(5, True), repeats)
    eleven_warm, _ = timed(lambda: label_set_query(11, True), repeats)
    print(f"  {n_faces:,} faces, {dim}-wide features as 64-wide fp16 codes ({codes.code.nbytes / 2**20:.0f} MiB; "
          f"fp16 features would take {n_faces * dim * 2 / 2**20:.0f} MiB)")
    print(f"  fp32 copy of the codes, once per loaded workspace: {first * 1000:.0f} ms")
    print(f"  median of {repeats}, a new phrase with the other phrases' rows cached (uncached):")
    print(f"    vs {len(CANONICAL_NEGATIVES)} negatives {warm * 1000:.1f} ms ({cold * 1000:.1f} ms)   "
          f"in a label set of 5: {five_warm * 1000:.1f} ms ({five_cold * 1000:.1f} ms), "
          f"of 11: {eleven_warm * 1000:.1f} ms")


def teacher_vs_field(encoder: ClipEncoder, height: int, width: int, n_faces: int, repeats: int) -> None:
    image = np.random.default_rng(1).random((height, width, 3)).astype(np.float32)
    teacher_time, dense = timed(lambda: encoder.encode_image(image), repeats)
    rows, cols = dense.shape[1:]
    dev = encoder.device
    field = FeatureField(encoder.dim, FeatureConfig()).to(dev).eval()
    k = FeatureConfig().samples_per_ray
    points = torch.rand(rows * cols, k, 3, device=dev) * 2 - 1
    weights = torch.rand(rows * cols, k, device=dev) / k
    with torch.no_grad():
        render_time, _ = timed(lambda: field.render(points, weights), repeats)
    centroids = np.random.default_rng(2).uniform(-1, 1, (n_faces, 3)).astype(np.float32)
    codes_time, _ = timed(lambda: face_codes(field, centroids), 1)
    print(f"  image {width}x{height}, scales {encoder.sizes} -> {cols}x{rows} cells of {encoder.dim} features")
    print(f"  CLIP teacher (MaskCLIP): {teacher_time * 1000:.0f} ms per image")
    print(f"  feature field, same map ({k} samples per cell): {render_time * 1000:.1f} ms "
          f"({teacher_time / render_time:.0f}x faster)")
    print(f"  per-face codes of {n_faces:,} faces (once per mesh): {codes_time * 1000:.0f} ms")


def label_set_miou(ws: Workspace, scene_dir: Path, names: dict[int, str]) -> tuple[float, dict[int, float]]:
    """Every face takes the label of labels.json it is most relevant to; mIoU against ground truth."""
    label_ids = sorted(names)
    ff = load_face_features(ws, "clip")
    encoder = ff.teacher.encoder
    similarity = ff.features.cosine(encoder.encode_text([names[i] for i in label_ids]).cpu().numpy())
    predicted = np.asarray(label_ids)[similarity.argmax(0)]
    mesh = load_mesh(ws)
    with np.load(scene_dir / "ground_truth.npz") as gt:
        return face_miou(mesh.vertices, mesh.faces, predicted, gt["vertices"], gt["faces"], gt["face_labels"],
                         label_ids)


def print_miou(names: dict[int, str], miou: float, per_object: dict[int, float], note: str) -> None:
    print("     " + "  ".join(f"{names[k]} {v:.3f}" for k, v in per_object.items()))
    print(f"     mIoU {miou:.4f}   ({note})")


def distil(ws: Workspace, teacher, steps: int, oracle_names: dict[int, str] | None) -> float:
    scene = pipeline.open_scene(ws)
    if oracle_names is not None:
        teacher.targets = LabelTextOracle(teacher.encoder, oracle_names).targets
    start = time.perf_counter()
    pipeline.run_features(scene, teacher, replace(FeatureConfig(), steps=steps), TqdmReporter())
    return time.perf_counter() - start


def timed_model(model_name: str, pretrained: str) -> tuple[torch.nn.Module, object]:
    """The CLIP whose speed sections 1 and 2 measure: with its weights when given, else with random
    ones of the same architecture, built here on purpose (the speed does not depend on them, and
    the worker refuses a random CLIP other than tiny)."""
    if pretrained or model_name == TINY_MODEL:
        return load_clip(model_name, pretrained)
    import open_clip

    return open_clip.create_model(model_name).eval(), open_clip.get_tokenizer(model_name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scene", type=Path, required=True, help="generated scene (labels.json, ground_truth.npz)")
    parser.add_argument("--workspace", type=Path, required=True, help="workspace with a NeRF and a mesh of the scene")
    parser.add_argument("--clip-model", default=CLIP_MODEL)
    parser.add_argument("--pretrained", default="", help="open_clip tag or checkpoint file (for section 3b)")
    parser.add_argument("--sizes", default=",".join(map(str, DEFAULT_SIZES)), help="MaskCLIP scales (longer side)")
    parser.add_argument("--faces", type=int, default=1_000_000)
    parser.add_argument("--image-size", default="504x378", help="WxH of the image for the teacher timing")
    parser.add_argument("--steps", type=int, default=600, help="feature field steps for section 3")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    names = {int(k): v for k, v in json.loads((args.scene / "labels.json").read_text()).items()}
    sizes = tuple(int(s) for s in args.sizes.split(","))
    width, height = (int(v) for v in args.image_size.split("x"))
    torch.set_grad_enabled(False)

    model, tokenizer = timed_model(args.clip_model, args.pretrained)
    encoder = ClipEncoder(model, tokenizer, args.clip_model, sizes, device())
    weights = args.pretrained or "random weights"
    print(f"device: {device()}  CLIP: {args.clip_model} ({weights}), {encoder.dim}-wide features  "
          f"threads: {torch.get_num_threads()}")

    print("\n1. text query latency, after the text embedding")
    query_latency(args.faces, encoder.dim, args.repeats)

    print("\n2. teacher time per image vs feature-field render")
    teacher_vs_field(encoder, height, width, args.faces, max(1, args.repeats // 2))

    torch.set_grad_enabled(True)
    print("\n3. 3D mIoU in label-set mode (DFF protocol), labels: " + ", ".join(names.values()))
    with tempfile.TemporaryDirectory() as tmp:
        ws = scratch_copy(args.workspace, Path(tmp) / "ws", FEATURES)
        print(f"  a. ideal text-aligned teacher (tiny CLIP's text embeddings), {args.steps} steps")
        tiny = pipeline.make_teacher("clip", pipeline.open_scene(ws).dataset, clip_model="tiny", device=device())
        seconds = distil(ws, tiny, args.steps, names)
        print_miou(names, *label_set_miou(ws, args.scene, names),
                   f"distillation {seconds:.0f} s, {len(load_mesh(ws).faces):,} faces")
        if not args.pretrained:
            print("  b. CLIP teacher: skipped, needs --pretrained (random weights would measure chance)")
            return
        forget_stages(ws, FEATURES)
        teacher = pipeline.make_teacher("clip", pipeline.open_scene(ws).dataset, clip_model=args.clip_model,
                                        clip_pretrained=args.pretrained, device=device())
        print(f"  b. CLIP teacher {args.clip_model} ({args.pretrained}), {args.steps} steps")
        seconds = distil(ws, teacher, args.steps, None)
        print_miou(names, *label_set_miou(ws, args.scene, names), f"teacher + distillation {seconds:.0f} s")


if __name__ == "__main__":
    main()
