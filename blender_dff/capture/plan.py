"""Capture the open Blender scene as a dataset: plan the views (an orbit around the selection,
or the scene's own cameras), then render them with Cycles in a background process running
`render.py` on a saved copy of the file, so the UI stays responsive. Progress and the end are
picked up by `pump()` (a timer in the UI; tests call it directly)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import bpy
import numpy as np
from mathutils import Vector

from .render import GOLDEN_ANGLE, looking_at, orbit

CAPTURE_SCRIPT = Path(__file__).with_name("render.py")
ORBIT_FOV = math.radians(40.0)
BOX_PADDING = 0.1  # fraction of the box size added on each side
SKIPPED_COLLECTIONS = ("DFF Cameras",)  # the imported cameras and point cloud are not scene content
POLL_INTERVAL = 0.2


def _content(context: bpy.types.Context) -> list[bpy.types.Object]:
    """The meshes to capture: the selected ones, else every visible mesh of the scene (the
    imported cameras and points excluded)."""
    def eligible(obj: bpy.types.Object) -> bool:
        return (obj.type == 'MESH' and obj.visible_get()
                and not any(c.name in SKIPPED_COLLECTIONS for c in obj.users_collection))

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
                          and not any(c.name in SKIPPED_COLLECTIONS for c in obj.users_collection)),
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


@dataclass
class CaptureJob:
    """A capture rendering in a background process."""

    process: subprocess.Popen
    out: Path
    total: int
    on_done: Callable[[CaptureJob], None]
    on_progress: Callable[[CaptureJob], None]
    rendered: int = 0
    reported: int = 0
    error: str = ""
    _log: list[str] = field(default_factory=list)

    def _read(self) -> None:
        for line in self.process.stdout:  # type: ignore[union-attr]
            words = line.split()
            if len(words) == 3 and words[0] == "rendered":
                self.rendered = int(words[1])
            else:
                self._log = (self._log + [line.rstrip()])[-20:]

    def finished(self) -> bool:
        """Whether the process has ended; sets `error` (with the log's tail) if it failed."""
        code = self.process.poll()
        if code is None:
            return False
        if code != 0 or not (self.out / "transforms_train.json").is_file():
            tail = "\n".join(line for line in self._log if line.strip())[-2000:]
            self.error = f"rendering the capture failed (exit code {code}): {tail}"
        return True


_JOBS: list[CaptureJob] = []


def start_capture(context: bpy.types.Context, plan: dict, on_done: Callable[[CaptureJob], None],
                  on_progress: Callable[[CaptureJob], None]) -> CaptureJob:
    """Save a copy of the file and render `plan` from it in a background process. The Blender
    binary renders when there is one; the bpy module (scripts, tests) renders with this Python."""
    out = Path(plan["out"])
    out.mkdir(parents=True, exist_ok=True)
    blend = out / ".capture.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(blend), copy=True, check_existing=False)
    fd, plan_path = tempfile.mkstemp(prefix=".capture.", suffix=".json", dir=out)
    with os.fdopen(fd, "w") as f:
        json.dump({**plan, "blend": str(blend)}, f)
    binary = bpy.app.binary_path
    if binary:
        command = [binary, "-b", str(blend), "--factory-startup", "--python-exit-code", "1",
                   "--python", str(CAPTURE_SCRIPT), "--", plan_path]
    else:
        command = [sys.executable, str(CAPTURE_SCRIPT), plan_path]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               encoding="utf-8", errors="replace")
    job = CaptureJob(process, out, sum(len(m) for m in plan["views"].values()), on_done, on_progress)
    threading.Thread(target=job._read, daemon=True).start()
    _JOBS.append(job)
    if not bpy.app.timers.is_registered(_tick):
        bpy.app.timers.register(_tick, first_interval=POLL_INTERVAL, persistent=True)
    return job


def _cleanup(job: CaptureJob) -> None:
    for leftover in [job.out / ".capture.blend", job.out / ".capture.blend1", *job.out.glob(".capture.*.json")]:
        leftover.unlink(missing_ok=True)


def pump() -> int:
    """Report progress and finish the captures whose process ended (their callbacks run here, on
    the main thread); returns how many are still rendering."""
    for job in _JOBS:
        if job.rendered != job.reported:
            job.reported = job.rendered
            job.on_progress(job)
    for job in [job for job in _JOBS if job.finished()]:
        _JOBS.remove(job)
        _cleanup(job)
        job.on_done(job)
    return len(_JOBS)


def cancel_all() -> None:
    """Stop every capture (the add-on is being disabled): kill the renders, drop their files."""
    for job in _JOBS:
        job.process.kill()
        job.process.wait()
        _cleanup(job)
    _JOBS.clear()
    if bpy.app.timers.is_registered(_tick):
        bpy.app.timers.unregister(_tick)


def _tick() -> float | None:
    return POLL_INTERVAL if pump() else None
