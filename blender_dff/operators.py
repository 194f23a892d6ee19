"""Operators of the DFF panels. Those that need the worker send a request and return at once;
the reply is applied later on the main thread by the functions of `cameras`, `mesh_import`
and `selection`, called from the handlers built here."""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Callable, Iterator

import bpy
from bpy.props import StringProperty

from . import cameras, mesh_import, selection, worker_session
from .client import Reply

WORKSPACE_DEFAULT = "dff_workspace"

Apply = Callable[[bpy.types.Context, Reply], str]


class UserError(ValueError):
    """Bad input from the user; the operator reports the message."""


def _folder(path: str, what: str) -> str:
    if not path.strip():
        raise UserError(f"set the {what} folder first")
    return os.path.normpath(os.path.abspath(bpy.path.abspath(path)))


def resolve_paths(props: bpy.types.PropertyGroup) -> tuple[str, str]:
    """(dataset, workspace) as absolute paths; an empty workspace becomes
    <dataset>/dff_workspace, and is stored so the .blend remembers it."""
    dataset = _folder(props.dataset_path, "dataset")
    if not os.path.isdir(dataset):
        raise UserError(f"dataset folder not found: '{dataset}'")
    if not props.workspace_path.strip():
        props.workspace_path = os.path.join(dataset, WORKSPACE_DEFAULT)
    return dataset, _folder(props.workspace_path, "workspace")


def workspace(props: bpy.types.PropertyGroup) -> str:
    """The workspace folder, which an import created (or a run before)."""
    if not props.workspace_path.strip() and props.dataset_path.strip():
        return resolve_paths(props)[1]
    return _folder(props.workspace_path, "workspace")


def _scene(uid: int) -> bpy.types.Scene | None:
    return next((scene for scene in bpy.data.scenes if scene.session_uid == uid), None)


@contextmanager
def _scene_context(scene: bpy.types.Scene) -> Iterator[bpy.types.Context]:
    """A context whose scene is `scene`, even if the user switched scenes meanwhile."""
    context = bpy.context
    if context.scene == scene:
        yield context
        return
    with context.temp_override(scene=scene, view_layer=scene.view_layers[0]):
        yield bpy.context


def _reply_handler(scene: bpy.types.Scene, apply: Apply, *,
                   ends_training: bool = False) -> Callable[[Reply], None]:
    """The on_done callback of a request: apply the reply to `scene` or show its error."""
    uid = scene.session_uid

    def on_done(reply: Reply) -> None:
        target = _scene(uid)
        if target is None:  # the scene was deleted, or another file was loaded
            return
        props = target.dff
        if ends_training:
            props.running = False
        if not reply.ok:
            props.show_error(reply.error or {"code": "unknown", "message": "request failed"})
            _tag_redraw()
            return
        try:
            with _scene_context(target) as context:
                message = apply(context, reply)
        except (ValueError, RuntimeError) as exc:  # bad arrays, or Blender refused a step
            props.show_error({"code": "apply_failed", "message": str(exc)})
        else:
            props.show_message(message)
            # The change happened outside any operator: give it its own undo step, or
            # undoing the next operator would take it away too.
            if bpy.ops.ed.undo_push.poll():
                bpy.ops.ed.undo_push(message=f"DFF: {message}")
        _tag_redraw()

    return on_done


def _progress_handler(scene: bpy.types.Scene) -> Callable[[dict], None]:
    uid = scene.session_uid

    def on_progress(event: dict) -> None:
        target = _scene(uid)
        if target is not None:
            target.dff.update_progress(event)
            _tag_redraw()

    return on_progress


def _tag_redraw() -> None:
    """Redraw the sidebars: replies arrive outside any operator, so nothing else would."""
    for window in bpy.context.window_manager.windows:
        for area in window.screen.areas:
            if area.type == 'VIEW_3D':
                area.tag_redraw()


class _WorkerOperator:
    """Runs `send` (which sends a request and returns), turning user errors and an
    unreachable worker into reports."""

    def execute(self, context: bpy.types.Context) -> set[str]:
        try:
            return self.send(context)
        except (ValueError, worker_session.WorkerUnavailable) as exc:
            self.report({'ERROR'}, str(exc))
            return {'CANCELLED'}

    def send(self, context: bpy.types.Context) -> set[str]:
        raise NotImplementedError


class DFF_OT_import_dataset(_WorkerOperator, bpy.types.Operator):
    """Read the dataset's cameras and labels and create its cameras in the scene"""

    bl_idname = "dff.import_dataset"
    bl_label = "Import Dataset"
    bl_options = {'REGISTER', 'UNDO'}

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        if context.scene.dff.running:
            cls.poll_message_set("Wait for training to finish or cancel it")
            return False
        return True

    def send(self, context: bpy.types.Context) -> set[str]:
        dataset, workspace_dir = resolve_paths(context.scene.dff)
        worker_session.session().submit(
            context, "import_dataset", {"dataset": dataset, "workspace": workspace_dir},
            on_done=_reply_handler(context.scene, cameras.apply_import))
        context.scene.dff.show_message(f"Importing '{dataset}'...")
        return {'FINISHED'}


