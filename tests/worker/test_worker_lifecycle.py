"""A local worker lives no longer than the process that started it: when that process dies
(a Blender crash, kill -9), the worker cancels its jobs, keeps their checkpoints and exits."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import REPO, run_worker

EXIT_WITHIN_S = 10.0
START_TIMEOUT_S = 60.0

# Stands in for Blender: starts the worker through the add-on's client, optionally starts a
# training job, prints the worker's pid once things run, then waits to be killed.
PARENT_SCRIPT = """
import sys, threading, time
from blender_dff.worker.client import WorkerClient

repo, workspace, steps = sys.argv[1], sys.argv[2], int(sys.argv[3])
client = WorkerClient(python=sys.executable, worker_path=repo)
client.start()
deadline = time.monotonic() + 60
while client.state == "starting" and time.monotonic() < deadline:
    time.sleep(0.05)
assert client.state == "ready", client.failure
pid = client.wait(client.request("ping"), 60).result["pid"]
if workspace:
    training = threading.Event()
    # A step done: the loop runs (the stage's first event comes before its set-up)
    on_progress = lambda event: event["stage"] == "nerf" and event["step"] > 0 and training.set()
    client.request("train", {"workspace": workspace, "nerf_steps": steps}, on_progress=on_progress,
                   on_done=lambda reply: sys.exit(f"training ended early: {reply.error}"))
    while not training.is_set() and time.monotonic() < deadline:
        client.poll()
        time.sleep(0.01)
    assert training.is_set(), "no training progress within 60 s"
print(pid, flush=True)
time.sleep(600)
"""


def _has_exited(pid: int) -> bool:
    """True once `pid` is gone. A zombie counts as gone: whoever reaps it (init, here perhaps
    nobody) is not us, and it holds no memory."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    except OSError:  # no /proc (macOS): ask the kernel
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return False
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def _start_parent(workspace: Path | None = None, steps: int = 0) -> tuple[subprocess.Popen, int]:
    """The stand-in for Blender, and the pid of the worker it started."""
    parent = subprocess.Popen([sys.executable, "-c", PARENT_SCRIPT, str(REPO), str(workspace or ""), str(steps)],
                              cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = parent.stdout.readline()
    if not line.strip().isdigit():
        parent.kill()
        raise AssertionError(f"the parent printed {line!r} instead of a pid: {parent.communicate()[1]}")
    return parent, int(line)


def _kill_and_time_worker_exit(parent: subprocess.Popen, worker_pid: int) -> float:
    """SIGKILL the parent; seconds until its worker exited (fails after EXIT_WITHIN_S)."""
    assert not _has_exited(worker_pid)
    parent.kill()  # SIGKILL: no handler runs, only the OS closes the parent's pipes
    parent.wait()
    killed = time.monotonic()
    while not _has_exited(worker_pid):
        if time.monotonic() - killed > EXIT_WITHIN_S:
            os.kill(worker_pid, signal.SIGKILL)
            raise AssertionError(f"worker {worker_pid} still runs {EXIT_WITHIN_S:g} s after its parent died")
        time.sleep(0.05)
    return time.monotonic() - killed


def test_idle_worker_exits_when_its_parent_is_killed():
    parent, worker_pid = _start_parent()
    _kill_and_time_worker_exit(parent, worker_pid)


def test_training_worker_exits_and_its_training_resumes(tiny_scene, tmp_path):
    ws = tmp_path / "ws"
    run_worker("import", "--dataset", str(tiny_scene), "--workspace", str(ws))
    parent, worker_pid = _start_parent(ws, steps=5000)
    _kill_and_time_worker_exit(parent, worker_pid)

    stopped_at = json.loads((ws / "state.json").read_text())["stages"]["nerf"]["step"]
    assert 0 < stopped_at < 5000 and (ws / "nerf.pt").exists()
    result = run_worker("train", "--workspace", str(ws), "--steps", str(stopped_at + 3))
    assert f"NeRF: {stopped_at + 3} steps" in result.stdout
    # tqdm's bar shows the steps as they are reported: the first after the checkpoint's.
    nerf_bar = " ".join(line for line in re.split(r"[\r\n]", result.stderr) if line.startswith("nerf:"))
    assert f"| {stopped_at + 1}/{stopped_at + 3} " in nerf_bar
    assert f"| 1/{stopped_at + 3} " not in nerf_bar
