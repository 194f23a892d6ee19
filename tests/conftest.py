"""Shared fixtures: a tiny generated scene and a workspace trained on it, made once per run; the
add-on registered in an empty Blender scene, and a scripted worker client in place of the real one.

The scene comes from scripts/make_scene.py (Cycles on the CPU) and the workspace from the
headless command line, both in subprocesses so this process's Blender and torch stay clean.
Fixtures import bpy when used, so the worker's and the unit tests run without it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
# The worker's Python: this one, unless the add-on's tests run on another Blender (whose Python
# has no torch; see test_blender_versions.py). The add-on, registered by the tests without a
# preferences entry, reads it from the same variable.
WORKER_PYTHON = os.environ.setdefault("DFF_WORKER_PYTHON", sys.executable)

# Small enough to train in about two minutes on two CPU cores, big enough to segment.
TINY_SCENE = ["--resolution", "48", "--views", "24", "--test-views", "4", "--objects", "3", "--samples", "8"]
TINY_TRAINING = ["--steps", "250", "--feature-steps", "150", "--resolution", "96"]
# The same with a floor reaching past the box, the cone standing on the cube, the sphere touching it.
TINY_GROUNDED_SCENE = [*TINY_SCENE, "--ground"]


# Tests that use these fixtures render or train (minutes); `pytest -m "not slow"` leaves them out.
SLOW_FIXTURES = {"tiny_scene", "trained_workspace", "label_names", "ground_truth", "grounded_scene",
                 "grounded_workspace"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


BREAKAGES = ["missing_folder", "malformed_json", "missing_image", "size_mismatch"]


def broken_copy(scene: Path, out: Path, breakage: str) -> Path:
    """A copy of a scene with one thing wrong, as users get it wrong."""
    shutil.copytree(scene, out)
    if breakage == "missing_folder":
        shutil.rmtree(out)
    elif breakage == "malformed_json":
        (out / "transforms_train.json").write_text('{"camera_angle_x": 0.7, "frames": [')
    elif breakage == "missing_image":
        (out / "train" / "r_001.png").unlink()
    elif breakage == "size_mismatch":
        from PIL import Image

        Image.new("RGBA", (20, 20)).save(out / "train" / "r_002.png")
    return out


def run_worker(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    """`python -m external_worker ...` as a user would type it."""
    return subprocess.run([WORKER_PYTHON, "-m", "external_worker", *args], cwd=REPO, capture_output=True,
                          text=True, check=check, timeout=1200)


def _make_scene(out: Path, options: list[str]) -> Path:
    subprocess.run([sys.executable, str(REPO / "scripts" / "make_scene.py"), "--out", str(out), *options],
                   check=True, capture_output=True, timeout=600)
    return out


@pytest.fixture(scope="session")
def tiny_scene(tmp_path_factory) -> Path:
    if os.environ.get("DFF_TEST_SCENE"):  # made by the run that started this one
        return Path(os.environ["DFF_TEST_SCENE"])
    return _make_scene(tmp_path_factory.mktemp("scene") / "tiny", TINY_SCENE)


@pytest.fixture(scope="session")
def grounded_scene(tmp_path_factory) -> Path:
    return _make_scene(tmp_path_factory.mktemp("scene") / "grounded", TINY_GROUNDED_SCENE)


@pytest.fixture(scope="session")
def grounded_workspace(grounded_scene, tmp_path_factory) -> Path:
    ws = tmp_path_factory.mktemp("trained") / "grounded"
    run_worker("run", "--dataset", str(grounded_scene), "--workspace", str(ws), *TINY_TRAINING)
    return ws


@pytest.fixture(scope="session")
def trained_workspace(tiny_scene, tmp_path_factory) -> Path:
    if os.environ.get("DFF_TEST_WORKSPACE"):
        return Path(os.environ["DFF_TEST_WORKSPACE"])
    ws = tmp_path_factory.mktemp("trained") / "workspace"
    run_worker("run", "--dataset", str(tiny_scene), "--workspace", str(ws), *TINY_TRAINING)
    return ws


@pytest.fixture(scope="session")
def label_names(tiny_scene) -> dict[int, str]:
    return {int(k): v for k, v in json.loads((tiny_scene / "labels.json").read_text()).items()}


@pytest.fixture(scope="session")
def ground_truth(tiny_scene) -> dict[str, np.ndarray]:
    with np.load(tiny_scene / "ground_truth.npz") as data:
        return {k: data[k] for k in data.files}


@pytest.fixture
def addon():
    """The add-on registered in an empty scene, giving the scene's DFF properties; unregistered afterwards."""
    import bpy

    import blender_dff

    bpy.ops.wm.read_homefile(use_empty=True)
    blender_dff.register()
    from blender_dff.worker import session as worker_session

    yield bpy.context.scene.dff
    worker_session.session().shutdown()
    blender_dff.unregister()


@pytest.fixture
def worker(addon):
    """The add-on's worker client replaced by a ScriptedClient (addon_helpers.py)."""
    from addon_helpers import ScriptedClient
    from blender_dff.worker import session as worker_session

    client = ScriptedClient()
    worker_session.session().use_client(client)
    return client
