"""A capture plan rendered with Cycles in a background process running `render.py` on a saved
copy of the file, so the UI stays responsive. Progress and the end are picked up by `pump()`
(a timer in the UI; tests call it directly)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import bpy

CAPTURE_SCRIPT = Path(__file__).with_name("render.py")
POLL_INTERVAL = 0.2


@dataclass
class CaptureJob:
    """A capture rendering in a background process."""

    process: subprocess.Popen
    out: Path
    total: int
    on_done: Callable[[CaptureJob], None]
    on_progress: Callable[[CaptureJob], None]
    rendered: int = 0
    reported: int = 0
    error: str = ""
    cancelled: bool = False
    _log: list[str] = field(default_factory=list)

    def _read(self) -> None:
        for line in self.process.stdout:  # type: ignore[union-attr]
            words = line.split()
            if len(words) == 3 and words[0] == "rendered":
                self.rendered = int(words[1])
            else:
                self._log = (self._log + [line.rstrip()])[-20:]

    def finished(self) -> bool:
        """Whether the process has ended; sets `error` (with the log's tail) if it failed."""
        code = self.process.poll()
        if code is None:
            return False
        if self.cancelled:
            self.error = (f"the capture was cancelled after {self.rendered} of {self.total} views; "
                          f"'{self.out}' holds them: choose an empty folder to capture again")
        elif code != 0 or not (self.out / "transforms_train.json").is_file():
            tail = "\n".join(line for line in self._log if line.strip())[-2000:]
            self.error = f"rendering the capture failed (exit code {code}): {tail}"
        return True


_JOBS: list[CaptureJob] = []


def start_capture(context: bpy.types.Context, plan: dict, on_done: Callable[[CaptureJob], None],
                  on_progress: Callable[[CaptureJob], None]) -> CaptureJob:
    """Save a copy of the file and render `plan` from it in a background process. The Blender
    binary renders when there is one; the bpy module (scripts, tests) renders with this Python."""
    out = Path(plan["out"])
    out.mkdir(parents=True, exist_ok=True)
    blend = out / ".capture.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(blend), copy=True, check_existing=False)
    fd, plan_path = tempfile.mkstemp(prefix=".capture.", suffix=".json", dir=out)
    with os.fdopen(fd, "w") as f:
        json.dump({**plan, "blend": str(blend)}, f)
    binary = bpy.app.binary_path
    if binary:
        command = [binary, "-b", str(blend), "--factory-startup", "--python-exit-code", "1",
                   "--python", str(CAPTURE_SCRIPT), "--", plan_path]
    else:
        command = [sys.executable, str(CAPTURE_SCRIPT), plan_path]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               encoding="utf-8", errors="replace")
    job = CaptureJob(process, out, sum(len(m) for m in plan["views"].values()), on_done, on_progress)
    threading.Thread(target=job._read, daemon=True).start()
    _JOBS.append(job)
    if not bpy.app.timers.is_registered(_tick):
        bpy.app.timers.register(_tick, first_interval=POLL_INTERVAL, persistent=True)
    return job


def _cleanup(job: CaptureJob) -> None:
    for leftover in [job.out / ".capture.blend", job.out / ".capture.blend1", *job.out.glob(".capture.*.json")]:
        leftover.unlink(missing_ok=True)


def pump() -> int:
    """Report progress and finish the captures whose process ended (their callbacks run here, on
    the main thread); returns how many are still rendering."""
    for job in _JOBS:
        if job.rendered != job.reported:
            job.reported = job.rendered
            job.on_progress(job)
    for job in [job for job in _JOBS if job.finished()]:
        _JOBS.remove(job)
        _cleanup(job)
        job.on_done(job)
    return len(_JOBS)


def cancel(job: CaptureJob) -> None:
    """Stop one capture: its render ends, and its end is reported by the next `pump()` as an
    error saying it was cancelled."""
    if job in _JOBS:
        job.cancelled = True
        job.process.kill()


def cancel_all() -> None:
    """Stop every capture (the add-on is being disabled): kill the renders, drop their files."""
    for job in _JOBS:
        job.process.kill()
        job.process.wait()
        _cleanup(job)
    _JOBS.clear()
    if bpy.app.timers.is_registered(_tick):
        bpy.app.timers.unregister(_tick)


def _tick() -> float | None:
    return POLL_INTERVAL if pump() else None
