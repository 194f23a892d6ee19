"""What the add-on's tests share: stand-ins for the worker client and for Blender's UI layout,
meshes and replies to feed the add-on, and reading Blender's data back.

The fixtures built on them (`addon`, `worker`) are in conftest.py.
"""

from __future__ import annotations

import hashlib
import itertools
import time
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Callable

import bpy
import bmesh  # noqa: E402 -- importable only once bpy is

import numpy as np

from blender_dff.worker.client import Reply


@dataclass
class Sent:
    """One request the add-on sent, with the callbacks its replies go to."""

    id: int
    method: str
    params: dict
    arrays: dict
    on_progress: Callable | None
    on_done: Callable | None


@dataclass
class ScriptedClient:
    """Stands in for WorkerClient: records requests; the test decides what comes back."""

    state: str = "ready"
    failure: str | None = None
    sent: list[Sent] = field(default_factory=list)
    cancelled: list[int] = field(default_factory=list)
    _events: list = field(default_factory=list)
    _ids: itertools.count = field(default_factory=lambda: itertools.count(1))

    def start(self) -> None:
        self.state = "ready"

    def request(self, method, params=None, arrays=None, *, on_progress=None, on_done=None):
        sent = Sent(next(self._ids), method, params or {}, arrays or {}, on_progress, on_done)
        self.sent.append(sent)
        return sent.id

    def cancel(self, request_id: int) -> None:
        self.cancelled.append(request_id)

    def progress(self, sent: Sent, event: dict) -> None:
        self._events.append((sent.on_progress, event))

    def reply(self, sent: Sent, reply: Reply) -> None:
        self._events.append((sent.on_done, reply))

    def poll(self) -> int:
        events, self._events = self._events, []
        for callback, payload in events:
            callback(payload)
        return len(events)

    def close(self, timeout: float = 5.0) -> None:
        self.state = "closed"


class RecordingLayout:
    """Stands in for bpy.types.UILayout: records what a draw function puts in it."""

    def __init__(self, log: list | None = None) -> None:
        self.log = [] if log is None else log

    def _child(self, *args, **kwargs) -> RecordingLayout:
        return RecordingLayout(self.log)

    row = column = box = split = grid_flow = _child

    def label(self, text: str = "", icon: str = 'NONE') -> None:
        self.log.append(("label", text, icon))

    def operator(self, idname: str, text: str = "", icon: str = 'NONE') -> SimpleNamespace:
        self.log.append(("operator", idname, text))
        return SimpleNamespace()

    def prop(self, data, name: str, **kwargs) -> None:
        self.log.append(("prop", name))

    def progress(self, factor: float = 0.0, type: str = 'BAR', text: str = "") -> None:
        self.log.append(("progress", factor, text))

    def template_icon(self, **kwargs) -> None:
        self.log.append(("icon",))

    def separator(self, **kwargs) -> None:
        self.log.append(("separator",))

    def labels(self) -> list[str]:
        return [entry[1] for entry in self.log if entry[0] == "label"]

    def operators(self) -> list[str]:
        return [entry[1] for entry in self.log if entry[0] == "operator"]

    def props(self) -> list[str]:
        return [entry[1] for entry in self.log if entry[0] == "prop"]


def cube_arrays(cuts: int = 3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A subdivided, triangulated cube: vertices (V,3), faces (F,3), colours (V,3)."""
    bm = bmesh.new()
    bmesh.ops.create_cube(bm, size=2.0)
    bmesh.ops.subdivide_edges(bm, edges=bm.edges[:], cuts=cuts, use_grid_fill=True)
    bmesh.ops.triangulate(bm, faces=bm.faces[:])
    bm.verts.index_update()
    vertices = np.array([v.co for v in bm.verts], dtype=np.float32)
    faces = np.array([[v.index for v in f.verts] for f in bm.faces], dtype=np.int32)
    bm.free()
    colors = (vertices + 1.0) / 2.0
    return vertices, faces, colors


def mesh_reply(vertices, faces, colors) -> Reply:
    """The worker's reply to train or get_mesh, with an id of the mesh as the worker makes one."""
    mesh_id = hashlib.sha1(np.ascontiguousarray(faces).tobytes()).hexdigest()[:16]
    return Reply(ok=True, result={"psnr": 31.5, "n_faces": len(faces), "teacher": "labels", "mesh_id": mesh_id},
                 arrays={"vertices": vertices, "faces": faces, "vertex_colors": colors})


def query_reply(probability: np.ndarray, **result) -> Reply:
    """The worker's reply to a query: a probability per face, and `result` (the query's name...)."""
    return Reply(ok=True, result={"n_faces": len(probability), **result},
                 arrays={"face_probability": probability.astype(np.float32)})


def read(collection, prop: str, dtype, width: int = 1) -> np.ndarray:
    values = np.empty(len(collection) * width, dtype=dtype)
    collection.foreach_get(prop, values)
    return values.reshape(-1, width) if width > 1 else values


def edit_mode_selection(obj: bpy.types.Object) -> np.ndarray:
    return np.array([face.select for face in bmesh.from_edit_mesh(obj.data).faces])


def pump_until(done: Callable[[], bool], seconds: float = 600.0) -> None:
    """What Blender's timer does between redraws: deliver worker replies on the main thread."""
    from blender_dff.worker import session as worker_session

    deadline = time.monotonic() + seconds
    while not done():
        assert time.monotonic() < deadline, "no reply from the worker in time"
        worker_session.pump()
        time.sleep(0.05)


def slide(value: float) -> None:
    """Move the scene's threshold slider and let it settle (timers do not run here)."""
    from blender_dff.scene import selection

    bpy.context.scene.dff.threshold = value
    selection.settle()
