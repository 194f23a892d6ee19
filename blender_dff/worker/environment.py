"""The worker's Python environment, seen from outside it: where it lives, what a good one
holds (the probe of an interpreter against the worker's requirements), and the commands that
create it, which `build.EnvironmentBuild` runs and the user may copy to run by hand.

Stdlib only, no bpy: Blender's preferences call it, and tests use it without Blender.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from .probe import parse_requirements

REQUIREMENTS = Path(__file__).with_name("requirements.txt")
PROBE_SCRIPT = Path(__file__).with_name("probe.py")
PROBE_TIMEOUT = 120.0  # seconds: the first torch import (and CUDA start) can take a minute
VARIANTS = ("cuda", "cpu")
TORCH_PACKAGES = ("torch", "torchvision")
CPU_INDEX_URL = "https://download.pytorch.org/whl/cpu"
# PyPI has no CUDA builds of torch for Windows. This index must be one of the CUDA builds
# published for the torch pinned in worker/requirements.txt (2.14.1): check the +cuXYZ wheels
# listed at https://download.pytorch.org/whl/torch/ whenever either changes.
CUDA_INDEX_URL = "https://download.pytorch.org/whl/cu130"
COMPLETE_MARKER = ".dff_complete"  # written last: the environment is whole
BUILDING_MARKER = ".dff_building"  # written first: a folder this code is (or was) building
# Set by Blender or a shell for their own Python; another interpreter must not inherit them.
_FOREIGN_VARIABLES = ("PYTHONHOME", "PYTHONPATH", "__PYVENV_LAUNCHER__")
NO_WINDOW = getattr(subprocess, "CREATE_NO_WINDOW", 0)  # no console flashing up on Windows


def child_environment() -> dict[str, str]:
    """The environment variables of a command run with another interpreter."""
    env = {key: value for key, value in os.environ.items() if key not in _FOREIGN_VARIABLES}
    env.update(PYTHONIOENCODING="utf-8", PYTHONUNBUFFERED="1", PIP_NO_INPUT="1")
    return env


def decode_output(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")


def _tail(text: str, lines: int = 8) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


# --- probing ------------------------------------------------------------------------------

@dataclass(frozen=True)
class EnvironmentReport:
    """What an interpreter holds of the worker's requirements. `error` says why it cannot run
    the worker when that is not just missing distributions."""

    python: str
    error: str = ""
    python_version: str = ""
    executable: str = ""
    installed: dict[str, str] = field(default_factory=dict)  # distribution -> version
    missing: tuple[str, ...] = ()
    torch_version: str = ""
    device: str = ""  # "cuda", "mps" or "cpu"; "" without torch
    device_name: str = ""
    device_memory_gib: float = 0.0

    @property
    def ok(self) -> bool:
        """Whether this interpreter can run the worker."""
        return not self.error and not self.missing

    @property
    def summary(self) -> str:
        """One line for the UI."""
        if self.error:
            return self.error.splitlines()[0]
        if self.missing:
            return f"Python {self.python_version}, missing: {', '.join(self.missing)}"
        if not self.torch_version:
            return f"Python {self.python_version}, all requirements installed"
        return f"Python {self.python_version}, torch {self.torch_version}, {self.device_text}"

    @property
    def device_text(self) -> str:
        if self.device == "cuda":
            return f"CUDA: {self.device_name} ({self.device_memory_gib:.1f} GiB)"
        if self.device == "mps":
            return "Apple GPU (MPS)"
        return "CPU only (no CUDA GPU found)"


def probe(python: str | os.PathLike, requirements: Path = REQUIREMENTS,
          timeout: float = PROBE_TIMEOUT) -> EnvironmentReport:
    """Check `python` against `requirements` in a subprocess (blocks up to `timeout` s; call it
    off the UI thread). Never raises for a bad interpreter: the report's `error` says why."""
    python = os.fspath(python)
    problem = _interpreter_problem(python)
    if problem:
        return EnvironmentReport(python, error=problem)
    try:
        run = subprocess.run([python, str(PROBE_SCRIPT), str(requirements)],
                             stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout,
                             env=child_environment(), creationflags=NO_WINDOW)
    except subprocess.TimeoutExpired:
        return EnvironmentReport(python, error=f"Python '{python}' did not finish the environment check "
                                               f"within {timeout:g} s: try again, or pick another Python")
    except OSError as exc:
        return EnvironmentReport(python, error=f"Python '{python}' does not run ({exc.strerror or exc}): "
                                               "pick a Python 3.8 or newer")
    return _report_from_output(python, run)


def _interpreter_problem(python: str) -> str:
    if not python:
        return "no worker Python is set: create the worker environment or pick a Python interpreter"
    path = Path(python)
    if not path.exists():
        return (f"Python '{python}' does not exist: create the worker environment or pick an "
                "existing interpreter")
    if path.is_dir():
        return (f"'{python}' is a folder, not a Python interpreter: pick the interpreter inside it "
                f"(e.g. '{default_env_python(path)}')")
    if not os.access(path, os.X_OK):
        return (f"Python '{python}' is not executable: pick a Python interpreter (or make this file "
                "executable)")
    return ""


