"""Operators of the DFF panels. Those that need the worker send a request and return at once;
the reply is applied later on the main thread by the functions of `cameras`, `mesh_import`,
`selection` and `texture`, called from the handlers built here."""

from __future__ import annotations

import os
from collections.abc import Collection
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import bmesh
import bpy
import numpy as np
from bpy.props import StringProperty

from ..scene import cameras, images, mesh_import, selection, texture
from .. import folders
from ..capture import plan as capture_plan
from ..worker import session as worker_session, state as worker_state
from ..worker.client import Reply
from ..folders import UserError
from ..preferences import worker_settings

# Custom property of the DFF mesh: the number of faces of the worker's mesh. A selection is
# sent as one flag per worker face, and the Blender mesh may lack some of them (degenerate
# faces dropped on import, parts separated since).
SIMILAR_QUERY = "similar"

Apply = Callable[[bpy.types.Context, Reply], str]


def workspace(context: bpy.types.Context) -> str:
    """The scene's workspace folder as the worker must receive it."""
    return folders.workspace(context.scene.dff, worker_settings(context).remote)


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


def reply_handler(scene: bpy.types.Scene, apply: Apply, *, ends_training: bool = False,
                   notices: Collection[str] = ()) -> Callable[[Reply], None]:
    """The on_done callback of a request: apply the reply to `scene` or show its error.
    Errors whose code is in `notices` are outcomes rather than failures (a click beside
    the mesh): they show as a plain message."""
    uid = scene.session_uid

    def on_done(reply: Reply) -> None:
        target = _scene(uid)
        if target is None:  # the scene was deleted, or another file was loaded
            return
        props = target.dff
        if ends_training:
            props.running = False
        if not reply.ok:
            error = reply.error or {"code": "unknown", "message": "request failed"}
            if error.get("code") in notices:
                props.show_message(str(error.get("message", "")))
            else:
                props.show_error(error)
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
            preview = (event.get("arrays") or {}).get("preview")
            if preview is not None:
                images.show_training_preview(preview)
            if target.dff.stage == "nerf":
                curve = target.dff.training_curve
                images.show_training_curve([p.step for p in curve], [p.psnr for p in curve])
            _tag_redraw()

    return on_progress


def _tag_redraw() -> None:
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


class _NotWhileTraining:
    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        if context.scene.dff.running:
            cls.poll_message_set("Training is running: wait for it to finish or cancel it")
            return False
        return worker_poll(cls, context)


class DFF_OT_import_dataset(_NotWhileTraining, WorkerOperator, bpy.types.Operator):
    """Read the dataset's cameras and labels and create its cameras in the scene"""

    bl_idname = "dff.import_dataset"
    bl_label = "Import Dataset"
    bl_options = {'REGISTER', 'UNDO'}

    def send(self, context: bpy.types.Context) -> set[str]:
        submit_import(context)
        return {'FINISHED'}


def submit_import(context: bpy.types.Context) -> None:
    """Ask the worker to import the scene's dataset with the chosen options."""
    props = context.scene.dff
    dataset, workspace_dir = folders.resolve_paths(props, worker_settings(context).remote)
    props.n_images = 0  # no dataset is bound until the worker's reply says so
    worker_session.session().submit(
        context, "import_dataset", {"dataset": dataset, "workspace": workspace_dir,
                                    "downscale": int(props.image_scale), "test_every": props.test_every,
                                    "bounds": props.bounds},
        on_done=reply_handler(context.scene, cameras.apply_import))
    props.show_message(f"Importing '{dataset}'...")


class DFF_OT_capture_scene(_NotWhileTraining, bpy.types.Operator):
    """Render the open scene from many views with Cycles (in the background) into a dataset folder,
    then import it"""

    bl_idname = "dff.capture_scene"
    bl_label = "Capture Scene"

    def execute(self, context: bpy.types.Context) -> set[str]:
        props = context.scene.dff
        out = folders.capture_folder(props)
        if os.path.isdir(out) and os.listdir(out):
            self.report({'ERROR'}, f"the capture folder '{out}' is not empty: choose an empty folder "
                                   "(a new capture must not mix with an earlier one or its workspace)")
            return {'CANCELLED'}
        try:
            plan = capture_plan.plan_capture(context, Path(out), props.capture_source, props.capture_views,
                                              props.capture_resolution, props.capture_samples, props.test_every)
        except ValueError as exc:
            self.report({'ERROR'}, str(exc))
            return {'CANCELLED'}
        uid = context.scene.session_uid

        def on_progress(job: capture_plan.CaptureJob) -> None:
            target = _scene(uid)
            if target is not None:
                target.dff.update_progress({"stage": "capture", "step": job.rendered, "total": job.total,
                                            "message": f"rendered {job.rendered}/{job.total} views"})
                _tag_redraw()

        def on_done(job: capture_plan.CaptureJob) -> None:
            target = _scene(uid)
            if target is None:
                return
            props = target.dff
            if job.error:
                props.show_error({"code": "capture_failed", "message": job.error,
                                  "hint": "Check that the scene renders with Cycles (F12)."})
            else:
                props.dataset_path, props.workspace_path, props.image_scale = str(job.out), "", '1'
                try:
                    with _scene_context(target) as scene_context:
                        submit_import(scene_context)
                except (ValueError, worker_session.WorkerUnavailable) as exc:
                    props.show_error({"code": "import_failed", "message": str(exc)})
            _tag_redraw()

        capture_plan.start_capture(context, plan, on_done, on_progress)
        props.show_message(f"Capturing {sum(len(v) for v in plan['views'].values())} views into '{out}'...")
        return {'FINISHED'}


