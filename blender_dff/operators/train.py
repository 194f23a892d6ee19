"""Operators of the long jobs: train (NeRF, mesh, feature field), bake the texture, cancel either."""

from __future__ import annotations

from functools import partial

import bpy

from .. import folders, jobs
from ..preferences import worker_settings
from ..scene import mesh_import, selection, texture
from ..wire import api
from ..worker.client import Reply
from .base import NotWhileTraining, WorkerOperator, mesh_params, mesh_poll, submit_job, workspace

# The asynchronous operators carry no UNDO flag: they change nothing when they return, and
# the reply that changes the file pushes its own undo step (`base.reply_handler`).


class DFF_OT_train(NotWhileTraining, WorkerOperator, bpy.types.Operator):
    """Train the radiance field, extract the mesh and distil the feature field (resumes from the workspace)"""

    bl_idname = "dff.train"
    bl_label = "Train DFF"
    bl_options = {'REGISTER'}

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
        sent_to = params["workspace"]

        def apply(ctx: bpy.types.Context, reply: Reply) -> str:
            summary = mesh_import.apply_mesh(ctx, reply, sent_to)
            psnr = reply.result.get("psnr")
            return f"Trained (PSNR {psnr:.2f} dB). {summary}" if psnr is not None else summary

        submit_job(context, "Training", api.TRAIN.name, api.TRAIN.request(**params), apply)
        props.show_message("Training started")
        return {'FINISHED'}


class DFF_OT_bake_texture(NotWhileTraining, WorkerOperator, bpy.types.Operator):
    """Bake the radiance field's colour into an image texture: the active separated part on its own UV atlas, else the DFF mesh and its parts"""

    bl_idname = "dff.bake_texture"
    bl_label = "Bake DFF Texture"
    bl_options = {'REGISTER'}

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        return mesh_poll(cls, context) and super().poll(context)

    def send(self, context: bpy.types.Context) -> set[str]:
        props = context.scene.dff
        target = selection.query_target(context)
        params = api.BAKE.request(**mesh_params(context, target), size=int(props.texture_size))
        if texture.bakes_own_atlas(context, target):
            arrays = texture.object_triangles(target)
            apply = partial(texture.apply_object_bake, target=target.name, faces=arrays["faces"])
            what = f" of '{target.name}'"
        else:
            arrays, what = None, ""
            apply = partial(texture.apply_bake, mesh_id=params.get("mesh_id", ""))
        submit_job(context, "Texture bake", api.BAKE.name, params, apply, arrays)
        props.show_message(f"Baking a {props.texture_size} texture{what}...")
        return {'FINISHED'}


class DFF_OT_cancel(bpy.types.Operator):
    """Stop the scene's training, bake or capture (training keeps its last checkpoint: Train resumes)"""

    bl_idname = "dff.cancel"
    bl_label = "Cancel DFF Job"
    bl_options = {'REGISTER'}

    scene: bpy.props.StringProperty(name="Scene", description="Scene whose job to stop; empty for the current one",
                                    options={'SKIP_SAVE'})

    def execute(self, context: bpy.types.Context) -> set[str]:
        scene = bpy.data.scenes.get(self.scene) if self.scene else context.scene
        job = jobs.of(scene) if scene is not None else None
        if job is None:
            self.report({'WARNING'}, "No DFF job is running")
            return {'CANCELLED'}
        job.cancel()
        job.cancelling = True
        scene.dff.show_message("Cancelling...")
        return {'FINISHED'}


_CLASSES = (DFF_OT_train, DFF_OT_bake_texture, DFF_OT_cancel)

register, unregister = bpy.utils.register_classes_factory(_CLASSES)
