"""Command line: every stage scriptable on a workspace folder, or `serve` for the add-on.

    python -m external_worker run --dataset DIR --workspace WS        # all stages
    python -m external_worker import --dataset DIR --workspace WS
    python -m external_worker train --workspace WS [--steps N]
    python -m external_worker mesh --workspace WS [--resolution R] [--out mesh.ply]
    python -m external_worker distill --workspace WS [--teacher labels] [--steps N]
    python -m external_worker query --workspace WS --text mug [--out mug.npy]
    python -m external_worker bake --workspace WS [--size 2048] [--out texture.png]
    python -m external_worker serve [--host 127.0.0.1] [--port 0] [--root DIR] [--exit-with-stdin]
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import secrets
import shutil
import sys
from dataclasses import replace
from pathlib import Path

from blender_dff.wire.api import CLIP_MODEL, CLIP_PRETRAINED, TINY_MODEL

from .datasets.dataset import BOUNDS, TEST_EVERY
from .errors import WorkerError


def _add_common(p: argparse.ArgumentParser, dataset: bool = False) -> None:
    if dataset:
        p.add_argument("--dataset", required=True,
                       help="dataset folder (transforms*.json, COLMAP sparse/0 beside images/, or poses_bounds.npy)")
        p.add_argument("--downscale", type=int, default=1, help="image downscale factor (uses images_N when present)")
        p.add_argument("--test-every", type=int, default=TEST_EVERY,
                       help="hold out every Nth view for evaluation where the format gives no split (0: none)")
        p.add_argument("--bounds", default="auto", choices=BOUNDS,
                       help="auto: from the camera layout; box: all inside the box; unbounded: contract beyond it")
    p.add_argument("--workspace", required=True, help="workspace folder for this scene")


def _add_train(p: argparse.ArgumentParser) -> None:
    p.add_argument("--steps", type=int, default=None, help="NeRF training steps")
    p.add_argument("--rays", type=int, default=None, help="rays per NeRF training step")


def _add_mesh(p: argparse.ArgumentParser) -> None:
    p.add_argument("--resolution", type=int, default=None, help="marching cubes resolution")
    p.add_argument("--max-faces", type=int, default=None, help="decimate to this many faces")


def _add_distill(p: argparse.ArgumentParser) -> None:
    p.add_argument("--teacher", default="labels", choices=["labels", "sam", "clip"], help="2D teacher to distil")
    p.add_argument("--sam-checkpoint", default="", help="segment-anything checkpoint for --teacher sam ('tiny': random weights)")
    p.add_argument("--clip-model", default=CLIP_MODEL,
                   help=f"open_clip model for --teacher clip ('{TINY_MODEL}': random weights, for tests)")
    p.add_argument("--clip-pretrained", default=CLIP_PRETRAINED,
                   help="its pretrained tag (downloaded on first use) or checkpoint file")
    p.add_argument("--feature-steps", type=int, default=None, help="feature field training steps")
    p.add_argument("--augment", default=None, choices=["auto", "on", "off"],
                   help="camera augmentation for feature training (auto: on with CUDA and the sam teacher)")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m external_worker", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="import, train, mesh and distil in one go")
    _add_common(run, dataset=True)
    _add_train(run)
    _add_mesh(run)
    _add_distill(run)
    _add_common(sub.add_parser("import", help="check a dataset and bind a workspace to it"), dataset=True)
    train = sub.add_parser("train", help="train the radiance field")
    _add_common(train)
    _add_train(train)
    mesh = sub.add_parser("mesh", help="extract the mesh")
    _add_common(mesh)
    _add_mesh(mesh)
    mesh.add_argument("--out", type=Path, help="also copy the mesh (.ply with vertex colours) here")
    distill = sub.add_parser("distill", help="distil a teacher into a feature field")
    _add_common(distill)
    _add_distill(distill)
    query = sub.add_parser("query", help="per-face probabilities for a text query")
    _add_common(query)
    query.add_argument("--text", required=True)
    query.add_argument("--teacher", default="labels")
    query.add_argument("--negatives", default=None, help="comma-separated negatives (default: object, things, stuff, texture)")
    query.add_argument("--label-set", default="", help="comma-separated labels: softmax over them instead of negatives")
    query.add_argument("--out", type=Path, help="write float32 per-face values (.npy, mesh face order)")
    bake = sub.add_parser("bake", help="UV-unwrap the mesh and bake the radiance field into a texture")
    _add_common(bake)
    bake.add_argument("--size", type=int, default=2048, help="texture width and height (512, 1024, 2048, 4096)")
    bake.add_argument("--out", type=Path, help="also copy the texture (.png) here")
    serve = sub.add_parser("serve", help="serve the add-on over TCP (token in DFF_WORKER_TOKEN)")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (loopback by default)")
    serve.add_argument("--port", type=int, default=0, help="port (0 picks a free one)")
    serve.add_argument("--root", type=Path, help="only allow dataset/workspace paths inside this folder")
    serve.add_argument("--exit-with-stdin", action="store_true",
                       help="exit (jobs cancelled, checkpoints kept) when stdin closes: the parent that "
                            "spawned the worker with a pipe is gone")
    return parser.parse_args(argv)


def settings_from(args: argparse.Namespace):
    from .config import TrainSettings

    s = TrainSettings()
    if getattr(args, "steps", None):
        s.nerf = replace(s.nerf, steps=args.steps)
    if getattr(args, "rays", None):
        s.nerf = replace(s.nerf, rays_per_batch=args.rays)
    if getattr(args, "resolution", None):
        s.mesh = replace(s.mesh, resolution=args.resolution)
    if getattr(args, "max_faces", None):
        s.mesh = replace(s.mesh, max_faces=args.max_faces)
    if getattr(args, "feature_steps", None):
        s.features = replace(s.features, steps=args.feature_steps)
    if getattr(args, "augment", None):
        s.features = replace(s.features, augment=args.augment)
    s.teacher = getattr(args, "teacher", s.teacher)
    s.sam_checkpoint = getattr(args, "sam_checkpoint", s.sam_checkpoint)
    s.clip_model = getattr(args, "clip_model", s.clip_model)
    s.clip_pretrained = getattr(args, "clip_pretrained", s.clip_pretrained)
    return s


def serve(args: argparse.Namespace) -> None:
    from .server.handlers import make_handlers
    from .server.server import announce_stdout, serve as serve_forever

    token = os.environ.get("DFF_WORKER_TOKEN") or secrets.token_urlsafe(24)
    loopback = args.host == "localhost" or ipaddress.ip_address(args.host).is_loopback
    if not loopback and args.root is None:
        raise WorkerError("bad_request", f"listening on {args.host} needs --root",
                          "Confine the paths a remote client may touch with --root DIR.")
    if not os.environ.get("DFF_WORKER_TOKEN"):
        print(f"token: {token}", file=sys.stderr, flush=True)
    serve_forever(make_handlers(args.root), host=args.host, port=args.port, token=token, announce=announce_stdout,
                  exit_with=sys.stdin.buffer if args.exit_with_stdin else None)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if args.command == "serve":
            serve(args)
            return 0
        import numpy as np

        from . import pipeline
        from .progress import TqdmReporter
        from .queries.relevancy import split_terms
        from .workspace import Files, Workspace, atomic_path
        from .queries.text import query_text

        ws = Workspace(args.workspace)
        reporter = TqdmReporter()
        settings = settings_from(args)
        if args.command in ("import", "run"):
            dataset = pipeline.import_dataset(args.dataset, ws, downscale=args.downscale,
                                              test_every=args.test_every, bounds=args.bounds)
            print(f"imported {len(dataset)} views of {dataset.width}x{dataset.height} into {ws.root}")
        if args.command == "run":
            mesh, summary = pipeline.train_all(ws, settings, reporter)
            print(f"held-out PSNR {summary['psnr']}, mesh {summary['n_faces']} faces: {ws.path(Files.MESH_PLY)}")
        elif args.command != "import":
            scene = pipeline.open_scene(ws) if args.command not in ("query", "bake") else None
            if args.command == "train":
                info = pipeline.run_nerf(scene, settings.nerf, reporter)
                print(f"NeRF: {info.get('step', info.get('steps'))} steps, held-out PSNR {info.get('psnr')}")
            elif args.command == "mesh":
                mesh = pipeline.run_mesh(scene, settings.mesh, reporter)
                print(f"mesh: {len(mesh.vertices)} vertices, {len(mesh.faces)} faces: {ws.path(Files.MESH_PLY)}")
                if args.out:
                    with atomic_path(args.out.resolve()) as tmp:
                        shutil.copyfile(ws.path(Files.MESH_PLY), tmp)
            elif args.command == "distill":
                teacher = pipeline.make_teacher(settings.teacher, scene.dataset, settings.sam_checkpoint,
                                                settings.clip_model, settings.clip_pretrained)
                pipeline.run_features(scene, teacher, settings.features, reporter)
                print(f"feature field '{settings.teacher}' ready")
            elif args.command == "bake":
                pipeline.run_bake(ws, args.size, reporter)
                print(f"texture: {ws.path(Files.texture(args.size))} (UVs in {Files.bake(args.size)})")
                if args.out:
                    with atomic_path(args.out.resolve()) as tmp:
                        shutil.copyfile(ws.path(Files.texture(args.size)), tmp)
            elif args.command == "query":
                negatives = None if args.negatives is None else split_terms(args.negatives, "list of negatives")
                label_set = split_terms(args.label_set, "label set") if args.label_set else None
                probability = query_text(ws, args.text, args.teacher, negatives, label_set)
                print(f"{int((probability > 0.5).sum())} of {len(probability)} faces match '{args.text}'")
                if args.out:
                    with atomic_path(args.out.resolve()) as tmp:
                        with open(tmp, "wb") as f:
                            np.save(f, probability.astype(np.float32))
        reporter.close()
    except WorkerError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        if exc.hint:
            print(f"hint: {exc.hint}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