class DFF_OT_train(_NotWhileTraining, WorkerOperator, bpy.types.Operator):
    """Train the radiance field, extract the mesh and distil the feature field (resumes
    from the workspace's checkpoints)"""

    bl_idname = "dff.train"
    bl_label = "Train"
    bl_options = {'REGISTER', 'UNDO'}

    def send(self, context: bpy.types.Context) -> set[str]:
        props = context.scene.dff
        params = {
            "workspace": workspace(context),
            "nerf_steps": props.nerf_steps,
            "feature_steps": props.feature_steps,
            "mesh_resolution": props.mesh_resolution,
            "max_faces": props.max_faces,
            "teacher": props.teacher,
        }
        remote = worker_settings(context).remote
        if props.teacher == 'sam':
            params["sam_checkpoint"] = folders.worker_file(props.sam_checkpoint, remote)
        if props.teacher == 'clip':
            params["clip_model"] = props.clip_model.strip()
            pretrained = props.clip_pretrained.strip()
            is_file = pretrained.startswith("//") or any(sep in pretrained for sep in "/\\")
            params["clip_pretrained"] = folders.worker_file(pretrained, remote) if is_file else pretrained
        worker_session.session().submit(
            context, "train", params,
            on_done=reply_handler(context.scene, _apply_training, ends_training=True),
            on_progress=_progress_handler(context.scene))
        props.start_progress()
        props.show_message("Training started")
        return {'FINISHED'}


def _apply_training(context: bpy.types.Context, reply: Reply) -> str:
    summary = mesh_import.apply_mesh(context, reply)
    psnr = reply.result.get("psnr")
    return f"Trained (PSNR {psnr:.2f} dB). {summary}" if psnr is not None else summary


class DFF_OT_load_mesh(WorkerOperator, bpy.types.Operator):
    """Bring in the mesh of an already trained workspace"""

    bl_idname = "dff.load_mesh"
    bl_label = "Load Mesh"
    bl_options = {'REGISTER', 'UNDO'}

    def send(self, context: bpy.types.Context) -> set[str]:
        worker_session.session().submit(
            context, "get_mesh", {"workspace": workspace(context)},
            on_done=reply_handler(context.scene, mesh_import.apply_mesh))
        return {'FINISHED'}


class DFF_OT_cancel(bpy.types.Operator):
    """Stop training (the workspace keeps the last checkpoint, so Train resumes from it) or a bake"""

    bl_idname = "dff.cancel"
    bl_label = "Cancel"
    bl_options = {'REGISTER'}

    def execute(self, context: bpy.types.Context) -> set[str]:
        session = worker_session.session()
        request_id = session.find(context.scene, "train") or session.find(context.scene, "bake")
        if request_id is None:
            context.scene.dff.running = False  # a stale flag, e.g. from a crashed worker
            self.report({'WARNING'}, "No training is running")
            return {'CANCELLED'}
        session.cancel(request_id)
        context.scene.dff.show_message("Cancelling...")
        return {'FINISHED'}


class DFF_OT_select_text(WorkerOperator, bpy.types.Operator):
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

        params = {"workspace": workspace(context), "text": query, "teacher": props.teacher}
        if props.text_mode == 'LABEL_SET':
            if not props.label_set.strip():
                raise UserError("the label set is empty: type the scene's labels, e.g. "
                                "'chair, table, floor, wall', or compare with negatives")
            params["label_set"] = props.label_set
        else:
            params["negatives"] = props.negatives
        worker_session.session().submit(context, "query_text", params,
                                        on_done=reply_handler(context.scene, apply))
        props.show_message(f"Querying '{query}'...")
        return {'FINISHED'}


def dff_mesh_poll(cls: type[bpy.types.Operator], context: bpy.types.Context) -> bool:
    """Poll of the operators that work on the DFF mesh; greyed out, they say what is missing."""
    try:
        selection.check_dff_mesh(context.scene.dff.mesh_object)
    except ValueError as exc:
        cls.poll_message_set(str(exc))
        return False
    return worker_poll(cls, context)


