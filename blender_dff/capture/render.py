"""Rendering a Blender scene to a NeRF-synthetic dataset: RGBA views with Cycles on the CPU,
`transforms_train.json` / `transforms_test.json` (camera_angle_x, OpenGL camera-to-world
matrices, the scene box).

Runs wherever bpy does: in the background Blender process the add-on starts for a capture
(`python render.py PLAN.json`, or `blender -b FILE --python render.py -- PLAN.json`), and
in-process for scripts/make_scene.py. A plan is JSON:
{"blend": path or null, "out": folder, "width", "height", "samples", "camera_angle_x",
 "aabb": [[x, y, z], [x, y, z]], "hide": [object names not to render],
 "views": {"train": [4x4, ...], "test": [4x4, ...]}}.
Progress goes to stdout as lines "rendered K N".
"""

from __future__ import annotations

import json
import math
import os
import secrets
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import bpy
from mathutils import Matrix, Vector

GOLDEN_ANGLE = math.pi * (3.0 - math.sqrt(5.0))
ELEVATION_RANGE_DEG = (15.0, 70.0)


def orbit(n: int, target: Vector, radius: float, azimuth_offset: float = 0.0) -> list[Vector]:
    """`n` points on the upper hemisphere around `target`, evenly spread by golden-angle sampling.

    Heights are uniform in sin(elevation), i.e. equal area per camera within the elevation band.
    """
    lo, hi = (math.sin(math.radians(e)) for e in ELEVATION_RANGE_DEG)
    points = []
    for i in range(n):
        z = lo + (hi - lo) * (i + 0.5) / n
        azimuth = azimuth_offset + i * GOLDEN_ANGLE
        ring = math.sqrt(1.0 - z * z)
        points.append(target + radius * Vector((ring * math.cos(azimuth), ring * math.sin(azimuth), z)))
    return points


def looking_at(position: Vector, target: Vector) -> Matrix:
    """Camera-to-world matrix of a camera at `position` looking at `target`, world z up."""
    matrix = (target - position).to_track_quat("-Z", "Y").to_matrix().to_4x4()
    matrix.translation = position
    return matrix


def setup_render(scene: bpy.types.Scene, width: int, height: int, samples: int, seed: int = 0) -> None:
    """Cycles on the CPU, transparent film, a box pixel filter and the Standard view transform,
    so a pixel holds the colour of its own square as a NeRF's ray through it renders it."""
    scene.render.engine = "CYCLES"
    scene.cycles.device = "CPU"
    scene.cycles.samples = samples
    scene.cycles.use_adaptive_sampling = False
    scene.cycles.use_denoising = False
    scene.cycles.seed = seed
    scene.cycles.max_bounces = 4
    scene.cycles.filter_width = 1.0
    scene.render.resolution_x, scene.render.resolution_y = width, height
    scene.render.resolution_percentage = 100
    scene.render.film_transparent = True  # the alpha masks carve the empty space before training
    scene.render.use_persistent_data = True  # keep the synced scene between views
    scene.render.use_file_extension = False
    scene.render.image_settings.file_format = "PNG"
    scene.render.image_settings.color_mode = "RGBA"
    scene.render.image_settings.color_depth = "8"
    for stamp in ("date", "time", "render_time", "frame", "camera", "scene", "filename"):
        setattr(scene.render, f"use_stamp_{stamp}", False)  # no clock in the PNGs: same seed, same bytes
    scene.view_settings.view_transform = "Standard"
    scene.view_settings.look = "None"


def atomic_path(path: Path) -> Path:
    """A fresh temporary file beside `path`, to be moved over it with os.replace. Created as
    open() creates files, so the user's umask sets its mode (mkstemp's are private to the user)."""
    while True:
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
            return tmp
        except FileExistsError:
            continue


def write_json(path: Path, data: object) -> None:
    tmp = atomic_path(path)
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)


@contextmanager
def _quiet_stdout() -> Iterator[None]:
    """Silence Blender's per-render log, printed from C on file descriptor 1."""
    sys.stdout.flush()
    saved = os.dup(1)
    with open(os.devnull, "w") as devnull:
        os.dup2(devnull.fileno(), 1)
    try:
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def render_views(scene: bpy.types.Scene, out: Path, views: dict[str, list[Matrix]], camera_angle_x: float,
                 aabb: list[list[float]], on_view: Callable[[str, int, bpy.types.Object], None] | None = None) -> None:
    """Render each split's camera matrices to `out/<split>/r_<k>.png` with a camera of horizontal
    field of view `camera_angle_x`, then write `out/transforms_<split>.json`. `on_view(split, k,
    camera)` runs after each view (progress, label maps)."""
    data = bpy.data.cameras.new("DFF Capture")
    data.sensor_fit = "HORIZONTAL"
    data.angle = camera_angle_x
    camera = bpy.data.objects.new("DFF Capture", data)
    scene.collection.objects.link(camera)
    previous, scene.camera = scene.camera, camera
    try:
        for split, matrices in views.items():
            (out / split).mkdir(parents=True, exist_ok=True)
            frames = []
            for k, matrix in enumerate(matrices):
                camera.matrix_world = matrix
                bpy.context.view_layer.update()
                path = out / split / f"r_{k:03d}.png"
                tmp = atomic_path(path)
                scene.render.filepath = str(tmp)
                with _quiet_stdout():
                    bpy.ops.render.render(write_still=True, scene=scene.name)
                os.replace(tmp, path)
                frames.append({"file_path": f"./{split}/r_{k:03d}",
                               "transform_matrix": [list(row) for row in camera.matrix_world]})
                if on_view is not None:
                    on_view(split, k, camera)
            write_json(out / f"transforms_{split}.json",
                       {"camera_angle_x": camera_angle_x, "frames": frames, "aabb": aabb})
    finally:
        scene.camera = previous
        bpy.data.objects.remove(camera)
        bpy.data.cameras.remove(data)


def run_plan(plan_path: Path) -> None:
    """Render a capture plan (see the module docstring), printing "rendered K N" per view."""
    plan = json.loads(plan_path.read_text())
    if plan.get("blend") and bpy.data.filepath != plan["blend"]:
        bpy.ops.wm.open_mainfile(filepath=plan["blend"])
    scene = bpy.context.scene
    for name in plan.get("hide", []):
        bpy.data.objects[name].hide_render = True
    setup_render(scene, plan["width"], plan["height"], plan["samples"])
    views = {split: [Matrix(m) for m in matrices] for split, matrices in plan["views"].items()}
    total = sum(len(m) for m in views.values())
    done = 0

    def progress(split: str, k: int, camera: bpy.types.Object) -> None:
        nonlocal done
        done += 1
        print(f"rendered {done} {total}", flush=True)

    render_views(scene, Path(plan["out"]), views, plan["camera_angle_x"], plan["aabb"], progress)


if __name__ == "__main__":
    # After "--" when run by a Blender binary, as the first argument when run by Python.
    args = sys.argv[sys.argv.index("--") + 1:] if "--" in sys.argv else sys.argv[1:]
    run_plan(Path(args[0]))
