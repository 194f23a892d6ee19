"""Telling the user: text wrapped to the panel's width, errors in plain words with their full
details a click away, and reports to the status bar and Info log from outside an operator."""

from __future__ import annotations

import textwrap

import bpy
from bpy.props import EnumProperty, StringProperty

from ..wire.api import error_title

CHAR_WIDTH = 7.0  # pixels per character of Blender's UI font at scale 1 (an average)
MARGIN = 50  # pixels of a panel row taken by its icon and padding
DETAILS_WIDTH = 110  # characters per line in the Details dialog


def wrap_width(context: bpy.types.Context) -> int:
    """Characters that fit in a line of the current region (the sidebar, the preferences)."""
    region = getattr(context, "region", None)
    width = region.width if region is not None else 300
    scale = context.preferences.system.ui_scale or 1.0  # 0 in background mode
    return max(20, int((width - MARGIN * scale) / (CHAR_WIDTH * scale)))


def wrap(text: str, width: int) -> list[str]:
    """`text` as lines of at most `width` characters, keeping its own line breaks."""
    return [wrapped for line in text.splitlines() for wrapped in (textwrap.wrap(line, width) or [""])]


def wrapped_label(context: bpy.types.Context, layout: bpy.types.UILayout, text: str,
                  icon: str = 'NONE', max_lines: int = 0) -> None:
    """`text` as labels wrapped to the region; the icon on the first. `max_lines` > 0 keeps
    the last lines only (the end of a log says what failed)."""
    lines = wrap(text, wrap_width(context))
    if max_lines and len(lines) > max_lines:
        lines = ["..."] + lines[-max_lines:]
    column = layout.column(align=True)
    for k, line in enumerate(lines):
        column.label(text=line, icon=icon if k == 0 else 'BLANK1' if icon != 'NONE' else 'NONE')


def error_details(props: bpy.types.PropertyGroup) -> str:
    """The whole error of `props` (title, message, hint) as plain text."""
    parts = [f"{error_title(props.error_code)} ({props.error_code})", props.error]
    if props.error_hint.strip():
        parts.append(props.error_hint.strip())
    return "\n\n".join(parts)


def report(level: str, text: str) -> None:
    """Put `text` on the status bar and in the Info log. Worker replies arrive from a timer,
    outside any operator, so a small operator makes the report."""
    try:
        bpy.ops.dff.report(level=level, message=text)
    except RuntimeError:  # an ERROR report is also raised to the caller once it is logged
        pass


class DFF_OT_report(bpy.types.Operator):
    """Report a message of the DFF add-on"""

    bl_idname = "dff.report"
    bl_label = "DFF Report"
    bl_options = {'INTERNAL'}

    level: EnumProperty(items=[('INFO', "Info", ""), ('WARNING', "Warning", ""), ('ERROR', "Error", "")])
    message: StringProperty()

    def execute(self, context: bpy.types.Context) -> set[str]:
        self.report({self.level}, self.message)
        return {'FINISHED'}


class DFF_OT_error_details(bpy.types.Operator):
    """Show the whole error message and what to do about it (Copy puts it on the clipboard)"""

    bl_idname = "dff.error_details"
    bl_label = "Error Details"
    bl_options = {'INTERNAL'}

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        return bool(context.scene.dff.error)

    def invoke(self, context: bpy.types.Context, event: bpy.types.Event) -> set[str]:
        return context.window_manager.invoke_props_dialog(self, width=DETAILS_WIDTH * 7, title="DFF Error",
                                                          confirm_text="Copy")

    def draw(self, context: bpy.types.Context) -> None:
        column = self.layout.column(align=True)
        for line in wrap(error_details(context.scene.dff), DETAILS_WIDTH):
            column.label(text=line)

    def execute(self, context: bpy.types.Context) -> set[str]:
        context.window_manager.clipboard = error_details(context.scene.dff)
        self.report({'INFO'}, "Copied the error to the clipboard")
        return {'FINISHED'}


_CLASSES = (DFF_OT_report, DFF_OT_error_details)

register, unregister = bpy.utils.register_classes_factory(_CLASSES)