def _selected_worker_faces(obj: bpy.types.Object) -> np.ndarray:
    """The worker's indices of the selected faces of `obj`."""
    mesh = obj.data
    if obj.mode == 'EDIT':  # the edit mesh holds the selection; mesh data is stale there
        bm = bmesh.from_edit_mesh(mesh)
        layer = bm.faces.layers.int[mesh_import.FACE_INDEX_ATTR]
        return np.array([face[layer] for face in bm.faces if face.select], dtype=np.int64)
    selected = np.empty(len(mesh.polygons), dtype=bool)
    mesh.polygons.foreach_get("select", selected)
    face_index = np.empty(len(mesh.polygons), dtype=np.int32)
    mesh.attributes[mesh_import.FACE_INDEX_ATTR].data.foreach_get("value", face_index)
    return face_index[selected]


def worker_selection(obj: bpy.types.Object) -> np.ndarray:
    """The selected faces of the DFF mesh `obj` (edit mode or not) as one flag per face of
    the worker's mesh, in its order."""
    n_faces = obj.data.get(mesh_import.WORKER_FACES_PROP)
    if n_faces is None:
        raise UserError(f"'{obj.name}' does not record the faces of the worker's mesh: "
                        "Load Mesh again")
    indices = _selected_worker_faces(obj)
    if indices.size and indices.max() >= n_faces:
        raise UserError(f"'{obj.name}' has more faces than the worker's mesh: Load Mesh again")
    selected = np.zeros(int(n_faces), dtype=bool)
    selected[indices] = True
    return selected


class DFF_OT_select_similar(WorkerOperator, bpy.types.Operator):
    """Select the faces whose features resemble those of the selected faces"""

    bl_idname = "dff.select_similar"
    bl_label = "Select Similar"
    bl_options = {'REGISTER'}

    poll = classmethod(dff_mesh_poll)

    def send(self, context: bpy.types.Context) -> set[str]:
        props = context.scene.dff
        selected = worker_selection(selection.check_dff_mesh(props.mesh_object))
        if not selected.any():
            raise UserError("select some faces first: run a query, click, or select faces "
                            "in edit mode")

        def apply(ctx: bpy.types.Context, reply: Reply) -> str:
            return selection.apply_query(ctx, SIMILAR_QUERY, reply)

        worker_session.session().submit(
            context, "query_similar", {"workspace": workspace(context), "teacher": props.teacher},
            arrays={"selected": selected}, on_done=reply_handler(context.scene, apply))
        props.show_message(f"Finding faces like the {int(selected.sum())} selected...")
        return {'FINISHED'}


class DFF_OT_bake_texture(_NotWhileTraining, WorkerOperator, bpy.types.Operator):
    """UV-unwrap the DFF mesh and bake the radiance field's colour into an image texture that
    Blender renders and Texture Paint edits (also on parts separated from the mesh)"""

    bl_idname = "dff.bake_texture"
    bl_label = "Bake Texture"
    bl_options = {'REGISTER', 'UNDO'}

    def send(self, context: bpy.types.Context) -> set[str]:
        props = context.scene.dff
        selection.check_dff_mesh(props.mesh_object)
        worker_session.session().submit(
            context, "bake", {"workspace": workspace(context), "size": int(props.texture_size)},
            on_done=reply_handler(context.scene, texture.apply_bake, ends_training=True),
            on_progress=_progress_handler(context.scene))
        props.start_progress()
        props.show_message(f"Baking a {props.texture_size} texture...")
        return {'FINISHED'}


class DFF_OT_show_heat_map(bpy.types.Operator):
    """Show the latest query's heat map: Solid shading coloured by the active colour attribute
    (click again for the usual shading)"""

    bl_idname = "dff.show_heat_map"
    bl_label = "Show Heat Map"

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        return context.area is not None and context.area.type == 'VIEW_3D'

    def execute(self, context: bpy.types.Context) -> set[str]:
        shading = context.space_data.shading
        if shading.type == 'SOLID' and shading.color_type == 'ATTRIBUTE':
            shading.color_type = 'MATERIAL'
        else:
            shading.type, shading.color_type = 'SOLID', 'ATTRIBUTE'
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


_CLASSES = (DFF_OT_import_dataset, DFF_OT_capture_scene, DFF_OT_train, DFF_OT_load_mesh, DFF_OT_cancel,
            DFF_OT_show_heat_map, DFF_OT_bake_texture, DFF_OT_select_text, DFF_OT_select_similar, DFF_OT_separate)

_register_classes, _unregister_classes = bpy.utils.register_classes_factory(_CLASSES)


def register() -> None:
    _register_classes()


def unregister() -> None:
    capture_plan.cancel_all()  # no render process outlives the add-on
    _unregister_classes()
