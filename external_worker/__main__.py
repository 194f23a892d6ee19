"""Command line: every stage scriptable on a workspace folder, or `serve` for the add-on.

    python -m external_worker run --dataset DIR --workspace WS        # all stages
    python -m external_worker import --dataset DIR --workspace WS
    python -m external_worker train --workspace WS [--steps N]
    python -m external_worker mesh --workspace WS [--resolution R] [--out mesh.ply]
    python -m external_worker distill --workspace WS [--teacher labels] [--steps N]
    python -m external_worker query --workspace WS --text mug [--out mug.npy]
    python -m external_worker bake --workspace WS [--size 2048] [--mesh part.ply] [--out texture.png]
    python -m external_worker split --workspace WS --out DIR [--teacher labels] [--label-set "chair, table"]
    python -m external_worker serve [--host 127.0.0.1] [--port 0] [--root DIR] [--exit-with-stdin]
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import secrets
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from blender_dff.wire.api import (AUGMENT_MODES, BOUNDS, CANONICAL_NEGATIVES, CLIP_MODEL, CLIP_PRETRAINED,
                                  DEFAULT_BOUNDS, DEFAULT_DOWNSCALE, DEFAULT_PRESET, DEFAULT_TEACHER,
                                  DEFAULT_TEXTURE_SIZE, PRESETS, SPLIT, TEACHERS, TEST_EVERY, TEXTURE_SIZES,
                                  TINY_MODEL, TOKEN_ENV)

from .config import describe, from_flat
from .errors import WorkerError

# The stages are imported by the commands that run them: `--help` needs no PyTorch.


def option(*flags: str, **keywords: Any) -> tuple[tuple[str, ...], dict[str, Any]]:
    """One option: the flags and keywords of `add_argument`."""
    return flags, keywords


# Options shared by several commands. A training setting's dest is its flat name (see
# `config.from_flat`); None (not given) keeps the setting's default.
DATASET = (
    option("--dataset", required=True,
           help="dataset folder (transforms*.json, COLMAP sparse/0 beside images/, or poses_bounds.npy)"),
    option("--downscale", type=int, default=DEFAULT_DOWNSCALE,
           help="image downscale factor (uses images_N when present)"),
    option("--test-every", type=int, default=TEST_EVERY,
           help="hold out every Nth view for evaluation where the format gives no split (0: none)"),
    option("--bounds", default=DEFAULT_BOUNDS, choices=BOUNDS,
           help="auto: from the camera layout; box: all inside the box; unbounded: contract beyond it"),
)
WORKSPACE = (option("--workspace", required=True, help="workspace folder for this scene"),)
TRAIN = (
    option("--preset", default=DEFAULT_PRESET, choices=PRESETS,
           help="quality: steps, rays, hash table and mesh resolution chosen for this machine's GPU or CPU "
                "(the options given win)"),
    option("--steps", type=int, dest="nerf_steps", metavar="STEPS", help="NeRF training steps"),
    option("--rays", type=int, dest="rays_per_batch", metavar="RAYS", help="rays per NeRF training step, at most"),
    option("--samples", type=int, dest="samples_per_batch", metavar="SAMPLES",
           help="samples a NeRF training step aims at (fewer rays when each holds many)"),
)
MESH = (
    option("--resolution", type=int, dest="mesh_resolution", metavar="RESOLUTION", help="marching cubes resolution"),
    option("--max-faces", type=int, help="decimate to this many faces"),
)
DISTILL = (
    option("--teacher", default=DEFAULT_TEACHER, choices=TEACHERS, help="2D teacher to distil"),
    option("--sam-checkpoint", default="",
           help=f"segment-anything checkpoint for --teacher sam ('{TINY_MODEL}': random weights)"),
    option("--clip-model", default=CLIP_MODEL,
           help=f"open_clip model for --teacher clip ('{TINY_MODEL}': random weights, for tests)"),
    option("--clip-pretrained", default=CLIP_PRETRAINED,
           help="its pretrained tag (downloaded on first use) or checkpoint file"),
    option("--feature-steps", type=int, help="feature field training steps"),
    option("--augment", choices=AUGMENT_MODES,
           help="camera augmentation for feature training (auto: on with CUDA and the sam teacher)"),
)


def _import(args: argparse.Namespace, ws, reporter) -> None:
    from . import pipeline

    dataset = pipeline.import_dataset(args.dataset, ws, downscale=args.downscale, test_every=args.test_every,
                                      bounds=args.bounds)
    print(f"imported {len(dataset)} views of {dataset.width}x{dataset.height} into {ws.root}")


def _run(args: argparse.Namespace, ws, reporter) -> None:
    from . import pipeline
    from .workspace import Files

    _import(args, ws, reporter)
    settings = from_flat(args)
    print(describe(settings))
    mesh, summary = pipeline.train_all(ws, settings, reporter)
    print(f"held-out PSNR {summary['psnr']}, mesh {summary['n_faces']} faces: {ws.path(Files.MESH_PLY)}")


def _train(args: argparse.Namespace, ws, reporter) -> None:
    from . import pipeline

    settings = from_flat(args)
    print(describe(settings))
    info = pipeline.run_nerf(pipeline.open_scene(ws), settings.nerf, reporter, settings.field)
    print(f"NeRF: {info.get('step', info.get('steps'))} steps, held-out PSNR {info.get('psnr')}")


def _mesh(args: argparse.Namespace, ws, reporter) -> None:
    from . import pipeline
    from .workspace import Files

    mesh = pipeline.run_mesh(pipeline.open_scene(ws), from_flat(args).mesh, reporter)
    print(f"mesh: {len(mesh.vertices)} vertices, {len(mesh.faces)} faces: {ws.path(Files.MESH_PLY)}")
    _copy_out(ws, Files.MESH_PLY, args.out)


def _distill(args: argparse.Namespace, ws, reporter) -> None:
    from . import pipeline
    from .training import device

    scene, settings = pipeline.open_scene(ws), from_flat(args)
    teacher = pipeline.make_teacher(settings.teacher, scene.dataset, settings.sam_checkpoint,
                                    settings.clip_model, settings.clip_pretrained, device=device())
    pipeline.run_features(scene, teacher, settings.features, reporter)
    print(f"feature field '{settings.teacher}' ready")


def _bake(args: argparse.Namespace, ws, reporter) -> None:
    from . import pipeline
    from .mesh.bake import read_triangles
    from .workspace import Files

    triangles = read_triangles(ws.confine.check(args.mesh)) if args.mesh else None
    key = pipeline.bake_key(triangles)
    pipeline.run_bake(ws, args.size, reporter, triangles)
    print(f"texture: {ws.path(Files.texture(args.size, key))} (UVs in {Files.bake(args.size, key)})")
    _copy_out(ws, Files.texture(args.size, key), args.out)


def _query(args: argparse.Namespace, ws, reporter) -> None:
    import numpy as np

    from .queries.relevancy import split_terms
    from .queries.text import query_text
    from .workspace import atomic_path

    negatives = None if args.negatives is None else split_terms(args.negatives, "list of negatives")
    label_set = split_terms(args.label_set, "label set") if args.label_set else None
    probability = query_text(ws, args.text, args.teacher, negatives, label_set)
    print(f"{int((probability > 0.5).sum())} of {len(probability)} faces match '{args.text}'")
    if args.out:
        with atomic_path(ws.confine.check(args.out)) as tmp:
            with open(tmp, "wb") as f:
                np.save(f, probability.astype(np.float32))


def _split(args: argparse.Namespace, ws, reporter) -> None:
    from . import pipeline
    from .mesh.stored import load_mesh
    from .parts.export import LISTING, write_objects

    split = pipeline.run_split(ws, args.teacher, args.label_set, args.close, args.fill_holes, reporter)
    for entry in write_objects(args.out, load_mesh(ws), split, ws.confine):
        state = "closed" if entry["closed"] else "open"
        print(f"{entry['name']}: {entry['faces']} faces + {entry['fill_faces']} filled, {state}: {entry['file']}")
    print(f"listing: {ws.confine.check(args.out) / LISTING}")


def _copy_out(ws, name: str, out: Path | None) -> None:
    """Also copy the workspace's file `name` to `out` (--out), when given."""
    from .workspace import atomic_path

    if out:
        with atomic_path(ws.confine.check(out)) as tmp:
            shutil.copyfile(ws.path(name), tmp)


