"""End-to-end demo in Blender (headless): photos in, a named object out as its own Blender object.

1. renders a labelled scene with scripts/make_scene.py (Cycles, CPU);
2. drives the add-on's own operators as a user would: import the dataset, train (the worker
   process trains the NeRF, extracts the mesh and distils the `labels` feature field), select an
   object by name, separate it, and lift it out of the scene;
3. renders the result with Cycles next to an input photo and saves the .blend.

    python scripts/demo.py [--out demo] [--object monkey] [--quick]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import bpy
from mathutils import Vector
from PIL import Image
from tqdm import tqdm

import blender_dff
from blender_dff import jobs
from benchlib import generated_scene
from blender_dff.worker import session as worker_session

REPO = Path(__file__).resolve().parents[1]


def wait_for(props, what: str, done) -> None:
    """Pump worker replies (Blender's timer does this in the UI) with a progress bar."""
    bar = tqdm(desc=what, total=1.0, bar_format="{desc}: {percentage:3.0f}% {postfix}")
    while not done():
        worker_session.pump()
        job = jobs.of(bpy.context.scene)
        bar.n = job.fraction if job else bar.n
        bar.set_postfix_str(f"{job.title()} {job.details()}" if job else "")
        time.sleep(0.1)
    bar.close()
    if props.error:
        raise SystemExit(f"error: {props.error}\nhint: {props.error_hint}")


def render(path: Path, camera_matrix, lens: float, size: tuple[int, int] = (384, 384)) -> Path:
    """The scene with Cycles (CPU) from a camera at `camera_matrix`, lit by a sun, to `path`."""
    scene = bpy.context.scene
    cam = bpy.data.objects.new("Demo Camera", bpy.data.cameras.new("Demo Camera"))
    scene.collection.objects.link(cam)
    cam.matrix_world = camera_matrix
    cam.data.lens = lens
    scene.camera = cam
    sun = bpy.data.objects.new("Sun", bpy.data.lights.new("Sun", "SUN"))
    sun.data.energy = 3.0
    sun.rotation_euler = (0.6, 0.2, 0.8)
    scene.collection.objects.link(sun)
    world = bpy.data.worlds.new("Demo World")
    world.color = (0.8, 0.8, 0.8)
    scene.world = world
    scene.render.engine = "CYCLES"
    scene.cycles.device = "CPU"
    scene.cycles.samples = 16
    scene.render.resolution_x, scene.render.resolution_y = size
    scene.render.film_transparent = False
    scene.view_settings.view_transform = "Standard"
    for obj in bpy.data.collections["DFF Cameras"].objects:
        obj.hide_render = True
    scene.render.filepath = str(path)
    bpy.ops.render.render(write_still=True)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO / "demo")
    parser.add_argument("--object", default="monkey", help="label to select and separate")
    parser.add_argument("--quick", action="store_true", help="smaller scene and shorter training (~5 min)")
    args = parser.parse_args()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    size = ["--resolution", "64", "--views", "40"] if args.quick else ["--resolution", "128", "--views", "60"]
    scene_dir = generated_scene(out / "scene", *size)

    bpy.ops.wm.read_homefile(use_empty=True)
    # Registered by this script, the add-on has no preferences: its worker runs with this Python.
    os.environ.setdefault("DFF_WORKER_PYTHON", sys.executable)
    blender_dff.register()
    try:
        props = bpy.context.scene.dff
        props.dataset_path, props.workspace_path = str(scene_dir), str(out / "workspace")
        bpy.ops.dff.import_dataset()
        wait_for(props, "import", lambda: props.n_images > 0 or props.error)
        steps = (400, 300, 128) if args.quick else (2000, 600, 256)
        props.custom_settings = True
        props.nerf_steps, props.feature_steps, props.mesh_resolution = steps
        bpy.ops.dff.train()
        wait_for(props, "train", lambda: not jobs.running(bpy.context.scene))
        props.query_text = args.object
        bpy.ops.dff.select_text()
        wait_for(props, "select", lambda: props.active_query == args.object or props.error)
        bpy.ops.dff.separate()
        bpy.ops.object.mode_set(mode="OBJECT")
        part = bpy.data.objects[args.object]
        part.location += Vector((0.0, 0.0, 0.6))  # the separated object is free to move
        camera = bpy.data.collections["DFF Cameras"].objects[0]
        rendered = render(out / "render.png", camera.matrix_world.copy(), camera.data.lens)
        bpy.ops.wm.save_as_mainfile(filepath=str(out / "demo.blend"))
        photo = Image.open(scene_dir / "train" / "r_000.png").convert("RGBA")
        backdrop = Image.new("RGBA", photo.size, (204, 204, 204, 255))
        photo = Image.alpha_composite(backdrop, photo).convert("RGB").resize((384, 384))
        side_by_side = Image.new("RGB", (768, 384))
        side_by_side.paste(photo, (0, 0))
        side_by_side.paste(Image.open(rendered).convert("RGB"), (384, 0))
        side_by_side.save(out / "demo.png")
        print(f"{props.message}\npicture: {out / 'demo.png'}\nblend file: {out / 'demo.blend'}")
    finally:
        worker_session.session().shutdown()
        blender_dff.unregister()


if __name__ == "__main__":
    main()
