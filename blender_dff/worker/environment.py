"""The worker's Python environment, seen from outside it: probe an interpreter for the worker's
requirements, create a virtual environment with them in the background (cancellable), or
write out the commands that do the same by hand.

Stdlib only, no bpy: Blender's preferences call it, and tests use it without Blender.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import deque
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
_NO_WINDOW = getattr(subprocess, "CREATE_NO_WINDOW", 0)  # no console flashing up on Windows
_TAIL_LINES = 20


def _child_environment() -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key not in _FOREIGN_VARIABLES}
    env.update(PYTHONIOENCODING="utf-8", PYTHONUNBUFFERED="1", PIP_NO_INPUT="1")
    return env


def _decode(data: bytes) -> str:
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
                             env=_child_environment(), creationflags=_NO_WINDOW)
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
    data = _last_json_object(_decode(run.stdout))
    if run.returncode != 0 or data is None:
        detail = _tail(_decode(run.stderr) or _decode(run.stdout)) or "no output"
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


def _remove_tree(path: Path) -> None:
    for attempt in range(5):
        try:
            shutil.rmtree(path)
            return
        except FileNotFoundError:
            return
        except OSError:
            if attempt == 4:
                raise
            time.sleep(0.5)  # Windows frees a killed process's files a moment later


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


# --- the build ----------------------------------------------------------------------------

class _Cancelled(Exception):
    pass


class _StepFailed(Exception):
    pass


class _PipProgress:
    """A pip run's progress from its output, 0..1: each package found moves it on, downloads
    show their percentage, installing comes last."""

    def __init__(self) -> None:
        self.fraction = 0.0
        self.message = ""
        self._download = ""

    def feed(self, line: str) -> None:
        text = line.strip()
        if text.startswith("Progress "):  # "Progress 1024 of 4096" (--progress-bar raw)
            numbers = re.findall(r"\d+", text)
            if len(numbers) == 2 and int(numbers[1]) > 0 and self._download:
                percent = 100 * int(numbers[0]) // int(numbers[1])
                self.message = f"Downloading {percent}%: {self._download}"  # the UI cuts long lines
        elif text.startswith(("Collecting ", "Processing ", "Downloading ", "Using cached ")):
            self.fraction += (0.8 - self.fraction) * 0.1
            self.message = text
            self._download = text.partition(" ")[2] if text.startswith("Downloading ") else ""
        elif text.startswith("Installing collected packages"):
            self.fraction, self.message = max(self.fraction, 0.85), text
        elif text.startswith("Successfully installed"):
            self.fraction = 1.0


class EnvironmentBuild:
    """Creates a worker environment in `env_dir` on a background thread: `start()` returns at
    once; `fraction`, `message`, `done` and `error` may be read from any thread, `cancel()`
    called from any thread. A build that fails or is cancelled removes `env_dir`; one that
    succeeds writes COMPLETE_MARKER last. An existing environment of this code's is replaced
    only with `replace=True`; any other non-empty folder is refused, untouched."""

    def __init__(self, env_dir: Path, base_python: str | os.PathLike, requirements: Path = REQUIREMENTS,
                 variant: str = "cuda", extra_pip_args: tuple[str, ...] | list[str] = (),
                 replace: bool = False) -> None:
        self.env_dir = Path(env_dir)
        self.base_python = os.fspath(base_python)
        self.requirements = Path(requirements)
        self.variant = variant
        self.replace = replace
        self.steps = build_steps(self.env_dir, self.base_python, self.requirements, variant,
                                 extra_pip_args, progress=True)
        self._weights = [step.weight for step in self.steps]
        self._lock = threading.Lock()
        self._cancelled = threading.Event()
        self._finished = threading.Event()
        self._process: subprocess.Popen | None = None
        self._thread: threading.Thread | None = None
        self._fraction = 0.0
        self._message = ""
        self._error = ""

    @property
    def python(self) -> Path:
        """The environment's interpreter (once the build is done without error)."""
        return default_env_python(self.env_dir)

    @property
    def fraction(self) -> float:
        with self._lock:
            return self._fraction

    @property
    def message(self) -> str:
        with self._lock:
            return self._message

    @property
    def error(self) -> str:
        """"" while running and after success; "cancelled", or what failed and why."""
        with self._lock:
            return self._error

    @property
    def done(self) -> bool:
        return self._finished.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the build ends (scripts and tests); False if `timeout` passed first."""
        return self._finished.wait(timeout)

    def start(self) -> EnvironmentBuild:
        if self._thread is not None:
            raise ValueError(f"the build of '{self.env_dir}' was already started")
        refusal = self._refusal()
        self._thread = threading.Thread(target=self._run, name="dff-worker-env", daemon=True)
        if refusal:
            self._end(error=refusal)
        else:
            self._thread.start()
        return self

    def cancel(self) -> None:
        """Stop the build: the running command is killed, `env_dir` removed."""
        with self._lock:
            self._cancelled.set()
            process = self._process
        if process is not None:
            _kill_tree(process)

    def _refusal(self) -> str:
        if shutil.which(self.base_python) is None:
            return (f"the base Python '{self.base_python}' was not found (or is not executable): "
                    "pick an installed Python 3")
        try:
            state = environment_state(self.env_dir, self.requirements)
        except OSError as exc:
            return f"cannot look into '{self.env_dir}' ({exc}): pick another folder"
        if state == "foreign":
            return (f"'{self.env_dir}' is not empty and holds no worker environment made here: nothing "
                    "was changed; pick an empty or new folder")
        if state != "absent" and not self.replace:
            return f"'{self.env_dir}' already holds a worker environment ({state}): confirm replacing it"
        return ""

    def _run(self) -> None:
        try:
            self._prepare_folder()
            for index, step in enumerate(self.steps):
                self._run_step(index, step)
            self._write_marker()
        except _Cancelled:
            self._fail("cancelled")
        except _StepFailed as exc:
            self._fail(str(exc))
        except Exception as exc:  # noqa: BLE001 -- the thread must always end with a reason
            self._fail(f"creating the worker environment in '{self.env_dir}' failed: "
                       f"{type(exc).__name__}: {exc}")
        else:
            self._end(message="Worker environment ready", fraction=1.0)

    def _prepare_folder(self) -> None:
        if self.env_dir.exists():
            self._set(message=f"Removing the old environment in '{self.env_dir}'")
            _remove_tree(self.env_dir)
        self.env_dir.mkdir(parents=True)
        (self.env_dir / BUILDING_MARKER).write_text("being built by the DFF add-on\n", encoding="utf-8")

    def _run_step(self, index: int, step: BuildStep) -> None:
        start = sum(self._weights[:index]) / sum(self._weights)
        share = self._weights[index] / sum(self._weights)
        self._set(message=step.title, fraction=start)
        with self._lock:
            if self._cancelled.is_set():
                raise _Cancelled
            try:
                self._process = process = subprocess.Popen(
                    step.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                    env=_child_environment(), creationflags=_NO_WINDOW, start_new_session=os.name != "nt")
            except OSError as exc:
                raise _StepFailed(f"{step.title} failed: cannot run '{step.argv[0]}' "
                                  f"({exc.strerror or exc}): pick another base Python") from None
        tail: deque[str] = deque(maxlen=_TAIL_LINES)
        progress = _PipProgress()
        for raw in process.stdout:
            line = _decode(raw).rstrip()
            if not line.strip().startswith("Progress "):
                tail.append(line)
            progress.feed(line)
            self._set(message=progress.message or step.title, fraction=start + share * progress.fraction)
        returncode = process.wait()
        with self._lock:
            self._process = None
        if self._cancelled.is_set():
            raise _Cancelled
        if returncode != 0:
            raise _StepFailed(_failure(step, returncode, list(tail)))

    def _write_marker(self) -> None:
        record = {"requirements_sha256": requirements_hash(self.requirements), "variant": self.variant,
                  "base_python": self.base_python}
        temporary = self.env_dir / f"{COMPLETE_MARKER}.tmp"
        temporary.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
        os.replace(temporary, self.env_dir / COMPLETE_MARKER)
        (self.env_dir / BUILDING_MARKER).unlink()

    def _fail(self, error: str) -> None:
        try:
            _remove_tree(self.env_dir)
        except OSError as exc:
            error += (f"; the half-made environment '{self.env_dir}' could not be removed ({exc}): "
                      "delete that folder by hand")
        self._end(error=error, message=error.splitlines()[0])

    def _set(self, message: str | None = None, fraction: float | None = None) -> None:
        with self._lock:
            if message is not None:
                self._message = message
            if fraction is not None:
                self._fraction = min(1.0, max(self._fraction, fraction))

    def _end(self, error: str = "", message: str | None = None, fraction: float | None = None) -> None:
        self._set(message, fraction)
        with self._lock:
            self._error = error
        self._finished.set()


def _failure(step: BuildStep, returncode: int, tail: list[str]) -> str:
    """What failed: pip's own reason first (a UI may show only the first lines), then the
    command and the end of its output."""
    errors = [line.strip() for line in tail if line.strip().startswith("ERROR:")]
    reason = errors[-1] if errors else (tail[-1].strip() if tail else "no output")
    return (f"{step.title} failed (exit {returncode}): {reason}\n{command_line(step.argv)}\n"
            + "\n".join(tail))


def _kill_tree(process: subprocess.Popen) -> None:
    """Kill a step and what it started (pip runs build backends in subprocesses)."""
    if os.name == "nt":
        try:
            subprocess.run(["taskkill", "/F", "/T", "/PID", str(process.pid)], capture_output=True,
                           creationflags=_NO_WINDOW)
        except OSError:
            pass  # without taskkill, at least the step itself ends
        process.kill()
        return
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass  # it ended by itself meanwhile
