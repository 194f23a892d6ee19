"""A raw client of the worker's server, for the wire tests and the fuzzer: a server running in
this process, a connection that says hello, requests and the messages answering them, with
nothing in between (the add-on's WorkerClient would refuse to send what they send).
"""

from __future__ import annotations

import contextlib
import queue
import socket
import threading
from dataclasses import dataclass
from typing import Iterator

from blender_dff.wire import framing
from external_worker.server import server

TOKEN = "test-token"
TIMEOUT_S = 20.0  # a generous bound for anything that should take milliseconds
SHUTDOWN_ID = -1  # the id of the request that stops a test server


@dataclass
class RunningServer:
    port: int
    thread: threading.Thread  # the one running serve()


@contextlib.contextmanager
def serving(handlers: dict, token: str = TOKEN) -> Iterator[RunningServer]:
    """A server on a free loopback port; on leaving, shut down and checked to have stopped."""
    ports: queue.Queue[int] = queue.Queue()
    thread = threading.Thread(
        target=server.serve, args=(handlers,), name="dff-test-server", daemon=True,
        kwargs={"token": token, "announce": lambda host, port: ports.put(port)})
    thread.start()
    running = RunningServer(ports.get(timeout=TIMEOUT_S), thread)
    try:
        yield running
    finally:
        if thread.is_alive():
            _shut_down(running.port, token)
            thread.join(TIMEOUT_S)
        if thread.is_alive():
            raise RuntimeError("serve() did not return after shutdown")


def _shut_down(port: int, token: str) -> None:
    with session(port, token) as sock:
        if framing.recv_message(sock).type != "welcome":
            raise RuntimeError("the server did not welcome its shutdown")
        if call(sock, SHUTDOWN_ID, "shutdown")[-1].type != "reply":
            raise RuntimeError("the server refused to shut down")


@contextlib.contextmanager
def session(port: int, token: str = TOKEN) -> Iterator[socket.socket]:
    """A connection to the server that has said hello (its answer is left to read)."""
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT_S) as sock:
        framing.send_message(sock, {"type": "hello", "token": token,
                                     "version": framing.PROTOCOL_VERSION})
        yield sock


def call(sock: socket.socket, request_id: int, method: str, params: dict | None = None,
         arrays: dict | None = None) -> list[framing.Message]:
    """Send a request and collect its messages up to and including the final one."""
    framing.send_message(sock, {"type": "request", "id": request_id, "method": method,
                                 "params": params or {}}, arrays)
    messages = []
    while not messages or messages[-1].type == "progress":
        messages.append(framing.recv_message(sock))
    return messages
