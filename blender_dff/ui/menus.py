"""The add-on's operators in Blender's own menus, where artists (and F3 search) look for them:
File > Import, the Select menus of Object and Edit Mode, and the Object and Mesh menus (beside
Blender's own Separate)."""

from __future__ import annotations

import bpy


def _import(self: bpy.types.Menu, context: bpy.types.Context) -> None:
    self.layout.operator("dff.import_dataset", text="DFF Dataset (posed photos)").browse = True


def _select(self: bpy.types.Menu, context: bpy.types.Context) -> None:
    layout = self.layout
    layout.separator()
    layout.operator("dff.select_text", text="Select by Text (DFF)")
    layout.operator("dff.click_select", text="Click Select (DFF)")
    layout.operator("dff.select_similar", text="Select Similar Features (DFF)")


def _separate(self: bpy.types.Menu, context: bpy.types.Context) -> None:
    self.layout.separator()
    self.layout.operator("dff.separate", text="Separate DFF Selection")
    self.layout.operator("dff.separate_all", text="Separate All (DFF)")


def _object(self: bpy.types.Menu, context: bpy.types.Context) -> None:
    _separate(self, context)
    self.layout.operator("dff.link_mesh", text="Link Mesh to DFF")


_ENTRIES = (("TOPBAR_MT_file_import", _import), ("VIEW3D_MT_select_object", _select),
            ("VIEW3D_MT_select_edit_mesh", _select), ("VIEW3D_MT_object", _object), ("VIEW3D_MT_edit_mesh", _separate))


def register() -> None:
    for menu, draw in _ENTRIES:
        getattr(bpy.types, menu).append(draw)


def unregister() -> None:
    for menu, draw in _ENTRIES:
        getattr(bpy.types, menu).remove(draw)