def on_workspace(run: Callable[[argparse.Namespace, Any, Any], None]) -> Callable[[argparse.Namespace], None]:
    """A command on --workspace: `run(args, workspace, reporter)`, the reporter closed after it."""

    def command(args: argparse.Namespace) -> None:
        from .progress import TqdmReporter
        from .workspace import Workspace

        ws, reporter = Workspace(args.workspace), TqdmReporter()
        run(args, ws, reporter)
        reporter.close()

    return command


def serve(args: argparse.Namespace) -> None:
    from .server.handlers import make_handlers
    from .server.server import announce_stdout, serve as serve_forever

    token = os.environ.get(TOKEN_ENV) or secrets.token_urlsafe(24)
    loopback = args.host == "localhost" or ipaddress.ip_address(args.host).is_loopback
    if not loopback and args.root is None:
        raise WorkerError("bad_request", f"listening on {args.host} needs --root",
                          "Confine the paths a remote client may touch with --root DIR.")
    if not os.environ.get(TOKEN_ENV):
        print(f"token: {token}", file=sys.stderr, flush=True)
    serve_forever(make_handlers(args.root), host=args.host, port=args.port, token=token, announce=announce_stdout,
                  exit_with=sys.stdin.buffer if args.exit_with_stdin else None)


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    options: tuple[tuple[tuple[str, ...], dict[str, Any]], ...]
    run: Callable[[argparse.Namespace], None]


