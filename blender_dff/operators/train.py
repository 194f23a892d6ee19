"""Operators of the long jobs: train (NeRF, mesh, feature field), bake the texture, cancel either."""

from __future__ import annotations

import bpy

from .. import folders
from ..preferences import worker_settings
from ..scene import mesh_import, selection, texture
from ..wire import api
from ..worker import session as worker_session
from ..worker.client import Reply
from .base import NotWhileTraining, WorkerOperator, progress_handler, reply_handler, workspace


class DFF_OT_train(NotWhileTraining, WorkerOperator, bpy.types.Operator):
    """Train the radiance field, extract the mesh and distil the feature field (resumes
    from the workspace's checkpoints)"""

    bl_idname = "dff.train"
    bl_label = "Train"
    bl_options = {'REGISTER', 'UNDO'}

    def send(self, context: bpy.types.Context) -> set[str]:
        props = context.scene.dff
        params = {
            "workspace": workspace(context),
            "preset": props.preset,
            "max_faces": props.max_faces,
            "teacher": props.teacher,
        }
        if props.custom_settings:
            params.update(nerf_steps=props.nerf_steps, feature_steps=props.feature_steps,
                          mesh_resolution=props.mesh_resolution)
        remote = worker_settings(context).remote
        if props.teacher == 'sam':
            params["sam_checkpoint"] = folders.worker_file(props.sam_checkpoint, remote)
        if props.teacher == 'clip':
            params["clip_model"] = props.clip_model.strip()
            pretrained = props.clip_pretrained.strip()
            is_file = pretrained.startswith("//") or any(sep in pretrained for sep in "/\\")
            params["clip_pretrained"] = folders.worker_file(pretrained, remote) if is_file else pretrained
        worker_session.session().submit(
            context, api.TRAIN.name, api.TRAIN.request(**params),
            on_done=reply_handler(context.scene, _apply_training, ends_training=True),
            on_progress=progress_handler(context.scene))
        props.start_progress()
        props.show_message("Training started")
        return {'FINISHED'}


def _apply_training(context: bpy.types.Context, reply: Reply) -> str:
    summary = mesh_import.apply_mesh(context, reply)
    psnr = reply.result.get("psnr")
    return f"Trained (PSNR {psnr:.2f} dB). {summary}" if psnr is not None else summary


class DFF_OT_bake_texture(NotWhileTraining, WorkerOperator, bpy.types.Operator):
    """UV-unwrap the DFF mesh and bake the radiance field's colour into an image texture that
    Blender renders and Texture Paint edits (also on parts separated from the mesh)"""

    bl_idname = "dff.bake_texture"
    bl_label = "Bake Texture"
    bl_options = {'REGISTER', 'UNDO'}

    def send(self, context: bpy.types.Context) -> set[str]:
        props = context.scene.dff
        selection.check_dff_mesh(props.mesh_object)
        worker_session.session().submit(
            context, api.BAKE.name, api.BAKE.request(workspace=workspace(context), size=int(props.texture_size)),
            on_done=reply_handler(context.scene, texture.apply_bake, ends_training=True),
            on_progress=progress_handler(context.scene))
        props.start_progress()
        props.show_message(f"Baking a {props.texture_size} texture...")
        return {'FINISHED'}


class DFF_OT_cancel(bpy.types.Operator):
    """Stop training (the workspace keeps the last checkpoint, so Train resumes from it) or a bake"""

    bl_idname = "dff.cancel"
    bl_label = "Cancel"
    bl_options = {'REGISTER'}

    def execute(self, context: bpy.types.Context) -> set[str]:
        session = worker_session.session()
        request_id = session.find(context.scene, api.TRAIN.name) or session.find(context.scene, api.BAKE.name)
        if request_id is None:
            context.scene.dff.running = False  # a stale flag, e.g. from a crashed worker
            self.report({'WARNING'}, "No training is running")
            return {'CANCELLED'}
        session.cancel(request_id)
        context.scene.dff.show_message("Cancelling...")
        return {'FINISHED'}


_CLASSES = (DFF_OT_train, DFF_OT_bake_texture, DFF_OT_cancel)

register, unregister = bpy.utils.register_classes_factory(_CLASSES)
