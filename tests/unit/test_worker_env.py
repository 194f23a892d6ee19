"""The worker environment's back end (blender_dff.worker.environment and .build), without
Blender: probing interpreters, building an environment from a local wheel, cancelling, the
manual commands."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from blender_dff.worker import environment as worker_env
from blender_dff.worker.build import EnvironmentBuild, PipProgress
from blender_dff.worker.probe import applicable_requirements
from dummy_wheel import write_dummy_wheel

DUMMY = "dffprobe_dummy"


@pytest.fixture(scope="module")
def numpy_venv(tmp_path_factory) -> tuple[Path, float]:
    """A throw-away environment with numpy only, and the seconds it took to make."""
    env = tmp_path_factory.mktemp("numpy") / "env"
    started = time.monotonic()
    subprocess.run([sys.executable, "-m", "venv", str(env)], check=True, capture_output=True)
    python = worker_env.default_env_python(env)
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "numpy==1.26.4"],
                   check=True, capture_output=True)
    return python, time.monotonic() - started


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, list[str]]:
    """A requirements file naming only the dummy package, and pip options to install it from a
    local folder."""
    folder = tmp_path_factory.mktemp("tiny")
    write_dummy_wheel(folder, DUMMY)
    requirements = folder / "requirements.txt"
    requirements.write_text(f"{DUMMY}==1.0\n", encoding="utf-8")
    return requirements, ["--no-index", "--find-links", str(folder)]


@pytest.fixture(scope="module")
def tiny_build(tmp_path_factory, tiny) -> tuple[EnvironmentBuild, float]:
    requirements, pip_args = tiny
    env = tmp_path_factory.mktemp("build") / "env"
    started = time.monotonic()
    build = EnvironmentBuild(env, sys.executable, requirements, "cpu",
                             extra_pip_args=pip_args).start()
    assert build.wait(120), "the build did not end within 120 s"
    return build, time.monotonic() - started


def test_numpy_only_venv_lists_every_other_requirement_as_missing(numpy_venv):
    python, seconds = numpy_venv
    report = worker_env.probe(python)
    print(f"numpy-only venv made in {seconds:.1f} s")
    expected = [name for name, _ in applicable_requirements(worker_env.REQUIREMENTS.read_text())]
    assert report.missing == tuple(name for name in expected if name != "numpy")
    assert report.installed == {"numpy": "1.26.4"}
    assert not report.ok and not report.error
    assert report.summary.startswith(f"Python {sys.version.split()[0]}, missing: torch, torchvision, ")


def test_the_project_environment_is_ready():
    report = worker_env.probe(sys.executable)
    assert report.ok, report.summary
    assert report.torch_version.startswith("2.14.1") and report.device in {"cuda", "mps", "cpu"}
    assert report.summary.startswith(f"Python {sys.version.split()[0]}, torch 2.14.1")


def test_missing_or_unusable_pythons_give_reports_not_exceptions(tmp_path):
    missing = tmp_path / "no" / "python"
    report = worker_env.probe(missing)
    assert not report.ok and str(missing) in report.error and "does not exist" in report.error
    not_executable = tmp_path / "python"
    not_executable.write_text("", encoding="utf-8")
    assert "not executable" in worker_env.probe(not_executable).error
    not_python = worker_env.probe("/bin/echo")
    assert not not_python.ok and "/bin/echo" in not_python.summary


def test_markers_choose_numpy_by_python_version():
    text = worker_env.REQUIREMENTS.read_text(encoding="utf-8")
    numpy = {version: [line for name, line in applicable_requirements(text, version) if name == "numpy"]
             for version in ((3, 11), (3, 13))}
    assert numpy == {(3, 11): ['numpy==1.26.4; python_version < "3.13"'],
                     (3, 13): ['numpy>=2; python_version >= "3.13"']}


def test_tiny_build_completes_and_probes_clean(tiny_build, tiny):
    build, seconds = tiny_build
    requirements, _ = tiny
    print(f"tiny build took {seconds:.1f} s")
    assert build.done and build.error == "" and build.fraction == 1.0
    assert (build.env_dir / worker_env.COMPLETE_MARKER).is_file()
    assert not (build.env_dir / worker_env.BUILDING_MARKER).exists()
    assert worker_env.environment_state(build.env_dir, requirements) == "complete"
    assert worker_env.environment_state(build.env_dir) == "outdated"
    report = worker_env.probe(build.python, requirements)
    assert report.ok and report.missing == () and report.installed == {DUMMY: "1.0"}, report


def test_a_complete_environment_is_replaced_only_when_confirmed(tiny_build, tiny):
    build, _ = tiny_build
    requirements, pip_args = tiny
    again = EnvironmentBuild(build.env_dir, sys.executable, requirements, "cpu",
                             extra_pip_args=pip_args).start()
    assert again.done and "confirm replacing" in again.error and str(build.env_dir) in again.error
    assert worker_env.environment_state(build.env_dir, requirements) == "complete"


def test_a_foreign_folder_is_refused_untouched(tmp_path, tiny):
    requirements, pip_args = tiny
    (tmp_path / "notes.txt").write_text("mine", encoding="utf-8")
    build = EnvironmentBuild(tmp_path, sys.executable, requirements, "cpu",
                             extra_pip_args=pip_args, replace=True).start()
    assert build.done and str(tmp_path) in build.error and "nothing was changed" in build.error
    assert (tmp_path / "notes.txt").read_text(encoding="utf-8") == "mine"


def test_cancel_mid_step_removes_the_environment(tmp_path, tiny):
    requirements, pip_args = tiny
    env = tmp_path / "env"
    build = EnvironmentBuild(env, sys.executable, requirements, "cpu",
                             extra_pip_args=pip_args).start()
    deadline = time.monotonic() + 60
    while not (env / "pyvenv.cfg").exists() and time.monotonic() < deadline:
        time.sleep(0.01)  # venv writes pyvenv.cfg first, then spends seconds installing pip
    build.cancel()
    assert build.wait(30)
    assert build.error == "cancelled"
    assert not env.exists()


def test_manual_commands_are_the_build_steps(tmp_path):
    env = tmp_path / "worker env"
    commands = worker_env.manual_commands(env, "/usr/bin/python3", "cuda").splitlines()
    assert commands[0] == f"/usr/bin/python3 -m venv '{env}'"
    assert commands[-1] == f"'{env}/bin/python' -m pip install -r {worker_env.REQUIREMENTS}"
    assert len(commands) == 4 and "--index-url" not in commands[2]  # Linux: PyPI's CUDA wheels
    windows = worker_env.manual_commands(env, r"C:\Blender\python.exe", "cuda", platform="win32")
    assert f"--index-url {worker_env.CUDA_INDEX_URL}" in windows and "Scripts" in windows
    cpu = worker_env.manual_commands(env, "/usr/bin/python3", "cpu")
    assert f"--index-url {worker_env.CPU_INDEX_URL}" in cpu
    assert "--index-url" not in worker_env.manual_commands(env, "python3", "cpu", platform="darwin")


def test_pip_output_moves_the_progress():
    progress = PipProgress()
    fractions = []
    for line in ["Collecting torch==2.14.1", "  Downloading torch-2.14.1-cp311-none.whl (900 MB)",
                 "Progress 450 of 900", "Collecting numpy", "Installing collected packages: numpy, torch",
                 "Successfully installed numpy-1.26.4 torch-2.14.1"]:
        progress.feed(line)
        fractions.append(progress.fraction)
        if line.startswith("Progress"):
            assert progress.message == "Downloading 50%: torch-2.14.1-cp311-none.whl (900 MB)"
    assert fractions == sorted(fractions) and fractions[-2] < 1.0 == fractions[-1]


def test_a_failed_step_says_why_and_leaves_nothing(tmp_path, tiny):
    _, pip_args = tiny
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("dffprobe_absent==1.0\n", encoding="utf-8")
    env = tmp_path / "env"
    build = EnvironmentBuild(env, sys.executable, requirements, "cpu",
                             extra_pip_args=pip_args).start()
    assert build.wait(120)
    first, command, *_ = build.error.splitlines()
    assert first.startswith("Installing the worker's packages failed (exit 1): ERROR: ")
    assert str(requirements) in command and "--no-index" in command
    assert not env.exists()
