"""Operators on the DFF mesh's faces: select by text or by likeness to the selection, show the
heat map, separate the selection. (The Click tool is in `click`; the threshold slider
re-selects through its property's update.)"""

from __future__ import annotations

import bmesh
import bpy
import numpy as np
from bpy.props import StringProperty

from ..folders import UserError
from ..scene import heat_map, mesh_import, selection
from ..wire import api
from ..worker import session as worker_session
from ..worker.client import Reply
from .base import WorkerOperator, dff_mesh_poll, mesh_params, mesh_poll, reply_handler

SIMILAR_QUERY = "similar"  # the name Select Similar's selection goes by


class DFF_OT_select_text(WorkerOperator, bpy.types.Operator):
    """Select the faces of the DFF mesh that match the text query"""

    bl_idname = "dff.select_text"
    bl_label = "Select by Text"
    bl_options = {'REGISTER'}  # asynchronous: the reply pushes the undo step

    poll = classmethod(dff_mesh_poll)

    text: StringProperty(
        name="Text", description="Query to run instead of the panel's (e.g. a label)",
        options={'SKIP_SAVE'})

    def send(self, context: bpy.types.Context) -> set[str]:
        props = context.scene.dff
        if self.text:
            props.query_text = self.text
        query = selection.check_query(props.query_text)
        target = selection.query_target(context)

        def apply(ctx: bpy.types.Context, reply: Reply) -> str:
            return selection.apply_query(ctx, query, reply, target.name)

        params = {**mesh_params(context, target), "text": query, "teacher": props.teacher}
        if props.text_mode == 'LABEL_SET':
            if not props.label_set.strip():
                raise UserError("the label set is empty: type the scene's labels, e.g. "
                                "'chair, table, floor, wall', or compare with negatives")
            params["label_set"] = props.label_set
        else:
            params["negatives"] = props.negatives
        worker_session.session().submit(context, api.QUERY_TEXT.name, api.QUERY_TEXT.request(**params),
                                        on_done=reply_handler(context.scene, apply))
        props.show_message(f"Querying '{query}'...")
        return {'FINISHED'}


def _selected_worker_faces(obj: bpy.types.Object) -> np.ndarray:
    """The worker's indices of the selected faces of `obj` (faces of index -1, which close a
    part, are none of the worker's: left out)."""
    mesh = obj.data
    if obj.mode == 'EDIT':  # the edit mesh holds the selection; mesh data is stale there
        bm = bmesh.from_edit_mesh(mesh)
        layer = bm.faces.layers.int[mesh_import.FACE_INDEX_ATTR]
        indices = np.array([face[layer] for face in bm.faces if face.select], dtype=np.int64)
    else:
        selected = mesh_import.read_array(mesh.polygons, "select", bool)
        indices = mesh_import.read_array(mesh.attributes[mesh_import.FACE_INDEX_ATTR].data, "value", np.int32)[selected]
    return indices[indices >= 0]


def worker_selection(obj: bpy.types.Object) -> np.ndarray:
    """The selected faces of the DFF mesh `obj` (edit mode or not) as one flag per face of
    the worker's mesh, in its order. The Blender mesh may lack some of the worker's faces
    (degenerate ones dropped on import, parts separated since)."""
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
        selection.settle()
        target = selection.query_target(context)
        selected = worker_selection(target)
        if not selected.any():
            raise UserError("select some faces first: run a query, click, or select faces "
                            "in edit mode")

        def apply(ctx: bpy.types.Context, reply: Reply) -> str:
            return selection.apply_query(ctx, SIMILAR_QUERY, reply, target.name)

        worker_session.session().submit(
            context, api.QUERY_SIMILAR.name,
            api.QUERY_SIMILAR.request(**mesh_params(context, target), teacher=props.teacher),
            arrays={"selected": selected}, on_done=reply_handler(context.scene, apply))
        props.show_message(f"Finding faces like the {int(selected.sum())} selected...")
        return {'FINISHED'}


class DFF_OT_show_heat_map(bpy.types.Operator):
    """Show the latest query's heat map in Solid shading (click again to put the view back)"""

    bl_idname = "dff.show_heat_map"
    bl_label = "Show Heat Map"

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        return context.area is not None and context.area.type == 'VIEW_3D'

    def execute(self, context: bpy.types.Context) -> set[str]:
        shading = context.space_data.shading
        try:
            obj = selection.queried_object(context)
            if heat_map.heat_map_shown(shading, obj.data):
                heat_map.hide_heat_map(shading, obj)
            else:
                heat_map.show_heat_map(shading, obj)
        except ValueError as exc:
            self.report({'ERROR'}, str(exc))
            return {'CANCELLED'}
        return {'FINISHED'}


class DFF_OT_separate(bpy.types.Operator):
    """Move the selected faces of the DFF mesh into a new object named after the query"""

    bl_idname = "dff.separate"
    bl_label = "Separate DFF Selection"
    bl_options = {'REGISTER', 'UNDO'}

    poll = classmethod(mesh_poll)

    def execute(self, context: bpy.types.Context) -> set[str]:
        props = context.scene.dff
        try:
            obj = selection.queried_object(context)
            if not props.active_query:
                raise ValueError("no query yet: Select something first")
            selection.settle()
            part = selection.separate_selection(context, obj, props.active_query)
        except ValueError as exc:
            self.report({'ERROR'}, str(exc))
            return {'CANCELLED'}
        message = f"Separated {len(part.data.polygons)} faces into '{part.name}'"
        props.show_message(message)
        self.report({'INFO'}, message)
        return {'FINISHED'}


_CLASSES = (DFF_OT_select_text, DFF_OT_select_similar, DFF_OT_show_heat_map, DFF_OT_separate)

register, unregister = bpy.utils.register_classes_factory(_CLASSES)