class DFF_OT_train(_WorkerOperator, bpy.types.Operator):
    """Train the radiance field, extract the mesh and distil the feature field (resumes
    from the workspace's checkpoints)"""

    bl_idname = "dff.train"
    bl_label = "Train"
    bl_options = {'REGISTER', 'UNDO'}

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        if context.scene.dff.running:
            cls.poll_message_set("Training is running")
            return False
        return True

    def send(self, context: bpy.types.Context) -> set[str]:
        props = context.scene.dff
        params = {
            "workspace": workspace(props),
            "nerf_steps": props.nerf_steps,
            "feature_steps": props.feature_steps,
            "mesh_resolution": props.mesh_resolution,
            "teacher": props.teacher,
        }
        worker_session.session().submit(
            context, "train", params,
            on_done=_reply_handler(context.scene, _apply_training, ends_training=True),
            on_progress=_progress_handler(context.scene))
        props.start_progress()
        props.show_message("Training started")
        return {'FINISHED'}


def _apply_training(context: bpy.types.Context, reply: Reply) -> str:
    summary = mesh_import.apply_mesh(context, reply)
    psnr = reply.result.get("psnr")
    return f"Trained (PSNR {psnr:.2f} dB). {summary}" if psnr is not None else summary


class DFF_OT_load_mesh(_WorkerOperator, bpy.types.Operator):
    """Bring in the mesh of an already trained workspace"""

    bl_idname = "dff.load_mesh"
    bl_label = "Load Mesh"
    bl_options = {'REGISTER', 'UNDO'}

    def send(self, context: bpy.types.Context) -> set[str]:
        worker_session.session().submit(
            context, "get_mesh", {"workspace": workspace(context.scene.dff)},
            on_done=_reply_handler(context.scene, mesh_import.apply_mesh))
        return {'FINISHED'}


class DFF_OT_cancel(bpy.types.Operator):
    """Stop training; the workspace keeps the last checkpoint, so Train resumes from it"""

    bl_idname = "dff.cancel"
    bl_label = "Cancel"
    bl_options = {'REGISTER'}

    def execute(self, context: bpy.types.Context) -> set[str]:
        session = worker_session.session()
        request_id = session.find(context.scene, "train")
        if request_id is None:
            context.scene.dff.running = False  # a stale flag, e.g. from a crashed worker
            self.report({'WARNING'}, "No training is running")
            return {'CANCELLED'}
        session.cancel(request_id)
        context.scene.dff.show_message("Cancelling...")
        return {'FINISHED'}


class DFF_OT_select_text(_WorkerOperator, bpy.types.Operator):
    """Select the faces of the DFF mesh that match the text query"""

    bl_idname = "dff.select_text"
    bl_label = "Select"
    bl_options = {'REGISTER', 'UNDO'}

    text: StringProperty(
        name="Text", description="Query to run instead of the panel's (e.g. a label)",
        options={'SKIP_SAVE'})

    def send(self, context: bpy.types.Context) -> set[str]:
        props = context.scene.dff
        if self.text:
            props.query_text = self.text
        query = selection.check_query(props.query_text)
        selection.check_dff_mesh(props.mesh_object)

        def apply(ctx: bpy.types.Context, reply: Reply) -> str:
            return selection.apply_query(ctx, query, reply)

        worker_session.session().submit(
            context, "query_text", {"workspace": workspace(props), "text": query},
            on_done=_reply_handler(context.scene, apply))
        props.show_message(f"Querying '{query}'...")
        return {'FINISHED'}


class DFF_OT_separate(bpy.types.Operator):
    """Move the selected faces of the DFF mesh into a new object named after the query"""

    bl_idname = "dff.separate"
    bl_label = "Separate"
    bl_options = {'REGISTER', 'UNDO'}

    def execute(self, context: bpy.types.Context) -> set[str]:
        props = context.scene.dff
        try:
            obj = selection.check_dff_mesh(props.mesh_object)
            if not props.active_query:
                raise ValueError("no query yet: Select something first")
            part = selection.separate_selection(context, obj, props.active_query)
        except ValueError as exc:
            self.report({'ERROR'}, str(exc))
            return {'CANCELLED'}
        message = f"Separated {len(part.data.polygons)} faces into '{part.name}'"
        props.show_message(message)
        self.report({'INFO'}, message)
        return {'FINISHED'}


_CLASSES = (DFF_OT_import_dataset, DFF_OT_train, DFF_OT_load_mesh, DFF_OT_cancel,
            DFF_OT_select_text, DFF_OT_separate)

register, unregister = bpy.utils.register_classes_factory(_CLASSES)
