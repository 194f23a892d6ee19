"""The worker's environment as Blender sees it: probing the chosen Python, creating the
environment from inside Blender, and telling the panels why the worker cannot run.

Probes and builds run on background threads (`environment`, `build`); what they find reaches Blender
only through `pump()`, on the main thread (a timer in the UI; tests call it directly).
"""

from __future__ import annotations

import os
import sys
import threading
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import bpy

from . import environment as worker_env
from .build import EnvironmentBuild
from .. import ADDON_ID
from ..preferences import WorkerSettings, worker_settings

POLL_INTERVAL = 0.25
ENV_FOLDER = "worker_env"


@dataclass
class _State:
    """Runtime only (never saved, untouched by undo): the latest probe of each Python and the
    environment build in progress."""

    reports: dict[str, worker_env.EnvironmentReport] = field(default_factory=dict)
    probing: dict[str, threading.Thread] = field(default_factory=dict)
    build: EnvironmentBuild | None = None
    build_error: str = ""
    connection: str = ""  # outcome of the latest Test Connection


STATE = _State()


def env_dir() -> Path:
    """Where Create Worker Environment puts the environment: the extension's user folder."""
    from ..folders import data_folder

    return Path(data_folder(ENV_FOLDER))


def base_python() -> str:
    """The interpreter a new environment is made from: Blender's own (only to run `venv`)."""
    return sys.executable


def report_for(python: str) -> worker_env.EnvironmentReport | None:
    return STATE.reports.get(python)


def start_probe(python: str, requirements: Path = worker_env.REQUIREMENTS) -> None:
    """Probe `python` against `requirements` in the background (one probe at a time per
    interpreter)."""
    if not python or python in STATE.probing:
        return

    def run() -> None:
        try:
            report = worker_env.probe(python, requirements)
        except Exception:  # noqa: BLE001 -- a bug in the probe must not stop the add-on
            traceback.print_exc()
            return
        STATE.reports[python] = report

    thread = threading.Thread(target=run, name="dff-probe", daemon=True)
    STATE.probing[python] = thread
    thread.start()
    _ensure_timer()


def wait_for_probe(python: str, timeout: float = 60.0) -> worker_env.EnvironmentReport | None:
    """Block until the probe of `python` ends (scripts and tests only, never the UI)."""
    thread = STATE.probing.get(python)
    if thread is not None:
        thread.join(timeout)
    pump()
    return report_for(python)


def problem(settings: WorkerSettings) -> str:
    """Why the worker cannot run with these settings, in words for the panel; "" if it can
    (or nothing says otherwise yet)."""
    if settings.remote:
        if not settings.port or not settings.token:
            return f"the remote worker at '{settings.host}' needs a port and a token"
        return ""
    if not settings.python:
        return "no worker Python yet: create the worker environment in the add-on's preferences"
    if not os.path.isfile(settings.python):
        return f"worker Python not found: '{settings.python}'"
    report = report_for(settings.python)
    if report is not None and not report.ok:
        return report.summary
    return ""


def context_problem(context: bpy.types.Context) -> str:
    return problem(worker_settings(context))


def start_build(variant: str, requirements: Path | None = None,
                pip_args: tuple[str, ...] = ()) -> EnvironmentBuild:
    """Create (or replace) the worker environment in the background."""
    if STATE.build is not None and not STATE.build.done:
        raise ValueError("the worker environment is already being created")
    STATE.build_error = ""
    build = EnvironmentBuild(
        env_dir(), base_python(), requirements or worker_env.REQUIREMENTS, variant,
        extra_pip_args=list(pip_args), replace=True)
    build.start()
    STATE.build = build
    _ensure_timer()
    return build


def cancel_build() -> bool:
    build = STATE.build
    if build is None or build.done:
        return False
    build.cancel()
    return True


def building() -> EnvironmentBuild | None:
    """The build in progress, if any."""
    build = STATE.build
    return build if build is not None and not build.done else None


def _finish_build(build: EnvironmentBuild) -> None:
    """A build ended: on success the preferences point at its Python, which is probed."""
    STATE.build = None
    if build.error:
        STATE.build_error = build.error
        print(f"DFF: creating the worker environment failed: {build.error}")
        return
    python = str(build.python)
    STATE.reports.pop(python, None)
    start_probe(python, build.requirements)
    prefs = addon_preferences()
    if prefs is not None:
        prefs.python = python


def addon_preferences() -> bpy.types.AddonPreferences | None:
    addon = bpy.context.preferences.addons.get(ADDON_ID)
    return None if addon is None else addon.preferences


def pump() -> int:
    """Collect finished probes and builds; returns how many are still running."""
    for python, thread in list(STATE.probing.items()):
        if not thread.is_alive():
            del STATE.probing[python]
    build = STATE.build
    if build is not None and build.done:
        _finish_build(build)
    _redraw()
    return len(STATE.probing) + (STATE.build is not None)


def _redraw() -> None:
    for window in bpy.context.window_manager.windows:
        for area in window.screen.areas:
            if area.type in {'PREFERENCES', 'STATUSBAR', 'VIEW_3D'}:
                area.tag_redraw()


def _tick() -> float | None:
    try:
        running = pump()
    except Exception:  # noqa: BLE001 -- a raising timer would be unregistered for good
        traceback.print_exc()
        return None
    return POLL_INTERVAL if running else None


def _ensure_timer() -> None:
    if not bpy.app.timers.is_registered(_tick):
        bpy.app.timers.register(_tick, first_interval=POLL_INTERVAL, persistent=True)


def draw_status_bar(self: bpy.types.Header, context: bpy.types.Context) -> None:
    """The environment build in Blender's status bar: progress and Cancel."""
    build = building()
    if build is None:
        return
    row = self.layout.row(align=True)
    row.progress(factor=build.fraction, type='BAR', text=f"DFF worker environment: {build.message}"[:90])
    row.operator("dff.cancel_worker_env", text="", icon='CANCEL')


def register() -> None:
    bpy.types.STATUSBAR_HT_header.append(draw_status_bar)
    prefs = addon_preferences()
    if prefs is not None and prefs.python:
        start_probe(bpy.path.abspath(prefs.python))


def unregister() -> None:
    bpy.types.STATUSBAR_HT_header.remove(draw_status_bar)
    cancel_build()
    if bpy.app.timers.is_registered(_tick):
        bpy.app.timers.unregister(_tick)
