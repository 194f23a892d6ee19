"""The add-on's side of the wire: reach the worker (started by `process.WorkerProcess`, or
remote) and talk to it without ever blocking Blender's main thread.

Spawning, connecting, sending and receiving happen on background threads; what they learn
goes onto a queue that ``poll()`` drains on the main thread (from ``bpy.app.timers``), so
callbacks always run there, where bpy may be touched. stdlib + numpy only.
"""

from __future__ import annotations

import itertools
import queue
import secrets
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .process import OUTPUT_LINES, StartError, WorkerProcess
from ..wire import framing

HINT_LINES = 30  # how much of the worker's output goes into a failed request's hint


@dataclass
class Reply:
    """The end of a request: its result and arrays, or ``error`` = {code, message, hint}."""

    ok: bool
    result: dict = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    error: dict | None = None

    @classmethod
    def failure(cls, code: str, message: str, hint: str = "") -> Reply:
        return cls(ok=False, error={"code": code, "message": message, "hint": hint})


@dataclass
class _Pending:
    method: str
    on_progress: Callable[[dict], None] | None
    on_done: Callable[[Reply], None] | None


class WorkerClient:
    """A connection to one worker.

    Local mode (``host`` is None) spawns a `WorkerProcess` (``python -m external_worker
    serve``, or ``command``) with a fresh token and connects to the port it announces; it
    exits when this client closes or this process dies. Remote mode connects to
    ``host:port`` with ``token``.

    States: idle -> starting -> ready, then failed (start failed, the worker died or the
    connection dropped) or closed (``close()``). When it fails, every unfinished request
    ends with an error reply: ``worker_start_failed`` or ``worker_exited``.
    """

    def __init__(
        self,
        *,
        python: str | None = None,
        worker_path: str | None = None,
        host: str | None = None,
        port: int | None = None,
        token: str | None = None,
        command: list[str] | None = None,
        startup_timeout: float = 120.0,
        offline: bool = False,
    ) -> None:
        self._local = host is None
        if not self._local and (port is None or not token):
            raise ValueError("a remote worker needs host, port and token")
        self._python = python or sys.executable
        self._worker_path = worker_path
        self._host = host
        self._port = port
        self._token = token if token else secrets.token_urlsafe(32)
        self._command = command
        self._startup_timeout = startup_timeout
        self._offline = offline

        self._lock = threading.Lock()
        self._state = "idle"
        self._failure: str | None = None
        self._failure_code = "worker_exited"  # a request after the failure ends with the same code
        self._process: WorkerProcess | None = None
        self._sock: socket.socket | None = None

        self._ids = itertools.count(1)
        self._outbox: queue.Queue[list | None] = queue.Queue()  # encoded messages
        self._events: queue.Queue[tuple] = queue.Queue()
        # Main-thread bookkeeping (request/poll/wait).
        self._pending: dict[int, _Pending] = {}
        self._awaited: set[int] = set()
        self._finished: dict[int, Reply] = {}

    # --- public API ------------------------------------------------------------------------

    @property
    def state(self) -> str:
        return self._state

    @property
    def failure(self) -> str | None:
        return self._failure

    def output_tail(self, lines: int = OUTPUT_LINES) -> str:
        """The last lines the local worker wrote to stderr (and to stdout, besides its
        announcement), for showing the user what went wrong."""
        process = self._process
        return "" if process is None else process.output_tail(lines)

    def start(self) -> None:
        """Start connecting in the background; returns at once."""
        with self._lock:
            if self._state != "idle":
                raise RuntimeError(f"start() called on a client that is {self._state}")
            self._state = "starting"
        threading.Thread(target=self._connect_and_write, name="dff-client-start",
                         daemon=True).start()

    def request(
        self,
        method: str,
        params: dict | None = None,
        arrays: dict | None = None,
        *,
        on_progress: Callable[[dict], None] | None = None,
        on_done: Callable[[Reply], None] | None = None,
    ) -> int:
        """Queue a request and return its id at once. Callbacks run from ``poll()``.
        Without ``on_done`` the reply is kept until ``wait()`` takes it.

        Raises ValueError/TypeError at once for params or arrays that cannot be sent.
        Arrays are sent from views, so do not modify them until the request is done.
        """
        request_id = next(self._ids)
        header = {"type": "request", "id": request_id, "method": method,
                  "params": params or {}}
        parts = framing.encode_parts(header, arrays)
        with self._lock:
            self._pending[request_id] = _Pending(method, on_progress, on_done)
            state = self._state
        if state in ("failed", "closed"):
            self._events.put(("done", request_id, Reply.failure(
                self._failure_code if state == "failed" else "closed",
                f"cannot send {method!r}: the worker client is {state}",
                self._failure or "",
            )))
        else:
            self._outbox.put(parts)
        return request_id

    def cancel(self, request_id: int) -> None:
        """Ask the worker to stop a request; it still ends with a reply (code 'cancelled')."""
        with self._lock:
            if request_id in self._pending and self._state in ("starting", "ready"):
                self._outbox.put(framing.encode_parts({"type": "cancel", "id": request_id}))

    def poll(self) -> int:
        """Run the callbacks of what arrived since the last call; returns how many events
        were handled. Call on the main thread. A callback's exception propagates; the
        remaining events stay queued for the next call."""
        handled = 0
        while True:
            try:
                kind, request_id, payload = self._events.get_nowait()
            except queue.Empty:
                return handled
            handled += 1
            if kind == "progress":
                with self._lock:
                    pending = self._pending.get(request_id)
                if pending is not None and pending.on_progress is not None:
                    pending.on_progress(payload)
            elif kind == "done":
                self._finish(request_id, payload)
            elif kind == "failed":
                # One event per request, so a raising callback cannot swallow the others.
                with self._lock:
                    ids = sorted(self._pending)
                for pending_id in ids:
                    self._events.put(("done", pending_id, Reply.failure(*payload)))

    def wait(self, request_id: int, timeout: float) -> Reply:
        """Block until the request is done (polling meanwhile) and return its reply.
        For the command line and tests; never call it on Blender's main thread."""
        deadline = time.monotonic() + timeout
        with self._lock:
            pending = self._pending.get(request_id)
        if pending is None and request_id not in self._finished:
            raise KeyError(f"request {request_id} is unknown or its reply was already taken")
        self._awaited.add(request_id)
        try:
            while request_id not in self._finished:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"request {request_id} ({pending.method!r}) not done "
                                       f"after {timeout:g} s")
                if not self.poll():
                    time.sleep(0.01)
            return self._finished.pop(request_id)
        finally:
            self._awaited.discard(request_id)

    def close(self, timeout: float = 5.0) -> None:
        """Stop: ask a local worker to shut down, wait for it, kill it if it lingers.
        A remote worker keeps running. Idempotent."""
        with self._lock:
            previous, self._state = self._state, "closed"
            process = self._process
        if previous == "closed":
            return
        if self._local and previous == "ready":
            self._outbox.put(framing.encode_parts({
                "type": "request", "id": next(self._ids), "method": "shutdown", "params": {}}))
        self._outbox.put(None)  # lets the writer finish after the shutdown request
        if process is not None:
            # Only a connected worker got the shutdown; any other is killed at once.
            process.stop(timeout if previous == "ready" else 0)
        self._close_socket()
        self._events.put(("failed", None, ("closed", "the worker client was closed", "")))

    # --- background: start, write, read ----------------------------------------------------

    def _connect_and_write(self) -> None:
        """Start thread: spawn/connect, then become the writer."""
        try:
            host, port = self._spawn() if self._local else (self._host, self._port)
            sock = self._connect(host, port)
        except Exception as exc:  # whatever it is, the user must learn why, not wait forever
            what = "start the worker" if self._local else f"reach {self._host}:{self._port}"
            self._fail("worker_start_failed", f"could not {what}: {exc}")
            return
        with self._lock:
            if self._state != "starting":  # closed meanwhile
                sock.close()
                return
            self._sock, self._state = sock, "ready"
        threading.Thread(target=self._read, args=(sock,), name="dff-client-reader",
                         daemon=True).start()
        self._write(sock)

    def _spawn(self) -> tuple[str, int]:
        with self._lock:
            if self._state != "starting":
                raise StartError("closed while starting")
            self._process = process = WorkerProcess(self._python, self._token, worker_path=self._worker_path,
                                                    command=self._command, offline=self._offline)
        return process.address(self._startup_timeout)

    def _connect(self, host: str, port: int) -> socket.socket:
        sock = socket.create_connection((host, port), timeout=self._startup_timeout)
        try:
            framing.send_message(sock, {"type": "hello", "token": self._token,
                                         "version": framing.PROTOCOL_VERSION})
            answer = framing.recv_message(sock, max_payload=0)
            if answer.type == "error":
                raise StartError(f"{host}:{port} refused the connection: "
                                 f"{answer.header.get('code')}: {answer.header.get('message')}")
            if answer.type != "welcome":
                raise StartError(f"{host}:{port} answered {answer.type!r} instead of 'welcome'")
            sock.settimeout(None)
            return sock
        except BaseException:
            sock.close()
            raise

    def _write(self, sock: socket.socket) -> None:
        while True:
            parts = self._outbox.get()
            if parts is None:
                return
            try:
                for part in parts:
                    sock.sendall(part)
            except OSError as exc:
                self._connection_lost(exc)
                return

    def _read(self, sock: socket.socket) -> None:
        while True:
            try:
                message = framing.recv_message(sock)
            except (OSError, framing.ProtocolError) as exc:  # includes ConnectionClosed
                self._connection_lost(exc)
                return
            header = message.header
            if message.type == "progress":  # the event carries its arrays (a training preview)
                self._events.put(("progress", header.get("id"), {**header, "arrays": message.arrays}))
            elif message.type == "reply":
                self._events.put(("done", header.get("id"), Reply(
                    ok=True, result=header.get("result") or {}, arrays=message.arrays)))
            elif message.type == "error":
                self._events.put(("done", header.get("id"), Reply.failure(
                    str(header.get("code")), str(header.get("message")),
                    str(header.get("hint") or ""))))

    # --- failure -----------------------------------------------------------------------

    def _connection_lost(self, exc: BaseException) -> None:
        if self._state != "ready":  # closing, or already failed
            return
        process = self._process
        if process is None:
            message = f"lost the connection to the worker at {self._host}:{self._port}: {exc}"
        else:
            message = process.lost_connection(exc)
        self._fail("worker_exited", message)

    def _fail(self, code: str, message: str) -> None:
        with self._lock:
            if self._state in ("failed", "closed"):
                return
            self._state, self._failure_code = "failed", code
            tail = self.output_tail(HINT_LINES)
            self._failure = f"{message}\n{tail}" if tail else message
            process = self._process
        if process is not None:
            process.kill()
        self._close_socket()
        self._outbox.put(None)
        self._events.put(("failed", None, (code, message, tail)))

    def _close_socket(self) -> None:
        sock = self._sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def _finish(self, request_id: int, reply: Reply) -> None:
        with self._lock:
            pending = self._pending.pop(request_id, None)
        if pending is None:
            return
        if pending.on_done is None or request_id in self._awaited:
            self._finished[request_id] = reply
        if pending.on_done is not None:
            pending.on_done(reply)
