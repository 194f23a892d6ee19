"""Operators of the add-on's preferences: check, create, stop and reach the worker."""

from __future__ import annotations

from pathlib import Path

import bpy
from bpy.props import StringProperty

from ..wire import api
from ..worker import environment as worker_env, session as worker_session, state as worker_state
from ..ui.messages import DETAILS_WIDTH, report, wrap
from ..preferences import worker_settings


class DFF_OT_check_worker(bpy.types.Operator):
    """Probe the worker Python again: its packages, PyTorch and the device it would train on"""

    bl_idname = "dff.check_worker"
    bl_label = "Check"
    bl_options = {'INTERNAL'}

    def execute(self, context: bpy.types.Context) -> set[str]:
        settings = worker_settings(context)
        if not settings.python:
            self.report({'WARNING'}, "No worker Python is set: create the worker environment first")
            return {'CANCELLED'}
        worker_state.STATE.reports.pop(settings.python, None)
        worker_state.start_probe(settings.python)
        return {'FINISHED'}


class DFF_OT_stop_worker(bpy.types.Operator):
    """Stop the local worker and free its memory (running jobs are cancelled; training keeps its checkpoint)"""

    bl_idname = "dff.stop_worker"
    bl_label = "Stop Worker"
    bl_options = {'INTERNAL'}

    def execute(self, context: bpy.types.Context) -> set[str]:
        worker_session.session().shutdown()
        self.report({'INFO'}, "Worker stopped")
        return {'FINISHED'}


class DFF_OT_create_worker_env(bpy.types.Operator):
    """Download PyTorch and the worker's packages into a Python environment in the extension's folder (needs Allow Online Access)"""

    bl_idname = "dff.create_worker_env"
    bl_label = "Create Worker Environment"
    bl_options = {'INTERNAL'}

    # Scripts and tests may build from another requirements file, with their own pip options.
    requirements: StringProperty(options={'HIDDEN', 'SKIP_SAVE'})
    pip_args: StringProperty(options={'HIDDEN', 'SKIP_SAVE'})

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        if worker_state.building() is not None:
            cls.poll_message_set("The worker environment is being created")
            return False
        return True

    def invoke(self, context: bpy.types.Context, event: bpy.types.Event) -> set[str]:
        if not bpy.app.online_access:  # show what to type instead; nothing is downloaded
            return context.window_manager.invoke_popup(self, width=DETAILS_WIDTH * 7)
        return context.window_manager.invoke_confirm(self, event)

    def draw(self, context: bpy.types.Context) -> None:
        column = self.layout.column(align=True)
        column.label(text="Allow Online Access is off (Preferences > System), so nothing is downloaded.",
                     icon='INFO')
        column.label(text="Turn it on and press Create again, or run these commands, then set Python:")
        for line in wrap(manual_commands(context), DETAILS_WIDTH):
            column.label(text=line)
        self.layout.operator("dff.copy_worker_commands", icon='COPYDOWN')

    def execute(self, context: bpy.types.Context) -> set[str]:
        if not bpy.app.online_access:
            self.report({'ERROR'}, "Allow Online Access is off (Preferences > System). To create the "
                                   f"environment by hand, run:\n{manual_commands(context)}")
            return {'CANCELLED'}
        try:
            worker_state.start_build(_variant(context), Path(self.requirements) if self.requirements else None,
                                     tuple(self.pip_args.split()))
        except (ValueError, OSError) as exc:
            self.report({'ERROR'}, str(exc))
            return {'CANCELLED'}
        self.report({'INFO'}, f"Creating the worker environment in '{worker_state.env_dir()}'...")
        return {'FINISHED'}


def _variant(context: bpy.types.Context) -> str:
    prefs = worker_state.addon_preferences()
    return prefs.torch_variant if prefs is not None else 'cuda'


def manual_commands(context: bpy.types.Context) -> str:
    return worker_env.manual_commands(worker_state.env_dir(), worker_state.base_python(), _variant(context))


class DFF_OT_copy_worker_commands(bpy.types.Operator):
    """Put the commands that create the worker environment by hand on the clipboard"""

    bl_idname = "dff.copy_worker_commands"
    bl_label = "Copy Commands"
    bl_options = {'INTERNAL'}

    def execute(self, context: bpy.types.Context) -> set[str]:
        context.window_manager.clipboard = manual_commands(context)
        self.report({'INFO'}, "Copied the commands to the clipboard")
        return {'FINISHED'}


class DFF_OT_cancel_worker_env(bpy.types.Operator):
    """Stop creating the worker environment (what was made so far is removed)"""

    bl_idname = "dff.cancel_worker_env"
    bl_label = "Cancel"
    bl_options = {'INTERNAL'}

    def execute(self, context: bpy.types.Context) -> set[str]:
        if not worker_state.cancel_build():
            return {'CANCELLED'}
        self.report({'INFO'}, "Cancelling the worker environment...")
        return {'FINISHED'}


class DFF_OT_test_connection(bpy.types.Operator):
    """Connect to the remote worker with the host, port and token above, and ask it for its version"""

    bl_idname = "dff.test_connection"
    bl_label = "Test Connection"
    bl_options = {'INTERNAL'}

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        problem = worker_state.context_problem(context)
        if not worker_settings(context).remote or problem:
            cls.poll_message_set(problem or "Set a remote host first")
            return False
        return True

    def execute(self, context: bpy.types.Context) -> set[str]:
        settings = worker_settings(context)
        where = f"{settings.host}:{settings.port}"

        def on_done(reply) -> None:
            if reply.ok:
                text = f"Connected to {where}: worker protocol {reply.result.get('version')}, " \
                       f"process {reply.result.get('pid')}"
            else:
                text = f"Cannot reach {where}: {(reply.error or {}).get('message', 'no answer')}"
            worker_state.STATE.connection = text
            report('INFO' if reply.ok else 'WARNING', text)

        try:
            worker_session.session().submit(context, api.PING.name, {}, on_done=on_done)
        except worker_session.WorkerUnavailable as exc:
            self.report({'ERROR'}, str(exc))
            return {'CANCELLED'}
        worker_state.STATE.connection = f"Connecting to {where}..."
        return {'FINISHED'}


_CLASSES = (DFF_OT_check_worker, DFF_OT_stop_worker, DFF_OT_create_worker_env, DFF_OT_copy_worker_commands,
            DFF_OT_cancel_worker_env, DFF_OT_test_connection)

register, unregister = bpy.utils.register_classes_factory(_CLASSES)
