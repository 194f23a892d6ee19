"""Benchmark the threshold slider: what one move of it costs on a mesh of --faces faces (a
triangulated grid brought in through the add-on's importer, with a query's probabilities
written as a reply writes them), in object mode and in edit mode.

Prints the face count, then per mode the median and the slowest of --updates calls of
`apply_threshold` (what the slider's update runs while it moves) at thresholds spread over
(0, 1), in milliseconds (goal: 50 ms for 1M faces), and what `settle` costs once the slider
stops (the heat map; in edit mode, everything).

    .venv/bin/python scripts/bench_threshold.py [--faces 1000000] [--updates 10]
"""

from __future__ import annotations

import argparse
import time

import bpy
import numpy as np

import blender_dff
from blender_dff.scene.mesh_import import FACE_INDEX_ATTR, apply_mesh
from blender_dff.scene.selection import apply_threshold, settle, write_query
from blender_dff.worker.client import Reply

QUERY = "bench"


def grid(n_faces: int) -> tuple[np.ndarray, np.ndarray]:
    """A flat square of about `n_faces` triangles (two per cell): vertices (V, 3), faces (F, 3)."""
    cells = max(1, round(np.sqrt(n_faces / 2)))
    xs = np.linspace(-1.0, 1.0, cells + 1, dtype=np.float32)
    x, y = np.meshgrid(xs, xs)
    vertices = np.stack([x.ravel(), y.ravel(), np.zeros(x.size, np.float32)], axis=1)
    corner = (np.arange(cells)[:, None] * (cells + 1) + np.arange(cells)[None, :]).ravel()
    a, b, c, d = corner, corner + 1, corner + cells + 2, corner + cells + 1
    faces = np.concatenate([np.stack([a, b, c], axis=1), np.stack([a, c, d], axis=1)])
    return vertices, faces.astype(np.int32)


def loaded_grid(n_faces: int) -> tuple[bpy.types.Object, np.ndarray, np.ndarray]:
    """A grid of about `n_faces` faces brought in through the add-on's importer, in an empty
    file with the add-on registered: the scene's DFF mesh, its vertices and faces."""
    bpy.ops.wm.read_homefile(use_empty=True)
    blender_dff.register()
    vertices, faces = grid(n_faces)
    apply_mesh(bpy.context, Reply(ok=True, result={}, arrays={
        "vertices": vertices, "faces": faces, "vertex_colors": (vertices + 1) / 2}))
    return bpy.context.scene.dff.mesh_object, vertices, faces


def milliseconds(run) -> float:
    start = time.perf_counter()
    run()
    return 1000 * (time.perf_counter() - start)


def time_updates(obj: bpy.types.Object, mode: str, thresholds: np.ndarray) -> tuple[list[float], list[float]]:
    """Milliseconds of each apply_threshold, with `obj` in `mode`, and of each settle after one."""
    bpy.ops.object.mode_set(mode=mode)
    moves, settles = [], []
    for threshold in thresholds:
        moves.append(milliseconds(lambda: apply_threshold(bpy.context, obj, QUERY, float(threshold))))
        settles.append(milliseconds(settle))
    return moves, settles


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--faces", type=int, default=1_000_000)
    parser.add_argument("--updates", type=int, default=10)
    args = parser.parse_args()

    obj, vertices, faces = loaded_grid(args.faces)
    assert FACE_INDEX_ATTR in obj.data.attributes
    probability = np.random.default_rng(0).uniform(0.0, 1.0, len(faces)).astype(np.float32)
    write_query(bpy.context, obj, QUERY, probability, 0.5)  # leaves edit mode on, as a reply does

    print(f"{len(obj.data.polygons):,} faces, {bpy.app.version_string}")
    thresholds = np.linspace(0.05, 0.95, args.updates)
    for mode in ('OBJECT', 'EDIT'):
        moves, settles = time_updates(obj, mode, thresholds)
        print(f"  {mode.lower()} mode: median {np.median(moves):.1f} ms, max {max(moves):.1f} ms per move; "
              f"settling {np.median(settles):.0f} ms once it stops ({args.updates} updates)")
    blender_dff.unregister()


if __name__ == "__main__":
    main()
