"""The worker's socket server: authenticates a client, runs each request's handler on its
own thread, streams progress, and answers with a reply or a structured error.

One client connection is served at a time; when it goes away its running jobs are
cancelled and the server waits for the next one (the add-on may reconnect), until a
``shutdown`` request stops it, or, when the server watches its parent's pipe, until that
pipe closes. See ``blender_dff.wire`` for the messages.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import os
import socket
import sys
import threading
import time
import traceback
from typing import BinaryIO, Callable

import numpy as np

from blender_dff.wire import api, framing
from ..errors import Cancelled, WorkerError

log = logging.getLogger(__name__)

HELLO_TIMEOUT_S = 10.0  # a connection that does not say hello in time is dropped
JOB_GRACE_S = 2.0  # how long a closing connection waits for its cancelled jobs
EXIT_GRACE_S = 5.0  # how long a worker whose parent is gone waits for its cancelled jobs
PROGRESS_INTERVAL_S = 0.1  # at most ~10 progress events per second per request
TRACEBACK_HINT_LINES = 12
BUILTIN_METHODS = tuple(method.name for method in api.BUILTINS)


class JobContext:
    """What a handler gets to report progress and notice cancellation.

    ``progress`` is throttled, but the first event of a stage, its last step
    (``step >= total``) and events carrying a preview image are always sent. Both ``progress`` and ``check_cancelled`` raise
    ``Cancelled`` once the client has cancelled the request, so a handler that calls
    either in its loop stops promptly.
    """

    def __init__(self, request_id: int, send: Callable[[dict, dict | None], None]) -> None:
        self.request_id = request_id
        self._send = send
        self._cancel = threading.Event()
        self._stage: str | None = None
        self._stage_start = 0.0
        self._stage_first_step = 0
        self._last_sent = 0.0

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def cancel(self) -> None:
        self._cancel.set()

    def check_cancelled(self) -> None:
        if self._cancel.is_set():
            raise Cancelled()

    def progress(
        self,
        stage: str,
        step: int,
        total: int,
        metrics: dict | None = None,
        message: str | None = None,
        preview: np.ndarray | None = None,
    ) -> None:
        self.check_cancelled()
        now = time.monotonic()
        new_stage = stage != self._stage
        if new_stage:
            self._stage, self._stage_start, self._stage_first_step = stage, now, step
        elif preview is None and step < total and now - self._last_sent < PROGRESS_INTERVAL_S:
            return
        self._last_sent = now
        done_steps = step - self._stage_first_step
        eta = None
        if done_steps > 0 and total > step:
            eta = (now - self._stage_start) / done_steps * (total - step)
        elif total > 0 and step >= total:
            eta = 0.0
        self._send({
            "type": "progress",
            "id": self.request_id,
            "stage": stage,
            "step": int(step),
            "total": int(total),
            "metrics": {str(k): float(v) for k, v in (metrics or {}).items()},
            "eta": eta,
            "message": message,
        }, None if preview is None else {"preview": preview})


# handler(params, arrays, context) -> (result, arrays). Raise WorkerError for failures the
# user can act on; any other exception is reported as code "internal" with its traceback.
Handler = Callable[[dict, dict[str, np.ndarray], JobContext], tuple[dict, dict[str, np.ndarray]]]


def announce_stdout(host: str, port: int) -> None:
    """Tell the spawning add-on where to connect: one JSON line on stdout."""
    sys.stdout.write(json.dumps({"event": "listening", "host": host, "port": port}) + "\n")
    sys.stdout.flush()


def serve(
    handlers: dict[str, Handler],
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    token: str,
    announce: Callable[[str, int], None] | None = None,
    max_payload: int = framing.MAX_PAYLOAD_BYTES,
    exit_with: BinaryIO | None = None,
) -> None:
    """Listen on host:port and serve clients one at a time until one sends ``shutdown``.

    ``port=0`` picks a free port; ``announce(host, port)`` is called once listening.
    Each request runs its handler on its own thread, so several may run at once; handlers
    that share a device must serialise themselves. Jobs still running when their client
    disconnects are cancelled (their replies could not be delivered).

    With ``exit_with`` (the spawning parent's pipe, the worker's stdin) the process exits
    when that stream ends: the parent is gone, however it died. Running jobs are cancelled
    first and get ``EXIT_GRACE_S`` to save their checkpoints.
    """
    if not token:
        raise ValueError(
            "serve() needs a non-empty token: without one anybody who can reach the port "
            "could drive the worker"
        )
    clashes = sorted(set(handlers) & set(BUILTIN_METHODS))
    if clashes:
        raise ValueError(f"handlers {clashes} clash with built-in methods {BUILTIN_METHODS}")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.create_server((host, port), family=family) as listener:
        bound_host, bound_port = listener.getsockname()[:2]
        if not ipaddress.ip_address(bound_host).is_loopback:
            log.warning(
                "listening on non-loopback address %s:%s; anyone who can reach it and "
                "knows the token can use this worker",
                bound_host, bound_port,
            )
        if announce is not None:
            announce(bound_host, bound_port)
        # Connections whose jobs may still run: the current one and any whose cancelled
        # jobs outlived their grace.
        live: list[_Connection] = []
        if exit_with is not None:
            threading.Thread(target=_exit_at_end_of, args=(exit_with, live),
                             name="dff-parent-watch", daemon=True).start()
        stop = threading.Event()
        while not stop.is_set():
            conn, address = listener.accept()
            with conn:
                live[:] = [c for c in live if c.running_jobs()]
                connection = _Connection(conn, address, handlers, token, max_payload, stop)
                live.append(connection)
                connection.run()


def _exit_at_end_of(stream: BinaryIO, live: list[_Connection]) -> None:
    """Read `stream` to its end, then cancel every job and exit the process. os._exit: the
    main thread is blocked in accept() and would never notice a normal exit request."""
    try:
        while stream.read(65536):
            pass
        # The parent held our stderr too: logging may fail now, exiting must not.
        log.warning("the parent process is gone (its pipe closed): cancelling jobs and exiting")
        _stop_jobs([job for connection in list(live) for job in connection.running_jobs()], EXIT_GRACE_S)
    finally:
        os._exit(0)


def _stop_jobs(jobs: list[tuple[threading.Thread, JobContext]], grace_s: float) -> None:
    """Cancel the jobs (trainers stop at their next step, keeping their last checkpoint)
    and wait up to `grace_s` for them all."""
    for _, context in jobs:
        context.cancel()
    deadline = time.monotonic() + grace_s
    for thread, context in jobs:
        thread.join(max(0.0, deadline - time.monotonic()))
        if thread.is_alive():
            log.warning("request %s is still running after cancel", context.request_id)


def _request_id(header: dict) -> int | None:
    """The header's request id when it is a proper int, else None."""
    value = header.get("id")
    return value if isinstance(value, int) and not isinstance(value, bool) else None


