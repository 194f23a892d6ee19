"""Operators that make objects of the DFF mesh's parts: Separate All (asks the worker for the
parts; its reply cuts the mesh, `scene.parts`) and Link Mesh (your own mesh made one DFF can
select on, `scene.link`)."""

from __future__ import annotations

import bpy
from bpy.props import BoolProperty

from ..folders import UserError
from ..scene import link, parts, selection
from ..wire import api
from ..worker.client import Reply
from .base import NotWhileTraining, WorkerOperator, mesh_params, mesh_poll, submit_job


class DFF_OT_separate_all(NotWhileTraining, WorkerOperator, bpy.types.Operator):
    """Cut the DFF mesh into one object per part the feature field tells apart, in a new collection"""

    bl_idname = "dff.separate_all"
    bl_label = "Separate All (DFF)"
    bl_options = {'REGISTER'}  # asynchronous: the reply pushes the undo step

    close: BoolProperty(name="Close Parts", default=api.SPLIT["close"].default,
                        description="Close each part's open boundary with new faces, so that it is watertight")
    fill_holes: BoolProperty(name="Fill Holes", default=api.SPLIT["fill_holes"].default,
                             description="Fill the holes the parts leave in the background (a floor, a wall)")

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        return mesh_poll(cls, context) and super().poll(context)

    def invoke(self, context: bpy.types.Context, event: bpy.types.Event) -> set[str]:
        return context.window_manager.invoke_props_dialog(self)

    def draw(self, context: bpy.types.Context) -> None:
        layout = self.layout
        layout.prop(self, "close")
        layout.prop(self, "fill_holes")
        if context.scene.dff.teacher == 'clip':
            layout.prop(context.scene.dff, "label_set")

    def send(self, context: bpy.types.Context) -> set[str]:
        props = context.scene.dff
        target = selection.query_target(context)
        params = {**mesh_params(context, target), "teacher": props.teacher, "close": self.close,
                  "fill_holes": self.fill_holes}
        if props.teacher == 'clip':
            if not props.label_set.strip():
                raise UserError("the label set is empty: type the names of the parts to cut into, "
                                "e.g. 'chair, table, floor, wall'")
            params["label_set"] = props.label_set
        name = target.name

        def apply(ctx: bpy.types.Context, reply: Reply) -> str:
            return parts.apply_split(ctx, reply, name)

        submit_job(context, "Separate All", api.SPLIT.name, api.SPLIT.request(**params), apply)
        props.show_message(f"Cutting '{name}' into its parts...")
        return {'FINISHED'}


class DFF_OT_link_mesh(bpy.types.Operator):
    """Let DFF select on the active mesh (your own scan or retopology): its faces take the nearest DFF faces"""

    bl_idname = "dff.link_mesh"
    bl_label = "Link Mesh to DFF"
    bl_options = {'REGISTER', 'UNDO'}

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        active = context.active_object
        if active is None or active.type != 'MESH':
            cls.poll_message_set("make your own mesh the active object")
            return False
        try:
            selection.check_dff_mesh(context.scene.dff.mesh_object, context.scene)
        except ValueError as exc:
            cls.poll_message_set(str(exc))
            return False
        return True

    def execute(self, context: bpy.types.Context) -> set[str]:
        try:
            message = link.link_mesh(context, context.active_object, context.scene.dff.mesh_object)
        except ValueError as exc:
            self.report({'ERROR'}, str(exc))
            return {'CANCELLED'}
        context.scene.dff.show_message(message)
        self.report({'INFO'}, message)
        return {'FINISHED'}


_CLASSES = (DFF_OT_separate_all, DFF_OT_link_mesh)

register, unregister = bpy.utils.register_classes_factory(_CLASSES)
