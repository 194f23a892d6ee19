"""The one worker client of this Blender session, and the timer that delivers its replies.

bpy is not thread-safe, so replies and progress reach Blender only through `pump()`, on the
main thread: from a `bpy.app.timers` function in the UI, or called directly by tests and
scripts in background mode, where timers do not fire.
"""

from __future__ import annotations

import os
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import bpy
from bpy.app.handlers import persistent

from . import state as worker_state
from .. import jobs
from ..scene import images
from .client import Reply, WorkerClient
from ..preferences import WorkerSettings, worker_settings

POLL_INTERVAL = 0.1  # seconds between two timer polls


class WorkerUnavailable(Exception):
    """The worker cannot be started or reached; the message says why and what to do."""


@dataclass
class Job:
    """A request in flight: what it asked and for which scene (by `session_uid`, which
    survives renames)."""

    method: str
    scene_uid: int


def worker_pythonpath(addon_dir: Path | None = None) -> str:
    """PYTHONPATH for the worker: the folder holding `external_worker` (the add-on folder
    when the extension bundles it, the repository checkout otherwise) and the folder
    holding the `blender_dff` package, whose `wire` package the worker imports."""
    addon_dir = (addon_dir or Path(__file__).parents[1]).resolve()
    paths = [addon_dir] if (addon_dir / "external_worker").is_dir() else []
    paths.append(addon_dir.parent)
    return os.pathsep.join(str(path) for path in paths)


class WorkerSession:
    """Owns the client: starts it on the first request, restarts it after a failure or
    when the preferences change, and tracks the jobs in flight."""

    def __init__(self) -> None:
        self._client: WorkerClient | None = None
        self._settings: WorkerSettings | None = None
        self._pinned = False  # a client given by `use_client` is never replaced
        self.jobs: dict[int, Job] = {}

    def use_client(self, client: WorkerClient) -> None:
        """Use `client` (configured by the caller, e.g. a test double) until `shutdown()`;
        it is started here if it was not yet."""
        self.shutdown()
        self._client, self._pinned = client, True
        if client.state == "idle":
            client.start()

    def submit(
        self,
        context: bpy.types.Context,
        method: str,
        params: dict,
        on_done: Callable[[Reply], None],
        on_progress: Callable[[dict], None] | None = None,
        arrays: dict | None = None,
    ) -> int:
        """Send a request; `on_done` (and `on_progress`) later run on the main thread from
        `pump()`. Raises WorkerUnavailable when the worker cannot be started."""
        client = self._ready_client(worker_settings(context))
        scene_uid = context.scene.session_uid
        request_id = 0  # set below; callbacks only run later, from pump()

        def done(reply: Reply) -> None:
            self.jobs.pop(request_id, None)
            _guarded(on_done, reply)

        def progress(event: dict) -> None:
            _guarded(on_progress, event)

        request_id = client.request(method, params, arrays, on_done=done,
                                    on_progress=progress if on_progress else None)
        self.jobs[request_id] = Job(method, scene_uid)
        _ensure_timer()
        return request_id

    def find(self, scene: bpy.types.Scene, method: str) -> int | None:
        """The id of a `method` job in flight for `scene`, if any."""
        return next((request_id for request_id, job in self.jobs.items()
                     if job.method == method and job.scene_uid == scene.session_uid), None)

    def cancel(self, request_id: int) -> None:
        if self._client is not None:
            self._client.cancel(request_id)

    def pump(self) -> int:
        """Deliver what arrived from the worker; returns the number of events handled."""
        return self._client.poll() if self._client is not None else 0

    def abandon_jobs(self) -> None:
        """Cancel every job: after another .blend is loaded their replies have no target.
        The worker keeps what it trained (a later Train resumes)."""
        for request_id in list(self.jobs):
            self.cancel(request_id)
        self.jobs.clear()

    def shutdown(self) -> None:
        """Close the client (a local worker exits); the next request starts a new one."""
        if self._client is not None:
            self._client.close()
            self._client.poll()  # runs the callbacks of the jobs the close ended
        self._client, self._settings, self._pinned = None, None, False
        self.jobs.clear()

    def _ready_client(self, settings: WorkerSettings) -> WorkerClient:
        client = self._client
        if self._pinned and client is not None:
            return client
        stale = client is None or client.state in ("failed", "closed")
        # Never swap the client under running jobs; new settings apply once they end.
        if stale or (settings != self._settings and not self.jobs):
            if client is not None:
                client.close()
                client.poll()
            self._client, self._settings = make_client(settings), settings
            self._client.start()
        return self._client


def make_client(settings: WorkerSettings) -> WorkerClient:
    problem = worker_state.problem(settings)
    if problem:
        raise WorkerUnavailable(f"{problem} (Edit > Preferences > Add-ons > DFF)")
    if settings.remote:
        return WorkerClient(host=settings.host, port=settings.port, token=settings.token)
    return WorkerClient(python=settings.python, worker_path=worker_pythonpath(),
                        offline=not bpy.app.online_access)


def _guarded(callback: Callable | None, argument: object) -> None:
    """Run a reply callback; a bug in it must not stop the delivery of other replies."""
    if callback is None:
        return
    try:
        callback(argument)
    except Exception:  # noqa: BLE001 -- reported on the console, the session goes on
        traceback.print_exc()


_SESSION = WorkerSession()


def session() -> WorkerSession:
    return _SESSION


def pump() -> int:
    """Deliver pending replies and progress now (background mode has no timers)."""
    return _SESSION.pump()


def user_busy() -> bool:
    """Whether a modal operator other than the add-on's runs (a transform, a knife cut): a reply
    applied now would change the data under it, so the timer waits (at most MAX_DEFER)."""
    return any(not op.bl_idname.startswith("DFF_OT_")
               for window in bpy.context.window_manager.windows for op in window.modal_operators)


MAX_DEFER = 30.0  # seconds; a modal operator that never ends (another add-on's) must not block replies
_deferred_since: float | None = None


def _tick() -> float | None:
    global _deferred_since
    try:
        if user_busy() and (_deferred_since is None or time.monotonic() - _deferred_since < MAX_DEFER):
            _deferred_since = _deferred_since or time.monotonic()
        else:
            _deferred_since = None
            _SESSION.pump()
    except Exception:  # noqa: BLE001 -- a raising timer would be unregistered for good
        traceback.print_exc()
    return POLL_INTERVAL if _SESSION.jobs else None


def _ensure_timer() -> None:
    if not bpy.app.timers.is_registered(_tick):
        bpy.app.timers.register(_tick, first_interval=POLL_INTERVAL, persistent=True)


@persistent
def _on_load_post(*_args: object) -> None:
    _SESSION.abandon_jobs()
    jobs.clear()  # the loaded file's scenes run nothing, whatever ran when it was saved
    for scene in bpy.data.scenes:
        images.restore_icons(scene.dff)


def register() -> None:
    bpy.app.handlers.load_post.append(_on_load_post)


def unregister() -> None:
    if _on_load_post in bpy.app.handlers.load_post:
        bpy.app.handlers.load_post.remove(_on_load_post)
    if bpy.app.timers.is_registered(_tick):
        bpy.app.timers.unregister(_tick)
    _SESSION.shutdown()
    jobs.clear()
