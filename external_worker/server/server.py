"""The worker's socket server: serves admitted clients (see ``gate``), runs each request's
handler on its own thread, streams progress, and answers with a reply or a structured error.

One client connection is served at a time, while others are admitted (or refused) beside
it; when it goes away its running jobs are cancelled and the next admitted one is served
(the add-on may reconnect), until a ``shutdown`` request stops the server, or, when it
watches its parent's pipe, until that pipe closes. Every request ends with exactly one
reply or error, whatever its handler does. See ``blender_dff.wire`` for the messages.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import queue
import reprlib
import socket
import sys
import threading
import time
import traceback
from typing import BinaryIO, Callable

import numpy as np

from blender_dff.wire import api, framing
from ..errors import WorkerError
from .gate import Gate
from .job import JobContext

log = logging.getLogger(__name__)

MAX_JOBS = 8  # requests running at once; more are refused as "busy"
JOB_GRACE_S = 2.0  # how long a closing connection waits for its cancelled jobs
EXIT_GRACE_S = 5.0  # how long a worker whose parent is gone waits for its cancelled jobs
TRACEBACK_HINT_LINES = 12
BUILTIN_METHODS = tuple(method.name for method in api.BUILTINS)


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
        admitted: queue.Queue[tuple[socket.socket, tuple]] = queue.Queue()
        gate = Gate(listener, token, admit=lambda conn, address: admitted.put((conn, address)))
        accepting = threading.Thread(target=gate.run, args=(stop,), name="dff-gate", daemon=True)
        accepting.start()
        try:
            while not stop.is_set():
                conn, address = admitted.get()
                with conn:
                    live[:] = [c for c in live if c.running_jobs()]
                    connection = _Connection(conn, address, handlers, max_payload, stop)
                    live.append(connection)
                    connection.run()
        finally:
            stop.set()
            accepting.join()  # before the listener closes: the gate accepts on it
            while not admitted.empty():  # admitted, never served
                admitted.get_nowait()[0].close()


def _exit_at_end_of(stream: BinaryIO, live: list[_Connection]) -> None:
    """Read `stream` to its end, then cancel every job and exit the process. os._exit: the
    main thread is blocked serving a client or waiting for one and would never notice a
    normal exit request."""
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
    """One admitted client connection: welcome, then a read loop dispatching requests to job
    threads."""

    def __init__(
        self,
        conn: socket.socket,
        address: tuple,
        handlers: dict[str, Handler],
        max_payload: int,
        stop: threading.Event,
    ) -> None:
        self.conn = conn
        self.address = address
        self.handlers = handlers
        self.max_payload = max_payload
        self.stop = stop
        self.send_lock = threading.Lock()
        self.jobs: dict[int, tuple[threading.Thread, JobContext]] = {}
        self.jobs_lock = threading.Lock()

    def run(self) -> None:
        try:
            self._welcome()
            self._read_loop()
        except framing.ConnectionClosed:
            log.info("client %s disconnected", self.address)
        except framing.ProtocolError as exc:
            log.warning("dropping client %s: %s", self.address, exc)
            self.send_error(None, "bad_message", str(exc))
        except OSError as exc:
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
        self.send(framing.error_header(request_id, code, message, hint))

    def _welcome(self) -> None:
        self.conn.settimeout(None)
        # Detect a peer that vanished without closing (network loss) instead of waiting forever.
        self.conn.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        self.send({"type": "welcome", "version": framing.PROTOCOL_VERSION, "pid": os.getpid()})
        log.info("client %s connected", self.address)

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
                                f"unexpected message type {reprlib.repr(message.type)}")

    def _dispatch(self, header: dict, arrays: dict[str, np.ndarray]) -> bool:
        """Answer the request or start its job; returns True when the server must stop."""
        request_id, method = _request_id(header), header.get("method")
        params = header.get("params", {})
        if request_id is None:
            self.send_error(None, "bad_request",
                            f"request id must be an int, got {reprlib.repr(header.get('id'))}")
            return False
        with self.jobs_lock:
            in_use = request_id in self.jobs
        if in_use:  # refused, so that the running request still gets its own one answer
            self.send_error(request_id, "bad_request",
                            f"request id {request_id} is in use by a running request",
                            "Give each request an id of its own.")
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
            self.send_error(request_id, "unknown_method", f"unknown method {reprlib.repr(method)}",
                            f"Known methods: {known}.")
            return False
        context = JobContext(request_id, self.send)
        thread = threading.Thread(
            target=self._run_job, args=(handler, method, params, arrays, context),
            name=f"dff-job-{request_id}-{method}", daemon=True,
        )
        with self.jobs_lock:  # only this thread adds jobs: the id is still free
            busy = len(self.jobs) >= MAX_JOBS
            if not busy:
                self.jobs[request_id] = (thread, context)
        if busy:
            self.send_error(request_id, "busy", f"the worker is running {MAX_JOBS} requests already",
                            "Wait for one to finish, or cancel one.")
            return False
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
            answer = self._answer(handler, method, params, arrays, context)
        except BaseException:  # the last resort: even the error could not be encoded
            log.exception("request %s (%s): its answer could not be encoded", request_id, method)
            answer = framing.encode_parts(framing.error_header(
                request_id, "internal", "the worker could not encode this request's answer"))
        # Free the id and the job's place first: a client holding the answer may reuse both.
        with self.jobs_lock:
            self.jobs.pop(request_id, None)
        self._send_parts(answer)

    def _answer(
        self,
        handler: Handler,
        method: str,
        params: dict,
        arrays: dict[str, np.ndarray],
        context: JobContext,
    ) -> list:
        """The encoded reply, or the encoded error the request ends with instead."""
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
            # Encoded here, so an unsendable result becomes an error instead of a broken stream.
            return framing.encode_parts({"type": "reply", "id": request_id, "result": result},
                                        out_arrays)
        except WorkerError as exc:  # includes Cancelled
            error = framing.error_header(request_id, exc.code, exc.message, exc.hint)
        except Exception as exc:
            log.exception("request %s (%s) failed", request_id, method)
            lines = traceback.format_exception(exc)
            tail = "".join(lines).rstrip().splitlines()[-TRACEBACK_HINT_LINES:]
            error = framing.error_header(request_id, "internal", str(exc) or type(exc).__name__,
                                         "\n".join(tail))
        return framing.encode_parts(error)

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
