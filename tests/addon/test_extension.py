"""The packaged extension: built by scripts/build_extension.py, validated and installed by
Blender's own extension machinery into a temporary repository, enabled, then removed."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path
from types import SimpleNamespace

import bpy
import addon_utils  # noqa: E402 -- importable only once bpy is
import pytest

from addon_helpers import RecordingLayout

REPO = Path(__file__).resolve().parents[2]
REPO_MODULE = "dff_test_repo"
MODULE = f"bl_ext.{REPO_MODULE}.blender_dff"


@pytest.fixture(scope="module")
def extension_zip(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    run = subprocess.run([sys.executable, str(REPO / "scripts" / "build_extension.py"),
                          "--out", str(out)], check=True, capture_output=True, text=True)
    path = Path(run.stdout.strip())
    assert path == out / "blender_dff-0.1.0.zip" and path.is_file()
    return path


@pytest.fixture
def extension_repo(tmp_path):
    """A user extension repository in a temporary folder, removed afterwards; an empty file."""
    bpy.ops.wm.read_homefile(use_empty=True)
    repos = bpy.context.preferences.extensions.repos
    repo = repos.new(name="DFF Test", module=REPO_MODULE, custom_directory=str(tmp_path),
                     source='USER')
    yield repo
    if MODULE in bpy.context.preferences.addons:
        addon_utils.disable(MODULE, default_set=True)
    repos.remove(repo)


def test_zip_layout(extension_zip):
    names = set(zipfile.ZipFile(extension_zip).namelist())
    assert {"blender_manifest.toml", "LICENSE", "__init__.py", "operators/base.py", "worker/client.py",
            "wire/framing.py", "worker/requirements.txt", "worker/probe.py",
            "external_worker/__init__.py"} <= names
    assert not any("__pycache__" in name or name.endswith(".pyc") for name in names)
    assert not any(name.startswith("blender_dff/") for name in names)


def test_blender_validates_the_zip(extension_zip):
    import bl_pkg

    cli = Path(bl_pkg.__file__).parent / "cli" / "blender_ext.py"
    run = subprocess.run([sys.executable, str(cli), "validate", str(extension_zip)],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr


def test_install_enable_disable(extension_zip, extension_repo):
    result = bpy.ops.extensions.package_install_files(
        repo=REPO_MODULE, filepath=str(extension_zip), enable_on_install=True)
    assert result == {'FINISHED'}
    installed = Path(extension_repo.directory) / "blender_dff"
    assert (installed / "external_worker" / "__init__.py").is_file()
    assert MODULE in bpy.context.preferences.addons
    assert {"import_dataset", "train", "cancel", "select_text", "separate"} <= set(
        dir(bpy.ops.dff))
    assert "dff" in bpy.types.Scene.bl_rna.properties
    prefs = bpy.context.preferences.addons[MODULE].preferences
    assert prefs.python == ""  # never Blender's own interpreter, which has no torch

    # What it makes goes under the extension's user folder, which Blender keeps.
    user = Path(bpy.utils.extension_path_user(MODULE))
    assert sys.modules[f"{MODULE}.worker.state"].env_dir() == user / "worker_env"
    capture = sys.modules[f"{MODULE}.folders"].capture_folder(bpy.context.scene.dff)
    assert Path(capture).parent == user / "captures" and not capture.startswith(bpy.app.tempdir)

    # Until a worker Python is set, the preferences offer to make one and the panels say why
    # the worker's operators are greyed out.
    assert not bpy.ops.dff.import_dataset.poll()
    layout = RecordingLayout()
    proxy = SimpleNamespace(layout=layout, **{name: getattr(prefs, name)
                                              for name in ("python", "torch_variant", "host", "port", "token")})
    type(prefs).draw(proxy, bpy.context)
    assert "No worker Python yet: create the worker environment below." in layout.labels()
    assert {"dff.create_worker_env", "dff.check_worker", "dff.stop_worker", "dff.test_connection"} <= set(
        layout.operators())

    # The installed add-on hands its worker a PYTHONPATH under which both the bundled
    # worker and the add-on's wire package import.
    pythonpath = sys.modules[f"{MODULE}.worker.session"].worker_pythonpath()
    code = ("import external_worker, blender_dff.wire.framing as p, sys; "
            "print(external_worker.__file__, p.__file__); assert 'bpy' not in sys.modules")
    run = subprocess.run([sys.executable, "-c", code], cwd=os.path.expanduser("~"),
                         env={**os.environ, "PYTHONPATH": pythonpath},
                         check=True, capture_output=True, text=True)
    assert run.stdout.split() == [str(installed / "external_worker" / "__init__.py"),
                                  str(installed / "wire" / "framing.py")]

    addon_utils.disable(MODULE, default_set=True)
    assert not hasattr(bpy.types, "DFF_OT_train")
    assert "dff" not in bpy.types.Scene.bl_rna.properties