def _report_from_output(python: str, run: subprocess.CompletedProcess) -> EnvironmentReport:
    data = _last_json_object(decode_output(run.stdout))
    if run.returncode != 0 or data is None:
        detail = _tail(decode_output(run.stderr) or decode_output(run.stdout)) or "no output"
        return EnvironmentReport(python, error=f"Python '{python}' could not run the environment "
                                               f"check (exit {run.returncode}): is it Python 3.8 or newer?\n"
                                               f"{detail}")
    if data.get("error"):
        return EnvironmentReport(python, error=f"{data['error']}: reinstall the add-on")
    distributions = data["distributions"]
    torch = data.get("torch") or {}
    error = ""
    if data.get("torch_error"):
        error = (f"torch is installed in '{python}' but does not import ({data['torch_error']}): "
                 "create the worker environment anew")
    return EnvironmentReport(
        python, error=error,
        python_version=data["python_version"], executable=data["executable"],
        installed={item["name"]: item["installed"] for item in distributions if item["installed"]},
        missing=tuple(item["name"] for item in distributions if not item["installed"]),
        torch_version=torch.get("version", ""), device=torch.get("device", ""),
        device_name=torch.get("device_name", ""), device_memory_gib=torch.get("memory_gib", 0.0))


def _last_json_object(text: str) -> dict | None:
    """The probe prints one JSON line; anything a library printed before it is skipped."""
    for line in reversed(text.splitlines()):
        try:
            data = json.loads(line)
        except ValueError:
            continue
        if isinstance(data, dict) and ("distributions" in data or "error" in data):
            return data
    return None


# --- the environment's folder -------------------------------------------------------------

def default_env_python(env_dir: Path, platform: str = sys.platform) -> Path:
    """The interpreter inside the virtual environment `env_dir`."""
    if platform == "win32":
        return Path(env_dir) / "Scripts" / "python.exe"
    return Path(env_dir) / "bin" / "python"


def requirements_hash(requirements: Path) -> str:
    return hashlib.sha256(Path(requirements).read_bytes()).hexdigest()


def environment_state(env_dir: Path, requirements: Path = REQUIREMENTS) -> str:
    """What `env_dir` holds: "absent" (missing or empty), "complete" (built by this code from
    `requirements` as they are now), "outdated" (built from other requirements), "incomplete"
    (a build that did not finish) or "foreign" (anything else: never touched)."""
    path = Path(env_dir)
    if not path.exists() or (path.is_dir() and not any(path.iterdir())):
        return "absent"
    if not path.is_dir():
        return "foreign"
    marker = path / COMPLETE_MARKER
    if marker.is_file():
        try:
            recorded = json.loads(marker.read_text(encoding="utf-8")).get("requirements_sha256")
        except (OSError, ValueError, AttributeError):
            recorded = None
        return "complete" if recorded == requirements_hash(requirements) else "outdated"
    return "incomplete" if (path / BUILDING_MARKER).is_file() else "foreign"


# --- the steps, shared by the build and the manual commands -------------------------------

@dataclass(frozen=True)
class BuildStep:
    title: str  # for the status bar
    argv: tuple[str, ...]
    weight: float  # rough share of the build's time


def torch_index_url(variant: str, platform: str = sys.platform) -> str | None:
    """Where torch and torchvision come from; None for PyPI (macOS: its wheels have MPS;
    Linux: its default wheels are CUDA builds)."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown PyTorch variant '{variant}': use one of {', '.join(VARIANTS)}")
    if platform == "darwin":
        return None
    if variant == "cpu":
        return CPU_INDEX_URL
    return CUDA_INDEX_URL if platform == "win32" else None


def _torch_requirements(requirements: Path) -> list[str]:
    try:
        text = Path(requirements).read_text(encoding="utf-8")
        parsed = parse_requirements(text)
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read the worker requirements '{requirements}': {exc}") from None
    return [line for name, line, _ in parsed if name.lower() in TORCH_PACKAGES]


def build_steps(env_dir: Path, base_python: str | os.PathLike, requirements: Path = REQUIREMENTS,
                variant: str = "cuda", pip_args: tuple[str, ...] | list[str] = (), *,
                progress: bool = False, platform: str = sys.platform) -> list[BuildStep]:
    """The commands that create the environment, in order. `progress` adds pip's machine-
    readable download progress where pip was upgraded first (older pips do not have it)."""
    python = str(default_env_python(env_dir, platform))
    pip = (python, "-m", "pip", "install")
    extra = tuple(pip_args)
    online = "--no-index" not in extra
    report = ("--progress-bar", "raw") if progress and online else ()
    steps = [BuildStep("Creating the virtual environment",
                       (os.fspath(base_python), "-m", "venv", str(env_dir)), 1)]
    if online:
        steps.append(BuildStep("Updating pip", (*pip, "--upgrade", "pip", *extra), 1))
    torch = _torch_requirements(requirements)
    if torch:
        index = torch_index_url(variant, platform)
        steps.append(BuildStep(f"Installing PyTorch ({variant.upper()})",
                               (*pip, *torch, *(("--index-url", index) if index else ()), *report, *extra),
                               12))
    steps.append(BuildStep("Installing the worker's packages",
                           (*pip, "-r", str(requirements), *report, *extra), 6))
    return steps


def command_line(argv: tuple[str, ...] | list[str], platform: str = sys.platform) -> str:
    """`argv` as one would type it: for a POSIX shell, or for the Windows Command Prompt."""
    if platform != "win32":
        return shlex.join(argv)
    return " ".join(_cmd_quote(arg) for arg in argv)


def _cmd_quote(arg: str) -> str:
    quoted = subprocess.list2cmdline([arg])
    if quoted == arg and re.search(r"[<>|&^()]", arg):
        return f'"{arg}"'  # cmd would take these for redirections and separators
    return quoted


def manual_commands(env_dir: Path, base_python: str | os.PathLike, variant: str,
                    requirements: Path = REQUIREMENTS, *, pip_args: tuple[str, ...] = (),
                    platform: str = sys.platform) -> str:
    """The commands to create the environment by hand, one per line (for the Windows Command
    Prompt on Windows, a POSIX shell elsewhere): those `EnvironmentBuild` runs."""
    steps = build_steps(env_dir, base_python, requirements, variant, pip_args, platform=platform)
    return "\n".join(command_line(step.argv, platform) for step in steps)
