"""Benchmark Separate All and Link Mesh on a mesh of --faces faces (a triangulated grid brought in
through the add-on's importer, as in bench_threshold.py).

Separate All: a scripted `split` reply cuts the grid into --parts stripes (the last the
background), each closed along its right edge by a fan of patch faces to a new vertex; its
application (`parts.apply_split`, what the reply's timer runs) is timed on the mesh as loaded
(object mode) and after a query (edit mode, with the query's probabilities, heat map, mask and
selection to carry), with the undo step the reply pushes after it. Goal: 5 s for 1M faces.

Link Mesh: another grid of about the same size, just above the first, takes the face index of
the nearest DFF face (`link.link_mesh`).

    .venv/bin/python scripts/bench_separate_all.py [--faces 1000000] [--parts 8]
"""

from __future__ import annotations

import argparse
import time

import bpy
import numpy as np

import blender_dff
from bench_threshold import grid, loaded_grid
from blender_dff.scene import link, parts
from blender_dff.scene.mesh_import import FACE_INDEX_ATTR, build_mesh
from blender_dff.scene.selection import write_query
from blender_dff.worker.client import Reply


def split_reply(faces: np.ndarray, n_parts: int) -> Reply:
    """Stripes of cell columns; each part but the background closed along its right edge."""
    cells = round(np.sqrt(len(faces) / 2))
    column = np.arange(len(faces)) % (cells * cells) % cells
    face_part = (column * n_parts // cells).astype(np.int32)
    patch_faces, patch_part = [], []
    for k in range(n_parts - 1):
        right = column[face_part == k].max() + 1  # the part's last column of vertices
        edge = np.arange(cells + 1) * (cells + 1) + right
        apex = (cells + 1) ** 2 + k  # its patch vertex
        patch_faces.append(np.stack([edge[1:], edge[:-1], np.full(cells, apex)], axis=1))
        patch_part.append(np.full(cells, k))
    xs = np.linspace(-1.0, 1.0, n_parts + 1)[1:-1]
    return Reply(ok=True, result={"names": [f"part {k}" for k in range(n_parts - 1)] + ["background"],
                                  "closed": [True] * (n_parts - 1) + [False]}, arrays={
        "face_part": face_part,
        "patch_vertices": np.stack([xs, np.zeros_like(xs), np.full_like(xs, 0.1)], axis=1).astype(np.float32),
        "patch_colors": np.full((n_parts - 1, 3), 200, np.uint8),
        "patch_faces": np.concatenate(patch_faces), "patch_part": np.concatenate(patch_part)})


def seconds(run) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def time_split(obj: bpy.types.Object, reply: Reply) -> None:
    """Apply the split to `obj` and push the undo step, as the reply handler does; print both,
    then take the parts away and show `obj` again."""
    summary = []
    apply = seconds(lambda: summary.append(parts.apply_split(bpy.context, reply, obj.name)))
    undo = seconds(lambda: bpy.ops.ed.undo_push(message="DFF: Separate All"))
    collection = bpy.data.collections[obj.name + parts.PARTS_SUFFIX]
    made = list(collection.objects)
    assert sum(len(part.data.polygons) for part in made) == len(obj.data.polygons) + len(reply.arrays["patch_faces"])
    print(f"    apply {apply:.2f} s + undo step {undo:.2f} s = {apply + undo:.2f} s: {summary[0]}")
    for part in made:
        bpy.data.meshes.remove(part.data)
    bpy.data.collections.remove(collection)
    obj.hide_set(False)
    obj.hide_render = False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--faces", type=int, default=1_000_000)
    parser.add_argument("--parts", type=int, default=8)
    args = parser.parse_args()

    obj, vertices, faces = loaded_grid(args.faces)
    reply = split_reply(faces, args.parts)
    print(f"{len(obj.data.polygons):,} faces into {args.parts} parts with {len(reply.arrays['patch_faces']):,} "
          f"patch faces, {bpy.app.version_string}")
    print("  Separate All, the mesh as loaded (object mode):")
    time_split(obj, reply)
    probability = np.random.default_rng(0).uniform(0.0, 1.0, len(faces)).astype(np.float32)
    write_query(bpy.context, obj, "bench", probability, 0.5)  # leaves edit mode on, as a reply does
    print("  Separate All after a query (edit mode, the query's attributes carried):")
    time_split(obj, reply)

    own_vertices, own_faces = grid(int(args.faces * 1.1))
    own_vertices[:, 2] += 0.001
    own = bpy.data.objects.new("Own", build_mesh("Own", own_vertices, own_faces))
    bpy.context.scene.collection.objects.link(own)
    own.data.attributes.remove(own.data.attributes[FACE_INDEX_ATTR])
    summary = []
    took = seconds(lambda: summary.append(link.link_mesh(bpy.context, own, obj)))
    print(f"  Link Mesh, {len(own.data.polygons):,} faces onto the {len(obj.data.polygons):,}: {took:.2f} s")
    blender_dff.unregister()


if __name__ == "__main__":
    main()