class _Connection:
    """One client connection: hello, then a read loop dispatching requests to job threads."""

    def __init__(
        self,
        conn: socket.socket,
        address: tuple,
        handlers: dict[str, Handler],
        token: str,
        max_payload: int,
        stop: threading.Event,
    ) -> None:
        self.conn = conn
        self.address = address
        self.handlers = handlers
        self.token = token.encode("utf-8")
        self.max_payload = max_payload
        self.stop = stop
        self.send_lock = threading.Lock()
        self.jobs: dict[int, tuple[threading.Thread, JobContext]] = {}
        self.jobs_lock = threading.Lock()

    def run(self) -> None:
        try:
            if self._handshake():
                self._read_loop()
        except framing.ConnectionClosed:
            log.info("client %s disconnected", self.address)
        except (framing.ProtocolError, OSError) as exc:
            log.warning("dropping client %s: %s", self.address, exc)
        except Exception:  # a bug here must not take the worker down with it
            log.exception("dropping client %s after an unexpected error", self.address)
        finally:
            self._cancel_jobs()

    def send(self, header: dict, arrays: dict | None = None) -> None:
        """Send from any thread; a vanished client is logged, not raised (the read loop
        notices it and cancels the jobs)."""
        self._send_parts(framing.encode_parts(header, arrays))

    def send_error(self, request_id: int | None, code: str, message: str, hint: str = "") -> None:
        self.send({"type": "error", "id": request_id, "code": code, "message": message,
                   "hint": hint})

    def _handshake(self) -> bool:
        self.conn.settimeout(HELLO_TIMEOUT_S)
        # A stranger gets a small payload allowance only, until authenticated.
        hello = framing.recv_message(self.conn, max_payload=0)
        token = hello.header.get("token")
        if hello.type != "hello" or not isinstance(token, str):
            self.send_error(None, "bad_message", "the first message must be 'hello' with a token")
            return False
        if not hmac.compare_digest(token.encode("utf-8"), self.token):
            log.warning("client %s sent a wrong token", self.address)
            self.send_error(None, "auth_failed", "wrong token",
                            "Use the token the worker was started with (DFF_WORKER_TOKEN).")
            return False
        if hello.header.get("version") != framing.PROTOCOL_VERSION:
            self.send_error(
                None, "version_mismatch",
                f"client speaks protocol {hello.header.get('version')!r}, "
                f"worker speaks {framing.PROTOCOL_VERSION}",
                "Install the same blender_dff version for the add-on and the worker.",
            )
            return False
        self.conn.settimeout(None)
        # Detect a peer that vanished without closing (network loss) instead of waiting forever.
        self.conn.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        self.send({"type": "welcome", "version": framing.PROTOCOL_VERSION, "pid": os.getpid()})
        log.info("client %s connected", self.address)
        return True

    def _read_loop(self) -> None:
        while True:
            message = framing.recv_message(self.conn, max_payload=self.max_payload)
            header = message.header
            if message.type == "request":
                if self._dispatch(header, message.arrays):
                    return
            elif message.type == "cancel":
                with self.jobs_lock:
                    job = self.jobs.get(_request_id(header))
                if job is not None:
                    job[1].cancel()
            else:
                self.send_error(_request_id(header), "bad_message",
                                f"unexpected message type {message.type!r}")

    def _dispatch(self, header: dict, arrays: dict[str, np.ndarray]) -> bool:
        """Start the request's job; returns True when the server must stop."""
        request_id, method = _request_id(header), header.get("method")
        params = header.get("params", {})
        if request_id is None:
            self.send_error(None, "bad_request",
                            f"request id must be an int, got {header.get('id')!r}")
            return False
        if not isinstance(method, str) or not isinstance(params, dict):
            self.send_error(request_id, "bad_request",
                            "a request needs a string 'method' and an object 'params'")
            return False
        if method == api.PING.name:
            self.send({"type": "reply", "id": request_id,
                       "result": {"version": framing.PROTOCOL_VERSION, "pid": os.getpid()}})
            return False
        if method == api.SHUTDOWN.name:
            self.send({"type": "reply", "id": request_id, "result": {}})
            self.stop.set()
            return True
        handler = self.handlers.get(method)
        if handler is None:
            known = ", ".join(sorted([*self.handlers, *BUILTIN_METHODS]))
            self.send_error(request_id, "unknown_method", f"unknown method {method!r}",
                            f"Known methods: {known}.")
            return False
        context = JobContext(request_id, self.send)
        thread = threading.Thread(
            target=self._run_job, args=(handler, method, params, arrays, context),
            name=f"dff-job-{request_id}-{method}", daemon=True,
        )
        with self.jobs_lock:
            if request_id in self.jobs:
                self.send_error(request_id, "bad_request", f"request id {request_id} is in use")
                return False
            self.jobs[request_id] = (thread, context)
        thread.start()
        return False

    def _run_job(
        self,
        handler: Handler,
        method: str,
        params: dict,
        arrays: dict[str, np.ndarray],
        context: JobContext,
    ) -> None:
        request_id = context.request_id
        try:
            outcome = handler(params, arrays, context)
            if not (isinstance(outcome, tuple) and len(outcome) == 2
                    and isinstance(outcome[0], dict) and isinstance(outcome[1], dict)):
                raise TypeError(
                    f"handler for {method!r} returned {type(outcome).__name__}, "
                    "expected a (result dict, arrays dict) tuple"
                )
            result, out_arrays = outcome
            # Encode first, so an unsendable result becomes an error instead of a broken stream.
            parts = framing.encode_parts({"type": "reply", "id": request_id, "result": result},
                                          out_arrays)
            self._send_parts(parts)
        except WorkerError as exc:  # includes Cancelled
            self.send_error(request_id, exc.code, exc.message, exc.hint)
        except Exception as exc:
            log.exception("request %s (%s) failed", request_id, method)
            lines = traceback.format_exception(exc)
            tail = "".join(lines).rstrip().splitlines()[-TRACEBACK_HINT_LINES:]
            self.send_error(request_id, "internal", str(exc) or type(exc).__name__,
                            "\n".join(tail))
        finally:
            with self.jobs_lock:
                self.jobs.pop(request_id, None)

    def _send_parts(self, parts: list) -> None:
        try:
            with self.send_lock:
                for part in parts:
                    self.conn.sendall(part)
        except OSError as exc:
            log.info("could not send to %s: %s", self.address, exc)

    def running_jobs(self) -> list[tuple[threading.Thread, JobContext]]:
        with self.jobs_lock:
            return list(self.jobs.values())

    def _cancel_jobs(self) -> None:
        """Replies can no longer be delivered once the connection ends: stop the jobs."""
        _stop_jobs(self.running_jobs(), JOB_GRACE_S)
