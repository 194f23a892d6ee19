"""The local worker process: `python -m external_worker serve` started with the client's token
in its environment, the port it announces on stdout, and the rest of its output kept for
error reports. stdlib only.
"""

from __future__ import annotations

import collections
import json
import os
import queue
import subprocess
import threading
import time

from ..wire import api

OUTPUT_LINES = 200  # how much of the worker's output is kept for error reports


class StartError(Exception):
    """The worker could not be started or reached; the message says why."""


class WorkerProcess:
    """One worker started on this machine: the constructor spawns it (``command``, or the
    server on a free local port) and the threads that drain its pipes; ``address()`` waits
    for the port it listens on.

    Its stdin is a pipe that is never written: with ``--exit-with-stdin`` the worker exits
    when our end closes, which ``stop()`` does and the OS does when this process dies,
    however it dies (a crash, kill -9).
    """

    def __init__(self, python: str, token: str, *, worker_path: str | None = None,
                 command: list[str] | None = None, offline: bool = False) -> None:
        self.command = command or [python, "-m", "external_worker", "serve",
                                   "--host", "127.0.0.1", "--port", "0", "--exit-with-stdin"]
        env = dict(os.environ)
        env[api.TOKEN_ENV] = token  # never on the command line, where `ps` shows it
        if worker_path:
            env["PYTHONPATH"] = os.pathsep.join(p for p in (worker_path, env.get("PYTHONPATH")) if p)
        env["PYTHONUNBUFFERED"] = "1"
        if offline:  # the user has not allowed online access: no model downloads
            env["HF_HUB_OFFLINE"] = "1"
        # The worker's stderr (and stray stdout) lines, appended by the pipe readers.
        self._output: collections.deque[str] = collections.deque(maxlen=OUTPUT_LINES)
        self._output_lock = threading.Lock()
        self._announced: queue.Queue[tuple[str, int]] = queue.Queue()
        self._popen = subprocess.Popen(
            self.command, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, encoding="utf-8", errors="replace",
            creationflags=getattr(subprocess, "CREATE_NO_WINDOW", 0),  # no console window on Windows
        )
        self._stderr_thread = threading.Thread(
            target=self._collect, args=(self._popen.stderr, False), name="dff-client-stderr", daemon=True)
        self._stderr_thread.start()
        threading.Thread(target=self._collect, args=(self._popen.stdout, True),
                         name="dff-client-stdout", daemon=True).start()

    def output_tail(self, lines: int = OUTPUT_LINES) -> str:
        """The last lines the worker wrote to stderr (and to stdout, besides its announcement)."""
        with self._output_lock:
            return "\n".join(list(self._output)[-lines:])

    def address(self, timeout: float) -> tuple[str, int]:
        """(host, port) the worker announced; raises StartError if it exits or stays silent
        for `timeout` seconds (it is killed then)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                return self._announced.get(timeout=0.05)
            except queue.Empty:
                pass
            if self._popen.poll() is not None:
                self._stderr_thread.join(1.0)
                raise StartError(f"the worker exited with code {self._popen.returncode} before listening")
            if time.monotonic() > deadline:
                self._popen.kill()
                raise StartError(f"the worker did not announce its port within {timeout:g} s"
                                 f" (command: {' '.join(self.command)})")

    def lost_connection(self, exc: BaseException) -> str:
        """Why the connection to the worker ended, once its last output is in: it exited (with
        its code), or it lingers and is killed."""
        try:
            message = f"the worker process exited with code {self._popen.wait(2.0)}"
        except subprocess.TimeoutExpired:
            self._popen.kill()
            message = f"lost the connection to the worker process ({exc}); killed it"
        self._stderr_thread.join(1.0)
        return message

    def kill(self) -> None:
        if self._popen.poll() is None:
            self._popen.kill()

    def stop(self, timeout: float) -> None:
        """Wait up to `timeout` seconds for the worker to exit, kill it if it lingers, then
        close its stdin."""
        try:
            self._popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self._popen.kill()
            self._popen.wait()
        self._popen.stdin.close()  # the worker's lifeline; kept open until now (never written)

    def _collect(self, stream, is_stdout: bool) -> None:
        """Drain one of the worker's pipes into the ring buffer; on stdout, also watch for
        the 'listening' announcement."""
        for line in stream:
            line = line.rstrip("\n")
            address = _parse_announcement(line) if is_stdout else None
            if address is not None:
                self._announced.put(address)
            else:
                with self._output_lock:
                    self._output.append(line)
        stream.close()


def _parse_announcement(line: str) -> tuple[str, int] | None:
    """(host, port) from the worker's `{"event": "listening", ...}` line, else None."""
    if not line.startswith("{"):
        return None
    try:
        event = json.loads(line)
        if event.get("event") == "listening":
            return str(event["host"]), int(event["port"])
    except (ValueError, KeyError, TypeError, AttributeError):
        pass
    return None
