"""What the operators that need the worker share. They send a request and return at once; the
reply is applied later on the main thread by the functions of `cameras`, `mesh_import`,
`selection` and `texture`, called from the handlers built here."""

from __future__ import annotations

from collections.abc import Collection
from contextlib import contextmanager
from typing import Callable, Iterator

import bpy

from .. import folders, jobs
from ..scene import images, mesh_import, selection
from ..worker import session as worker_session, state as worker_state
from ..worker.client import Reply
from ..preferences import worker_settings

Apply = Callable[[bpy.types.Context, Reply], str]


def workspace(context: bpy.types.Context) -> str:
    """The scene's workspace folder as the worker must receive it."""
    return folders.workspace(context.scene.dff, worker_settings(context).remote)


def mesh_params(context: bpy.types.Context, obj: bpy.types.Object) -> dict:
    """The workspace and mesh id of a request about `obj`'s faces: those its mesh came from (a
    mesh imported before they were recorded goes to the scene's workspace, unchecked)."""
    mesh = obj.data
    params = {"workspace": mesh.get(mesh_import.WORKSPACE_PROP) or workspace(context)}
    if mesh.get(mesh_import.MESH_ID_PROP):
        params["mesh_id"] = mesh[mesh_import.MESH_ID_PROP]
    return params


def find_scene(uid: int) -> bpy.types.Scene | None:
    """The scene whose session uid is `uid`; None once it was deleted or another file loaded."""
    return next((scene for scene in bpy.data.scenes if scene.session_uid == uid), None)


@contextmanager
def scene_context(scene: bpy.types.Scene) -> Iterator[bpy.types.Context]:
    """A context whose scene is `scene`, even if the user switched scenes meanwhile."""
    context = bpy.context
    if context.scene == scene:
        yield context
        return
    with context.temp_override(scene=scene, view_layer=scene.view_layers[0]):
        yield bpy.context


def reply_handler(scene: bpy.types.Scene, apply: Apply, *, ends_job: bool = False,
                  notices: Collection[str] = ()) -> Callable[[Reply], None]:
    """The on_done callback of a request: apply the reply to `scene` or show its error, and
    with `ends_job` end the scene's job. Errors whose code is in `notices` are outcomes rather
    than failures (a click beside the mesh): they show as a plain message."""
    uid = scene.session_uid

    def on_done(reply: Reply) -> None:
        if ends_job:
            jobs.finish(uid)
        target = find_scene(uid)
        if target is None:  # the scene was deleted, or another file was loaded
            return
        props = target.dff
        if not reply.ok:
            error = reply.error or {"code": "internal", "message": "request failed"}
            if error.get("code") in notices:
                props.show_message(str(error.get("message", "")))
            else:
                props.show_error(error)
            tag_redraw()
            return
        try:
            with scene_context(target) as context:
                message = apply(context, reply)
        except (ValueError, RuntimeError) as exc:  # bad arrays, or Blender refused a step
            props.show_error({"code": "apply_failed", "message": str(exc)})
        else:
            props.show_message(message)
            # The change happened outside any operator: give it its own undo step, or
            # undoing the next operator would take it away too.
            if bpy.ops.ed.undo_push.poll():
                bpy.ops.ed.undo_push(message=f"DFF: {message}")
        tag_redraw()

    return on_done


def progress_handler(scene: bpy.types.Scene, job: jobs.Job) -> Callable[[dict], None]:
    """The on_progress callback of a training or bake request: the job's progress, the
    preview image and the training curve of `scene`."""
    uid = scene.session_uid

    def on_progress(event: dict) -> None:
        job.update(event)
        target = find_scene(uid)
        if target is not None:
            preview = (event.get("arrays") or {}).get("preview")
            if preview is not None:
                images.show_training_preview(target.dff, preview)
            if job.stage == "nerf" and "psnr" in (event.get("metrics") or {}):
                target.dff.record_curve(job.step, job.psnr)
                images.show_training_curve(target.dff)
        tag_redraw()

    return on_progress


def submit_job(context: bpy.types.Context, kind: str, method: str, params: dict, apply: Apply,
               arrays: dict | None = None) -> jobs.Job:
    """Send a long request (training, a bake), with its `arrays`, as the scene's job: its progress
    shows in the panel and the status bar until its reply, and Cancel stops it."""
    scene = context.scene
    if jobs.running(scene):
        raise ValueError(f"{jobs.of(scene).kind} is running: wait for it to finish or cancel it")
    session = worker_session.session()
    job = jobs.Job(kind, cancel=lambda: None)
    request_id = session.submit(context, method, params, on_done=reply_handler(scene, apply, ends_job=True),
                                on_progress=progress_handler(scene, job), arrays=arrays)
    job.cancel = lambda: session.cancel(request_id)
    jobs.add(scene, job)
    return job


def tag_redraw() -> None:
    """Redraw the sidebars: replies arrive outside any operator, so nothing else would."""
    for window in bpy.context.window_manager.windows:
        for area in window.screen.areas:
            if area.type == 'VIEW_3D':
                area.tag_redraw()


def worker_poll(cls: type[bpy.types.Operator], context: bpy.types.Context) -> bool:
    """Poll of the operators that need the worker; greyed out, they say why."""
    problem = worker_state.context_problem(context)
    if problem:
        cls.poll_message_set(f"{problem} (Edit > Preferences > Add-ons > DFF)")
        return False
    return True


def mesh_poll(cls: type[bpy.types.Operator], context: bpy.types.Context) -> bool:
    """Poll of the operators that work on a DFF mesh; greyed out, they say what is missing."""
    try:
        selection.query_target(context)
    except ValueError as exc:
        cls.poll_message_set(str(exc))
        return False
    return True


def dff_mesh_poll(cls: type[bpy.types.Operator], context: bpy.types.Context) -> bool:
    """Poll of the operators that send a DFF mesh's faces to the worker."""
    return mesh_poll(cls, context) and worker_poll(cls, context)


class WorkerOperator:
    """Runs `send` (which sends a request and returns), turning user errors and an
    unreachable worker into reports."""

    poll = classmethod(worker_poll)

    def execute(self, context: bpy.types.Context) -> set[str]:
        try:
            return self.send(context)
        except (ValueError, worker_session.WorkerUnavailable) as exc:
            self.report({'ERROR'}, str(exc))
            return {'CANCELLED'}

    def send(self, context: bpy.types.Context) -> set[str]:
        raise NotImplementedError


class NotWhileTraining:
    """Greys out an operator while training (or a bake) runs; else it needs the worker."""

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        if jobs.running(context.scene):
            cls.poll_message_set(f"{jobs.of(context.scene).kind} is running: wait for it to finish or cancel it")
            return False
        return worker_poll(cls, context)
