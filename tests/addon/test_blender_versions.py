"""The add-on's tests again on every other Blender version we support (the environments
scripts/setup.sh makes in .venv-blender/), each in its own process, sharing this run's scene and
trained workspace. Their worker runs with this Python: the worker keeps its own interpreter."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from conftest import REPO, WORKER_PYTHON

# Every add-on test file (test_addon*.py) and the extension's packaging.
ADDON_TESTS = sorted(str(path.relative_to(REPO)) for path in (REPO / "tests/addon").glob("test_addon*.py")) + [
    "tests/addon/test_extension.py"]
# pytest, then an exit without Python's finalisation: the bpy 4.2 module crashes there (exit code
# -11) once any property with an update or poll callback was registered, add-on or not (a
# FloatProperty(update=f) on a PropertyGroup is enough), after every test has passed.
RUN_AND_EXIT = ("import os, sys, pytest; code = pytest.main(['-q', '-p', 'no:cacheprovider', *sys.argv[1:]]); "
                "sys.stdout.flush(); sys.stderr.flush(); os._exit(int(code))")
ENVIRONMENTS = sorted((REPO / ".venv-blender").glob("*/bin/python"))


def _bpy_version(python: Path) -> str:
    return python.parent.parent.name


@pytest.mark.skipif(not ENVIRONMENTS, reason="no other Blender environments: run scripts/setup.sh")
@pytest.mark.parametrize("python", ENVIRONMENTS, ids=_bpy_version)
def test_addon_tests_pass_on(python, tiny_scene, trained_workspace):
    env = {**os.environ, "DFF_WORKER_PYTHON": WORKER_PYTHON, "DFF_TEST_SCENE": str(tiny_scene),
           "DFF_TEST_WORKSPACE": str(trained_workspace)}
    run = subprocess.run([str(python), "-c", RUN_AND_EXIT, *ADDON_TESTS],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=1800)
    assert run.returncode == 0, f"Blender {_bpy_version(python)}:\n{run.stdout[-6000:]}\n{run.stderr[-3000:]}"
    assert " passed" in run.stdout.splitlines()[-1]
