"""Add-on preferences: which Python runs the worker, or which remote worker to reach."""

from __future__ import annotations

import sys
from dataclasses import dataclass

import bpy
from bpy.props import IntProperty, StringProperty


@dataclass(frozen=True)
class WorkerSettings:
    """How to reach the worker: a local child process (`host` empty) or a remote one."""

    python: str
    host: str = ""
    port: int = 0
    token: str = ""

    @property
    def remote(self) -> bool:
        return bool(self.host)


class DFFPreferences(bpy.types.AddonPreferences):
    """Worker settings, shown under Preferences > Add-ons > DFF."""

    bl_idname = __package__

    python: StringProperty(
        name="Python",
        description="Python interpreter with torch installed, used to start the local worker",
        subtype='FILE_PATH',
        default=sys.executable,
    )
    host: StringProperty(
        name="Remote Host",
        description="Host of a worker started by hand (e.g. on a GPU machine); "
                    "empty to start a local worker",
        default="",
    )
    port: IntProperty(
        name="Port",
        description="Port the remote worker listens on",
        default=0, min=0, max=65535,
    )
    token: StringProperty(
        name="Token",
        description="Token the remote worker printed when it started",
        subtype='PASSWORD',
        default="",
    )

    def draw(self, context: bpy.types.Context) -> None:
        layout = self.layout
        layout.prop(self, "python")
        box = layout.box()
        box.label(text="Remote worker (leave the host empty for a local one)")
        box.prop(self, "host")
        row = box.row()
        row.active = bool(self.host)
        row.prop(self, "port")
        row.prop(self, "token")


def worker_settings(context: bpy.types.Context) -> WorkerSettings:
    """The current settings. When the add-on was registered by a script rather than enabled
    in the preferences, it has no preferences entry, so the defaults apply."""
    addon = context.preferences.addons.get(__package__)
    if addon is None or addon.preferences is None:
        return WorkerSettings(python=sys.executable)
    prefs = addon.preferences
    return WorkerSettings(
        python=bpy.path.abspath(prefs.python) or sys.executable,
        host=prefs.host.strip(),
        port=prefs.port,
        token=prefs.token,
    )


def register() -> None:
    bpy.utils.register_class(DFFPreferences)


def unregister() -> None:
    bpy.utils.unregister_class(DFFPreferences)