COMMANDS = (
    Command("run", "import, train, mesh and distil in one go",
            DATASET + WORKSPACE + TRAIN + MESH + DISTILL, on_workspace(_run)),
    Command("import", "check a dataset and bind a workspace to it", DATASET + WORKSPACE, on_workspace(_import)),
    Command("train", "train the radiance field", WORKSPACE + TRAIN, on_workspace(_train)),
    Command("mesh", "extract the mesh", WORKSPACE + MESH + (
        option("--out", type=Path, help="also copy the mesh (.ply with vertex colours) here"),
    ), on_workspace(_mesh)),
    Command("distill", "distil a teacher into a feature field", WORKSPACE + DISTILL, on_workspace(_distill)),
    Command("query", "per-face probabilities for a text query", WORKSPACE + (
        option("--text", required=True),
        option("--teacher", default=DEFAULT_TEACHER),
        option("--negatives", default=None,
               help=f"comma-separated negatives (default: {', '.join(CANONICAL_NEGATIVES)})"),
        option("--label-set", default="", help="comma-separated labels: softmax over them instead of negatives"),
        option("--out", type=Path, help="write float32 per-face values (.npy, mesh face order)"),
    ), on_workspace(_query)),
    Command("bake", "UV-unwrap the mesh and bake the radiance field into a texture", WORKSPACE + (
        option("--size", type=int, default=DEFAULT_TEXTURE_SIZE,
               help=f"texture width and height ({', '.join(map(str, TEXTURE_SIZES))})"),
        option("--mesh", type=Path, help="bake this mesh file's triangles (world frame: an object cut from the "
                                         "workspace's mesh, say) on an atlas of their own instead"),
        option("--out", type=Path, help="also copy the texture (.png) here"),
    ), on_workspace(_bake)),
    Command("split", "cut the mesh into objects, each closed, and fill the background's holes", WORKSPACE + (
        option("--out", type=Path, required=True, help="folder for one <name>.ply per object and objects.json"),
        option("--teacher", default=SPLIT["teacher"].default, choices=SPLIT["teacher"].choices,
               help="labels: the dataset's labels; clip: --label-set; sam: objects found by clicking by itself"),
        option("--label-set", default=SPLIT["label_set"].default,
               help="comma-separated names to cut into (clip teacher)"),
        option("--no-close", dest="close", action="store_false", default=SPLIT["close"].default,
               help="leave each object's open border open"),
        option("--no-fill", dest="fill_holes", action="store_false", default=SPLIT["fill_holes"].default,
               help="leave the holes the objects leave in the background open"),
    ), on_workspace(_split)),
    Command("serve", "serve the add-on over TCP (token in DFF_WORKER_TOKEN)", (
        option("--host", default="127.0.0.1", help="address to listen on (loopback by default)"),
        option("--port", type=int, default=0, help="port (0 picks a free one)"),
        option("--root", type=Path, help="only allow dataset/workspace paths inside this folder"),
        option("--exit-with-stdin", action="store_true",
               help="exit (jobs cancelled, checkpoints kept) when stdin closes: the parent that "
                    "spawned the worker with a pipe is gone"),
    ), serve),
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m external_worker", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        sub_parser = sub.add_parser(command.name, help=command.help)
        for flags, keywords in command.options:
            sub_parser.add_argument(*flags, **keywords)
        sub_parser.set_defaults(run=command.run)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        args.run(args)
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
