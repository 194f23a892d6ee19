"""Setting the add-on up as an artist does, in real Blender (headless): the worker's environment
(probe, Create Worker Environment, what the panels say while it is missing), where the add-on's
folders go, and how errors read. Panels are drawn into a recording layout."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import bpy
import pytest

import blender_dff
from addon_helpers import RecordingLayout, ScriptedClient
from blender_dff.worker.client import Reply
from dummy_wheel import write_dummy_wheel

TINY_PACKAGE = "dffsetup_dummy"


def draw(panel: type, region_width: int = 300, layout: RecordingLayout | None = None) -> RecordingLayout:
    """Draw `panel` into a recording layout as a sidebar `region_width` pixels wide would."""
    layout = layout or RecordingLayout()
    context = SimpleNamespace(scene=bpy.context.scene, preferences=bpy.context.preferences,
                              region=SimpleNamespace(width=region_width))
    panel.draw(SimpleNamespace(layout=layout), context)
    return layout


@pytest.fixture(scope="module")
def bare_python(tmp_path_factory) -> str:
    """A Python with nothing installed (a venv without even pip)."""
    env = tmp_path_factory.mktemp("bare") / "env"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True)
    return str(env / "bin" / "python")


# --- the worker's environment ------------------------------------------------------------


def test_a_python_without_the_packages_greys_out_the_worker_operators(addon, monkeypatch, bare_python):
    from blender_dff.worker import state as worker_state
    from blender_dff.ui.panels import DFF_PT_status

    monkeypatch.setenv("DFF_WORKER_PYTHON", bare_python)
    worker_state.start_probe(bare_python)
    report = worker_state.wait_for_probe(bare_python)
    assert report is not None and not report.ok
    assert {"torch", "trimesh", "PyMCubes", "numpy", "open_clip_torch"} <= set(report.missing)
    props = bpy.context.scene.dff
    props.dataset_path = str(Path(bare_python).parent)
    assert not bpy.ops.dff.import_dataset.poll()
    with pytest.raises(RuntimeError, match="missing: .*torch"):
        bpy.ops.dff.import_dataset()
    layout = draw(DFF_PT_status)
    text = " ".join(layout.labels())
    assert "Worker:" in text and "torch" in text and "trimesh" in text
    assert "preferences.addon_show" in layout.operators()


def test_no_python_set_says_to_create_the_environment(addon, monkeypatch):
    from blender_dff.ui.panels import DFF_PT_status

    monkeypatch.setenv("DFF_WORKER_PYTHON", "")
    assert not bpy.ops.dff.train.poll()
    assert "create the worker environment" in " ".join(draw(DFF_PT_status).labels())


def test_create_worker_environment_builds_a_venv_that_the_probe_then_finds(addon, monkeypatch, tmp_path):
    from blender_dff.worker import environment as worker_env, state as worker_state

    monkeypatch.setattr(worker_state, "env_dir", lambda: tmp_path / "worker_env")
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    write_dummy_wheel(wheels, TINY_PACKAGE)
    requirements = tmp_path / "requirements.txt"
    requirements.write_text(f"{TINY_PACKAGE}\n")
    bpy.context.preferences.system.use_online_access = True
    assert bpy.app.online_access
    result = bpy.ops.dff.create_worker_env(requirements=str(requirements),
                                           pip_args=f"--no-index --find-links {wheels}")
    assert result == {'FINISHED'}
    assert worker_state.building() is not None
    layout = RecordingLayout()
    worker_state.draw_status_bar(SimpleNamespace(layout=layout), bpy.context)
    assert "dff.cancel_worker_env" in layout.operators()
    assert any(entry[0] == "progress" for entry in layout.log)
    deadline = time.monotonic() + 300
    while worker_state.pump():
        assert time.monotonic() < deadline, "the environment was not made in time"
        time.sleep(0.2)
    assert not worker_state.STATE.build_error
    python = str(worker_env.default_env_python(tmp_path / "worker_env"))
    report = worker_state.wait_for_probe(python)
    assert report is not None and report.ok and not report.missing, report
    run = subprocess.run([python, "-c", f"import {TINY_PACKAGE}; print({TINY_PACKAGE}.VALUE)"],
                         capture_output=True, text=True)
    assert run.stdout.strip() == "1"


def test_without_online_access_nothing_is_downloaded_and_the_commands_are_shown(addon, monkeypatch, tmp_path):
    from blender_dff.worker import state as worker_state

    monkeypatch.setattr(worker_state, "env_dir", lambda: tmp_path / "worker_env")
    bpy.context.preferences.system.use_online_access = False
    assert not bpy.app.online_access
    with pytest.raises(RuntimeError, match="Allow Online Access is off") as error:
        bpy.ops.dff.create_worker_env()
    assert str(tmp_path / "worker_env") in str(error.value) and "pip install" in str(error.value)
    assert worker_state.building() is None and not (tmp_path / "worker_env").exists()
    from blender_dff.operators.worker import DFF_OT_create_worker_env

    dialog = RecordingLayout()  # what the button shows instead
    DFF_OT_create_worker_env.draw(SimpleNamespace(layout=dialog), bpy.context)
    assert any(str(tmp_path / "worker_env") in line for line in dialog.labels())
    assert "dff.copy_worker_commands" in dialog.operators()


def test_stop_worker_ends_the_worker_process(addon):
    from blender_dff.worker import session as worker_session

    replies = []
    worker_session.session().submit(bpy.context, "ping", {}, on_done=replies.append)
    deadline = time.monotonic() + 120
    while not replies:
        assert time.monotonic() < deadline, "the worker did not answer"
        worker_session.pump()
        time.sleep(0.05)
    assert replies[0].ok, replies[0].error
    pid = replies[0].result["pid"]
    assert bpy.ops.dff.stop_worker() == {'FINISHED'}
    deadline = time.monotonic() + 10
    while Path(f"/proc/{pid}").exists():  # our child: the close reaps it
        assert time.monotonic() < deadline, "the worker is still running"
        time.sleep(0.1)


# --- folders -----------------------------------------------------------------------------


def test_an_unsaved_file_captures_into_a_folder_blender_keeps(addon):
    from blender_dff import folders

    assert not bpy.data.filepath
    out = folders.capture_folder(bpy.context.scene.dff)
    assert not out.startswith(bpy.app.tempdir)
    assert Path(out).parent == Path(folders.data_folder("captures"))


def test_a_dataset_that_cannot_be_written_gets_its_workspace_in_a_folder_of_ours(addon, monkeypatch, tmp_path):
    from blender_dff import folders

    props = bpy.context.scene.dff
    props.dataset_path = str(tmp_path)
    monkeypatch.setattr(folders.os, "access", lambda path, mode: False)  # as a read-only share
    dataset, workspace = folders.resolve_paths(props, remote=False)
    assert dataset == str(tmp_path)
    assert Path(workspace).parent == Path(folders.data_folder("workspaces"))
    assert props.workspace_path == workspace  # shown in the panel, kept in the .blend


def test_a_remote_worker_gets_its_paths_as_typed(addon, monkeypatch):
    from blender_dff.operators import scene as operators
    from blender_dff.worker import state as worker_state
    from blender_dff.preferences import WorkerSettings

    remote = WorkerSettings(python="", host="gpu.example", port=5555, token="t")
    monkeypatch.setattr(operators, "worker_settings", lambda context: remote)
    monkeypatch.setattr(worker_state, "worker_settings", lambda context: remote)
    client = ScriptedClient()
    blender_dff.worker.session.session().use_client(client)
    props = bpy.context.scene.dff
    props.dataset_path = "/data/room"  # a folder on the worker's machine, not on this one
    assert bpy.ops.dff.import_dataset() == {'FINISHED'}
    assert client.sent[-1].params["dataset"] == "/data/room"
    assert client.sent[-1].params["workspace"] == "/data/room/dff_workspace"


# --- errors ------------------------------------------------------------------------------

LONG_MESSAGE = ("the image 'train/r_017.png' is 640 x 480 but the other images of the dataset are "
                "800 x 800: every image of a dataset must have the same size")
LONG_HINT = "\n".join(f"worker log line {k}: something happened" for k in range(12))


def test_a_long_error_wraps_to_the_sidebar_and_details_show_all_of_it(addon, capfd):
    from blender_dff.ui.messages import DFF_OT_error_details, error_details
    from blender_dff.ui.panels import DFF_PT_status

    props = bpy.context.scene.dff
    props.show_error({"code": "bad_dataset", "message": LONG_MESSAGE, "hint": LONG_HINT})
    assert "Error: The dataset cannot be read: the image 'train/r_017.png'" in capfd.readouterr().out

    labels = draw(DFF_PT_status, region_width=240).labels()
    assert labels[0] == "The dataset cannot be read"  # the code in plain words
    assert max(len(line) for line in labels) <= 30
    assert " ".join(labels).replace("  ", " ").count("every image of a dataset must have the same size") == 1
    assert "worker log line 11: something happened" in " ".join(labels)
    assert "worker log line 0: something happened" not in " ".join(labels)  # the panel shows the end
    details = RecordingLayout()
    DFF_OT_error_details.draw(SimpleNamespace(layout=details), bpy.context)
    shown = "\n".join(details.labels())
    assert LONG_MESSAGE in shown.replace("\n", " ")
    assert all(line in shown for line in LONG_HINT.splitlines())
    assert error_details(props).endswith(LONG_HINT)


def test_worker_errors_reach_the_info_log(addon, capfd):
    client = ScriptedClient()
    blender_dff.worker.session.session().use_client(client)
    bpy.context.scene.dff.workspace_path = str(Path.cwd())
    assert bpy.ops.dff.load_mesh() == {'FINISHED'}
    client.reply(client.sent[-1], Reply.failure("stage_missing", "no mesh yet", "Train first."))
    blender_dff.worker.session.pump()
    assert "Error: An earlier stage has not run yet: no mesh yet" in capfd.readouterr().out
