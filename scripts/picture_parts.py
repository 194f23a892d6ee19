"""A picture of Separate All: a trained workspace's scene cut into its objects by the add-on's own
operators, the objects pulled apart from the scene's centre, rendered with Cycles (CPU).

    python scripts/picture_parts.py --scene SCENE --workspace WS [--out docs/parts.png]

The workspace must be trained already (bench_pipeline.py or demo.py leave one); Train resumes it
at once. It is used as it is: Separate All writes nothing into it.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import bpy
from mathutils import Matrix, Vector

import blender_dff
from blender_dff import jobs
from blender_dff.scene.parts import PARTS_SUFFIX
from blender_dff.wire.api import BACKGROUND_PART
from blender_dff.worker import session as worker_session
from demo import render, wait_for

REPO = Path(__file__).resolve().parents[1]
SPREAD = 1.2  # each object moves this fraction of its distance from the scene's centre
LIFT = 0.3    # and up by this fraction of the scene's width, so its closed underside shows


def pull_apart(parts: list[bpy.types.Object]) -> tuple[Vector, float]:
    """Move every part but the background away from the centre; the centre and the scene's width."""
    centres = {p.name: sum((p.matrix_world @ v.co for v in p.data.vertices), Vector()) / max(len(p.data.vertices), 1)
               for p in parts}
    objects = [p for p in parts if p.name != BACKGROUND_PART]
    middle = sum((centres[p.name] for p in objects), Vector()) / max(len(objects), 1)
    width = max((centres[p.name] - middle).length for p in objects) * 2 or 1.0
    for part in objects:
        away = centres[part.name] - middle
        away.z = 0.0
        part.location += away * SPREAD + Vector((0.0, 0.0, LIFT * width))
    return middle, width


def camera_looking_at(middle: Vector, width: float) -> Matrix:
    """From above and in front, far enough back for the pulled-apart objects to fit."""
    eye = middle + Vector((1.0, -1.6, 1.2)) * width * 1.6
    return Matrix.Translation(eye) @ (middle - eye).to_track_quat("-Z", "Y").to_matrix().to_4x4()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scene", type=Path, required=True, help="the dataset the workspace was trained on")
    parser.add_argument("--workspace", type=Path, required=True, help="a trained workspace (labels teacher)")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "parts.png")
    args = parser.parse_args()

    bpy.ops.wm.read_homefile(use_empty=True)
    os.environ.setdefault("DFF_WORKER_PYTHON", sys.executable)  # the worker runs with this Python
    blender_dff.register()
    try:
        props = bpy.context.scene.dff
        props.dataset_path, props.workspace_path = str(args.scene.resolve()), str(args.workspace.resolve())
        bpy.ops.dff.import_dataset()
        wait_for(props, "import", lambda: props.n_images > 0 or props.error)
        bpy.ops.dff.train()  # done already: resumes to the mesh at once
        wait_for(props, "train", lambda: not jobs.running(bpy.context.scene))
        mesh = props.mesh_object
        bpy.context.view_layer.objects.active = mesh
        bpy.ops.dff.separate_all()
        wait_for(props, "separate all", lambda: not jobs.running(bpy.context.scene))
        print(props.message)
        parts = list(bpy.data.collections[mesh.name + PARTS_SUFFIX].objects)
        middle, width = pull_apart(parts)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        render(args.out.resolve(), camera_looking_at(middle, width), 35.0, (768, 480))
        print(f"picture: {args.out}")
    finally:
        worker_session.session().shutdown()
        blender_dff.unregister()


if __name__ == "__main__":
    main()
