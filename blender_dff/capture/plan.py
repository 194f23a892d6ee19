"""The plan of a capture of the open Blender scene: which views (an orbit around the selection,
or the scene's own cameras), at what size, of which objects; `job` renders it."""

from __future__ import annotations

import math
from pathlib import Path

import bpy
import numpy as np
from mathutils import Vector

from ..scene.cameras import IMPORTED_TAG
from .render import GOLDEN_ANGLE, looking_at, orbit

ORBIT_FOV = math.radians(40.0)
BOX_PADDING = 0.1  # fraction of the box size added on each side


def _content(context: bpy.types.Context) -> list[bpy.types.Object]:
    """The meshes to capture: the selected ones, else every visible mesh of the scene (the
    imported cameras and points excluded)."""
    def eligible(obj: bpy.types.Object) -> bool:
        return (obj.type == 'MESH' and obj.visible_get()
                and not obj.get(IMPORTED_TAG))  # the imported cameras and points are not content

    selected = [obj for obj in context.selected_objects if eligible(obj)]
    return selected or [obj for obj in context.scene.objects if eligible(obj)]


def content_box(objects: list[bpy.types.Object]) -> tuple[np.ndarray, np.ndarray]:
    """World-space bounds (low, high) of the objects' bounding-box corners."""
    corners = np.array([tuple(obj.matrix_world @ Vector(c)) for obj in objects for c in obj.bound_box])
    return corners.min(0), corners.max(0)


def horizontal_fov(camera: bpy.types.Camera, width: int, height: int) -> float:
    """The horizontal field of view of a perspective Blender camera rendering `width` x `height`:
    the sensor size applies to the width or the height as the sensor fit says (Auto: the larger)."""
    fit = camera.sensor_fit
    if fit == 'AUTO':
        fit, sensor = ('HORIZONTAL' if width >= height else 'VERTICAL'), camera.sensor_width
    else:
        sensor = camera.sensor_width if fit == 'HORIZONTAL' else camera.sensor_height
    half = sensor / 2 / camera.lens  # tan of the half-angle along the fitted side
    return 2 * math.atan(half if fit == 'HORIZONTAL' else half * width / height)


def plan_capture(context: bpy.types.Context, out: Path, source: str, views: int, resolution: int,
                 samples: int, test_every: int = 8) -> dict:
    """The capture plan `render.py` renders (see its docstring). ORBIT: `views` cameras on the
    upper hemisphere around the content, square images, and a test set between them; SCENE: the
    scene's cameras at the render aspect, every `test_every`-th held out. Raises ValueError when
    there is nothing to capture."""
    objects = _content(context)
    if not objects:
        raise ValueError("nothing to capture: the scene has no visible mesh")
    low, high = content_box(objects)
    aabb = [(low - BOX_PADDING * (high - low)).tolist(), (high + BOX_PADDING * (high - low)).tolist()]
    if source == 'ORBIT':
        target = Vector((low + high) / 2)
        reach = float(np.linalg.norm(high - low)) / 2
        radius = 1.05 * reach / math.sin(ORBIT_FOV / 2)  # the content's sphere fits the view cone
        tests = max(1, views // test_every) if test_every else 0
        matrices = {"train": [looking_at(p, target) for p in orbit(views, target, radius)],
                    # Half a golden angle apart in azimuth: no test camera sits on a train camera.
                    "test": [looking_at(p, target) for p in orbit(tests, target, radius, GOLDEN_ANGLE / 2)]}
        width = height = resolution
        fov = ORBIT_FOV
    else:
        cameras = sorted((obj for obj in context.scene.objects if obj.type == 'CAMERA'
                          and not obj.get(IMPORTED_TAG)),
                         key=lambda obj: obj.name)
        if len(cameras) < 2:
            raise ValueError(f"the scene has {len(cameras)} camera(s); a capture needs several views: "
                             "add cameras or use an orbit")
        if any(obj.data.type != 'PERSP' for obj in cameras):
            raise ValueError("only perspective cameras can be captured; make the scene's cameras perspective")
        render = context.scene.render
        scale = resolution / max(render.resolution_x, render.resolution_y)
        width, height = max(1, round(render.resolution_x * scale)), max(1, round(render.resolution_y * scale))
        fovs = {round(horizontal_fov(obj.data, width, height), 6) for obj in cameras}
        if len(fovs) > 1:
            raise ValueError("the scene's cameras have different fields of view; give them the same lens")
        fov = fovs.pop()
        matrices = {"train": [], "test": []}
        for k, obj in enumerate(cameras):
            matrices["test" if test_every and k % test_every == 0 and len(cameras) >= 16 else "train"].append(obj.matrix_world)
    # Only the content shows: other meshes would stand in the photos outside the box.
    hidden = sorted(obj.name for obj in context.scene.objects if obj.type == 'MESH' and obj not in objects)
    return {"blend": None, "out": str(out), "width": width, "height": height, "samples": samples,
            "camera_angle_x": fov, "aabb": aabb, "hide": hidden,
            "views": {split: [[list(row) for row in m] for m in ms] for split, ms in matrices.items() if ms}}
