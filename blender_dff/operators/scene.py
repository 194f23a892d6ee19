"""Operators that bring a scene in: import a dataset, capture the open scene as one, load a
trained workspace's mesh."""

from __future__ import annotations

import os
from pathlib import Path

import bpy

from .. import folders, jobs
from ..capture import job as capture_job, plan as capture_plan
from ..preferences import worker_settings
from ..scene import cameras, mesh_import
from ..wire import api
from ..worker import session as worker_session
from .base import NotWhileTraining, WorkerOperator, find_scene, reply_handler, scene_context, tag_redraw, workspace


class DFF_OT_import_dataset(NotWhileTraining, WorkerOperator, bpy.types.Operator):
    """Read the dataset's cameras and labels and create its cameras in the scene"""

    bl_idname = "dff.import_dataset"
    bl_label = "Import DFF Dataset"
    bl_options = {'REGISTER'}  # asynchronous: the reply pushes the undo step

    browse: bpy.props.BoolProperty(options={'HIDDEN', 'SKIP_SAVE'},
                                   description="Choose the dataset folder first (File > Import)")
    directory: bpy.props.StringProperty(subtype='DIR_PATH', options={'HIDDEN', 'SKIP_SAVE'})

    def invoke(self, context: bpy.types.Context, event: bpy.types.Event) -> set[str]:
        if self.browse:
            context.window_manager.fileselect_add(self)
            return {'RUNNING_MODAL'}
        return self.execute(context)

    def send(self, context: bpy.types.Context) -> set[str]:
        if self.directory:
            context.scene.dff.dataset_path = self.directory
        submit_import(context)
        return {'FINISHED'}


def submit_import(context: bpy.types.Context) -> None:
    """Ask the worker to import the scene's dataset with the chosen options."""
    props = context.scene.dff
    dataset, workspace_dir = folders.resolve_paths(props, worker_settings(context).remote)
    props.n_images = 0  # no dataset is bound until the worker's reply says so
    worker_session.session().submit(
        context, api.IMPORT_DATASET.name,
        api.IMPORT_DATASET.request(dataset=dataset, workspace=workspace_dir, downscale=int(props.image_scale),
                                   test_every=props.test_every, bounds=props.bounds),
        on_done=reply_handler(context.scene, cameras.apply_import))
    props.show_message(f"Importing '{dataset}'...")


class DFF_OT_capture_scene(NotWhileTraining, bpy.types.Operator):
    """Render the open scene from many views with Cycles, in the background, into a dataset folder, then import it"""

    bl_idname = "dff.capture_scene"
    bl_label = "Capture Scene for DFF"

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
        progress = jobs.Job("Capture", cancel=lambda: None)

        def on_progress(job: capture_job.CaptureJob) -> None:
            progress.update({"stage": "capture", "step": job.rendered, "total": job.total,
                             "message": f"rendered {job.rendered}/{job.total} views"})
            tag_redraw()

        def on_done(job: capture_job.CaptureJob) -> None:
            jobs.finish(uid)
            target = find_scene(uid)
            if target is None:
                return
            props = target.dff
            if job.error:
                props.show_error({"code": "capture_failed", "message": job.error,
                                  "hint": "Check that the scene renders with Cycles (F12)."})
            else:
                props.dataset_path, props.workspace_path, props.image_scale = str(job.out), "", '1'
                try:
                    with scene_context(target) as target_context:
                        submit_import(target_context)
                except (ValueError, worker_session.WorkerUnavailable) as exc:
                    props.show_error({"code": "import_failed", "message": str(exc)})
            tag_redraw()

        render = capture_job.start_capture(context, plan, on_done, on_progress)
        progress.cancel = lambda: capture_job.cancel(render)
        progress.update({"stage": "capture", "step": 0, "total": render.total})
        jobs.add(context.scene, progress)
        props.show_message(f"Capturing {sum(len(v) for v in plan['views'].values())} views into '{out}'...")
        return {'FINISHED'}


class DFF_OT_load_mesh(WorkerOperator, bpy.types.Operator):
    """Bring in the mesh of an already trained workspace"""

    bl_idname = "dff.load_mesh"
    bl_label = "Load DFF Mesh"
    bl_options = {'REGISTER'}  # asynchronous: the reply pushes the undo step

    def invoke(self, context: bpy.types.Context, event: bpy.types.Event) -> set[str]:
        obj = context.scene.dff.mesh_object
        if obj is not None and context.scene.objects.get(obj.name) == obj:
            return context.window_manager.invoke_confirm(
                self, event, title="Replace the DFF Mesh?",
                message=f"'{obj.name}' gets the workspace's mesh: its faces, vertex groups and query results are replaced")
        return self.execute(context)

    def send(self, context: bpy.types.Context) -> set[str]:
        sent_to = workspace(context)
        worker_session.session().submit(
            context, api.GET_MESH.name, api.GET_MESH.request(workspace=sent_to),
            on_done=reply_handler(context.scene, lambda ctx, reply: mesh_import.apply_mesh(ctx, reply, sent_to)))
        return {'FINISHED'}


_CLASSES = (DFF_OT_import_dataset, DFF_OT_capture_scene, DFF_OT_load_mesh)

_register_classes, _unregister_classes = bpy.utils.register_classes_factory(_CLASSES)


def register() -> None:
    _register_classes()


def unregister() -> None:
    capture_job.cancel_all()  # no render process outlives the add-on
    _unregister_classes()
