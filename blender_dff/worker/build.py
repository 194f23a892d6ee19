"""Create the worker environment in the background: the steps of `environment.build_steps`
run one after another on a thread, with their progress read from pip's output; a build that
fails or is cancelled leaves no folder behind.

Stdlib only, no bpy, like `environment`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from collections import deque
from pathlib import Path

from .environment import (BUILDING_MARKER, COMPLETE_MARKER, NO_WINDOW, REQUIREMENTS, BuildStep, build_steps,
                          child_environment, command_line, decode_output, default_env_python, environment_state,
                          requirements_hash)

_TAIL_LINES = 20  # of a failed step's output, in its error


class _Cancelled(Exception):
    pass


class _StepFailed(Exception):
    pass


class PipProgress:
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
                    env=child_environment(), creationflags=NO_WINDOW, start_new_session=os.name != "nt")
            except OSError as exc:
                raise _StepFailed(f"{step.title} failed: cannot run '{step.argv[0]}' "
                                  f"({exc.strerror or exc}): pick another base Python") from None
        tail: deque[str] = deque(maxlen=_TAIL_LINES)
        progress = PipProgress()
        for raw in process.stdout:
            line = decode_output(raw).rstrip()
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
                           creationflags=NO_WINDOW)
        except OSError:
            pass  # without taskkill, at least the step itself ends
        process.kill()
        return
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass  # it ended by itself meanwhile


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
