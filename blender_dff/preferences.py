"""Add-on preferences: which Python runs the worker (and making one), or which remote worker
to reach. The state shown here (probe, build, connection) lives in `worker_state`."""

from __future__ import annotations

import os
from dataclasses import dataclass

import bpy
from bpy.props import EnumProperty, IntProperty, StringProperty

from . import ADDON_ID
from .wire import api

# For an add-on registered by a script (no preferences entry): the worker's Python.
PYTHON_ENV = "DFF_WORKER_PYTHON"


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


DEFAULT_TAB = "DFF"


def _tab_changed(self: DFFPreferences, context: bpy.types.Context) -> None:
    from .ui import panels

    panels.set_tab(self.tab_name)


def _python_changed(self: DFFPreferences, context: bpy.types.Context) -> None:
    from .worker import state as worker_state

    worker_state.start_probe(bpy.path.abspath(self.python))


class DFFPreferences(bpy.types.AddonPreferences):
    """Worker settings, shown under Preferences > Add-ons > DFF."""

    bl_idname = ADDON_ID

    tab_name: StringProperty(
        name="Sidebar Tab", description="The tab of the 3D viewport's sidebar the DFF panels are in",
        default=DEFAULT_TAB, update=_tab_changed)
    python: StringProperty(
        name="Python",
        description="Python interpreter with the worker's packages (torch, ...), used to start the "
                    "local worker; Create Worker Environment makes one and fills this in",
        subtype='FILE_PATH',
        default="",
        update=_python_changed,
    )
    torch_variant: EnumProperty(
        name="PyTorch",
        description="Which PyTorch build the worker environment gets",
        items=[('cuda', "NVIDIA GPU (CUDA)", "PyTorch with CUDA: training on an NVIDIA GPU"),
               ('cpu', "CPU only", "A smaller PyTorch without CUDA (slow training)")],
        default='cuda',
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
        description="Token the remote worker printed when it started (empty: the DFF_WORKER_TOKEN "
                    "environment variable Blender was started with)",
        subtype='PASSWORD',
        default="",
    )

    def draw(self, context: bpy.types.Context) -> None:
        from .ui.messages import wrapped_label
        from .worker import state as worker_state

        layout = self.layout
        layout.prop(self, "tab_name")
        box = layout.box()
        box.label(text="Local worker", icon='CONSOLE')
        box.prop(self, "python")
        python = bpy.path.abspath(self.python)
        report = worker_state.report_for(python)
        status = box.column(align=True)
        if not python:
            status.label(text="No worker Python yet: create the worker environment below.", icon='INFO')
        elif python in worker_state.STATE.probing:
            status.label(text="Checking the worker Python...", icon='TIME')
        elif report is not None:
            status.alert = not report.ok
            wrapped_label(context, status, report.summary, icon='CHECKMARK' if report.ok else 'ERROR')
        row = box.row(align=True)
        row.operator("dff.check_worker", icon='FILE_REFRESH')
        row.operator("dff.stop_worker", icon='X')

        create = box.box().column()
        create.label(text="Worker environment (downloads PyTorch and the worker's packages, several GB)")
        create.row().prop(self, "torch_variant", expand=True)
        build = worker_state.building()
        if build is not None:
            row = create.row(align=True)
            row.progress(factor=build.fraction, type='BAR', text=build.message[:80])
            row.operator("dff.cancel_worker_env", text="", icon='CANCEL')
        else:
            create.operator("dff.create_worker_env", icon='PACKAGE')
        if worker_state.STATE.build_error:
            failed = create.column(align=True)
            failed.alert = True
            wrapped_label(context, failed, worker_state.STATE.build_error, icon='ERROR', max_lines=8)
        if not bpy.app.online_access:
            wrapped_label(context, create, "Allow Online Access is off (Preferences > System): the button shows "
                                           "the commands to run by hand instead.", icon='INFO')

        box = layout.box()
        box.label(text="Remote worker (leave the host empty for a local one)", icon='URL')
        box.prop(self, "host")
        row = box.row()
        row.active = bool(self.host)
        row.prop(self, "port")
        row.prop(self, "token")
        row = box.row()
        row.enabled = bool(self.host)
        row.operator("dff.test_connection", icon='LINKED')
        if worker_state.STATE.connection:
            wrapped_label(context, box, worker_state.STATE.connection, icon='INFO')


def worker_settings(context: bpy.types.Context) -> WorkerSettings:
    """The current settings. When the add-on was registered by a script rather than enabled
    in the preferences, it has no preferences entry: the Python comes from $DFF_WORKER_PYTHON."""
    addon = context.preferences.addons.get(ADDON_ID)
    if addon is None or addon.preferences is None:
        return WorkerSettings(python=os.environ.get(PYTHON_ENV, ""))
    prefs = addon.preferences
    return WorkerSettings(
        python=bpy.path.abspath(prefs.python),
        host=prefs.host.strip(),
        port=prefs.port,
        token=prefs.token or os.environ.get(api.TOKEN_ENV, ""),
    )


def register() -> None:
    bpy.utils.register_class(DFFPreferences)


def unregister() -> None:
    bpy.utils.unregister_class(DFFPreferences)
