"""Click Select (DFF) in the 3D viewport's toolbar, in Object and Edit Mode, beside Blender's
select tools: with it active, a left press in the viewport opens a click prompt
(dff.click_select) with that press as its first click."""

from __future__ import annotations

import bpy

# A press with Shift or Ctrl opens the prompt too: its release makes a click that adds or leaves out.
_KEYMAP = tuple(("dff.click_select", {"type": 'LEFTMOUSE', "value": 'PRESS', **modifier}, None)
                for modifier in ({}, {"shift": True}, {"ctrl": True}))


class DFF_WT_click_select(bpy.types.WorkSpaceTool):
    bl_space_type = 'VIEW_3D'
    bl_context_mode = 'OBJECT'
    bl_idname = "dff.click_select_tool"
    bl_label = "Click Select (DFF)"
    bl_description = "Click the DFF mesh to select the object under the cursor (Shift adds, Ctrl leaves out)"
    bl_icon = "ops.paint.eyedropper_add"
    bl_cursor = 'EYEDROPPER'
    bl_keymap = _KEYMAP


class DFF_WT_click_select_edit_mesh(DFF_WT_click_select):
    bl_context_mode = 'EDIT_MESH'


_TOOLS = (DFF_WT_click_select, DFF_WT_click_select_edit_mesh)


def register() -> None:
    for tool in _TOOLS:
        # A button of its own after the select tools' (not one more in their flyout).
        bpy.utils.register_tool(tool, after={"builtin.select_box"}, group=True)


def unregister() -> None:
    for tool in reversed(_TOOLS):
        bpy.utils.unregister_tool(tool)
