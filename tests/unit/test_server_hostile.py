"""The worker's server against peers that mean harm or misbehave: strangers that hold
connections open, guess tokens or send what Python cannot parse, and clients that flood it
with requests, reuse ids or make handlers fail in awkward ways. Each test is bounded in time."""

from __future__ import annotations

import contextlib
import logging
import socket
import struct
import threading
import time
from typing import Iterator

import pytest

from blender_dff.wire import framing
from external_worker.errors import WorkerError
from external_worker.server import gate, server
import fuzzlib
from raw_client import TIMEOUT_S, call, serving, session

CLIENT_BOUND_S = 1.0  # the longest strangers may delay the client, from connect to ping reply
RELEASE = threading.Event()  # what the "block" handler waits for


def _block(params: dict, arrays: dict, context) -> tuple[dict, dict]:
    if not RELEASE.wait(TIMEOUT_S):
        raise TimeoutError("the test never released the blocked request")
    return {"released": True}, {}


def _unspeakable_error(params: dict, arrays: dict, context) -> tuple[dict, dict]:
    raise WorkerError("bad_dataset", "cannot read /data/\udcff.png", "Rename /data/\udcff.png.")


def _unspeakable_crash(params: dict, arrays: dict, context) -> tuple[dict, dict]:
    raise RuntimeError("crashed on /data/\udcff.png")


def _unspeakable_result(params: dict, arrays: dict, context) -> tuple[dict, dict]:
    return {"names": ["a.png", "\udcff.png"]}, {}


class _Unprintable(Exception):
    def __str__(self) -> str:
        raise ValueError("this exception cannot be shown")


def _unprintable_crash(params: dict, arrays: dict, context) -> tuple[dict, dict]:
    raise _Unprintable()


HANDLERS = {**fuzzlib.HANDLERS, "block": _block,
            "unspeakable_error": _unspeakable_error, "unspeakable_crash": _unspeakable_crash,
            "unspeakable_result": _unspeakable_result, "unprintable_crash": _unprintable_crash}


@pytest.fixture
def port() -> Iterator[int]:
    RELEASE.clear()
    with serving(HANDLERS) as running:
        try:
            yield running.port
        finally:
            RELEASE.set()


@pytest.fixture
def client(port: int) -> Iterator[socket.socket]:
    """An authenticated connection."""
    with session(port) as sock:
        assert framing.recv_message(sock).type == "welcome"
        yield sock


def _time_to_ping(port: int) -> float:
    """Seconds from the client's connect to the reply to its ping."""
    started = time.monotonic()
    with session(port) as sock:
        assert framing.recv_message(sock).type == "welcome"
        assert call(sock, 1, "ping")[-1].type == "reply"
    return time.monotonic() - started


@contextlib.contextmanager
def _strangers(port: int, count: int) -> Iterator[list[socket.socket]]:
    sockets = [socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT_S)
               for _ in range(count)]
    try:
        yield sockets
    finally:
        for sock in sockets:
            sock.close()


@contextlib.contextmanager
def _dribbler(port: int) -> Iterator[threading.Event]:
    """A stranger sending a hello one byte a second; the event is set once the server has
    closed the connection."""
    cut_off, stop = threading.Event(), threading.Event()
    hello = framing.encode({"type": "hello", "token": "x" * 64, "version": 1})

    def dribble() -> None:
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.settimeout(1.0)
            for byte in hello:
                if stop.is_set():
                    return
                try:
                    sock.sendall(bytes([byte]))
                    if sock.recv(1) == b"":
                        cut_off.set()
                        return
                except TimeoutError:
                    continue  # a second without an answer: the next byte
                except OSError:
                    cut_off.set()
                    return

    thread = threading.Thread(target=dribble)
    thread.start()
    try:
        yield cut_off
    finally:
        stop.set()
        thread.join(TIMEOUT_S)


# --- strangers ---------------------------------------------------------------------------


def test_silent_and_dribbling_strangers_do_not_delay_the_client(port: int) -> None:
    with _dribbler(port), _strangers(port, 5):
        time.sleep(0.3)  # all of them connected and waiting before the client comes
        assert _time_to_ping(port) < CLIENT_BOUND_S


def test_more_strangers_than_pending_places_do_not_lock_out_the_client(port: int) -> None:
    with _strangers(port, gate.MAX_PENDING + 4):
        time.sleep(0.3)
        hello_threads = [t for t in threading.enumerate() if t.name == "dff-hello"]
        assert len(hello_threads) <= gate.MAX_PENDING  # the oldest strangers were pushed out
        assert _time_to_ping(port) < CLIENT_BOUND_S


def test_a_hello_has_one_deadline_however_slowly_it_comes(
        port: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gate, "HELLO_TIMEOUT_S", 1.5)
    with _dribbler(port) as cut_off:
        # Each byte comes within a second, yet the whole hello is cut off at its deadline.
        assert cut_off.wait(gate.HELLO_TIMEOUT_S + 2.0)


def _answer_to(port: int, token: str) -> tuple[str, float]:
    started = time.monotonic()
    with session(port, token) as sock:
        answer = framing.recv_message(sock)
    return answer.header.get("code", answer.type), time.monotonic() - started


def test_wrong_tokens_are_slowed_but_the_right_one_still_gets_in(port: int) -> None:
    answers = [_answer_to(port, f"guess-{n}") for n in range(gate.FREE_FAILURES + 5)]
    assert {code for code, _ in answers} == {"auth_failed"}
    waits = [seconds for _, seconds in answers]
    # Each guess after the free ones waits a step longer, up to the cap.
    for n, seconds in enumerate(waits[gate.FREE_FAILURES:], start=1):
        assert seconds >= min(gate.MAX_PENALTY_S, gate.PENALTY_STEP_S * n) - 0.01
    assert sum(waits) >= 1.45  # the last five waited 0.1 + 0.2 + 0.3 + 0.4 + 0.5 s
    assert _time_to_ping(port) < CLIENT_BOUND_S  # after the guesser's longest wait
    assert _answer_to(port, "guess-again")[1] < gate.PENALTY_STEP_S  # the count was cleared


# --- every request gets exactly one answer -----------------------------------------------


def test_error_texts_no_encoding_can_hold_still_get_their_answer(client: socket.socket) -> None:
    error = call(client, 1, "unspeakable_error")[-1].header
    assert error["id"] == 1 and error["code"] == "bad_dataset"
    assert error["message"] == "cannot read /data/\\udcff.png"
    crash = call(client, 2, "unspeakable_crash")[-1].header
    assert crash["id"] == 2 and crash["code"] == "internal"
    assert "\\udcff" in crash["message"] and "\\udcff" in crash["hint"]
    reply = call(client, 3, "unspeakable_result")[-1].header
    assert reply["result"] == {"names": ["a.png", "\udcff.png"]}


def test_an_answer_that_cannot_be_built_is_still_an_internal_error(
        client: socket.socket) -> None:
    error = call(client, 1, "unprintable_crash")[-1].header
    assert error["id"] == 1 and error["code"] == "internal"
    assert call(client, 2, "ping")[-1].header["id"] == 2  # nothing else was sent before


def test_more_requests_than_the_job_cap_are_refused_as_busy(client: socket.socket) -> None:
    extra = 3
    for request_id in range(server.MAX_JOBS + extra):
        framing.send_message(client, {"type": "request", "id": request_id, "method": "block",
                                      "params": {}})
    busy = [framing.recv_message(client).header for _ in range(extra)]
    assert [(error["id"], error["code"]) for error in busy] == [
        (request_id, "busy") for request_id in range(server.MAX_JOBS, server.MAX_JOBS + extra)]
    RELEASE.set()
    replies = [framing.recv_message(client).header for _ in range(server.MAX_JOBS)]
    assert sorted(reply["id"] for reply in replies) == list(range(server.MAX_JOBS))
    assert {reply["type"] for reply in replies} == {"reply"}
    assert call(client, 100, "ping")[-1].header["id"] == 100  # nothing else was sent before


@pytest.mark.parametrize("method", ["ping", "echo", "shutdown"])
def test_an_id_in_use_is_refused_and_the_running_request_answered_once(
        client: socket.socket, method: str) -> None:
    framing.send_message(client, {"type": "request", "id": 7, "method": "block", "params": {}})
    refused = call(client, 7, method)[-1].header
    assert refused["type"] == "error" and refused["code"] == "bad_request"
    assert refused["id"] == 7 and "in use" in refused["message"]
    RELEASE.set()
    assert framing.recv_message(client).header == {"type": "reply", "id": 7,
                                                    "result": {"released": True}}
    assert call(client, 8, "ping")[-1].header["id"] == 8  # nothing else was sent before


# --- memory and malformed input ----------------------------------------------------------


def _resident_bytes() -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def test_a_payload_announced_and_never_sent_takes_no_memory(port: int) -> None:
    before = _resident_bytes()
    with session(port) as sock:
        assert framing.recv_message(sock).type == "welcome"
        header = b'{"type":"request","id":1,"method":"echo","params":{}}'
        sock.sendall(struct.pack("<4sIQ", framing.MAGIC, len(header), framing.MAX_PAYLOAD_BYTES)
                     + header + bytes(1000))
    _time_to_ping(port)  # served once the server is done with the first connection
    assert _resident_bytes() - before < 50 << 20


HOSTILE_HEADERS = {
    "nested too deep": b'{"type": "request", "params": ' + b"[" * 50_000 + b"}",
    "int too long": b'{"type": "request", "id": ' + b"9" * 5000 + b"}",
    "too many dimensions": (b'{"type": "request", "arrays": [{"name": "a", "dtype": "uint8", '
                            b'"shape": [' + b"1, " * 40 + b'1], "offset": 0, "nbytes": 1}]}'),
    "too many elements": (b'{"type": "request", "arrays": [{"name": "a", "dtype": "uint8", '
                          b'"shape": [' + str(2**70).encode() + b', 0], "offset": 0, "nbytes": 0}]}'),
}


@contextlib.contextmanager
def _connection(port: int, authenticated: bool) -> Iterator[socket.socket]:
    if not authenticated:
        with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT_S) as sock:
            yield sock
        return
    with session(port) as sock:
        assert framing.recv_message(sock).type == "welcome"
        yield sock


@pytest.mark.parametrize("authenticated", [False, True])
@pytest.mark.parametrize("what", sorted(HOSTILE_HEADERS))
def test_input_python_cannot_parse_is_a_bad_message_without_a_traceback(
        port: int, what: str, authenticated: bool, caplog: pytest.LogCaptureFixture) -> None:
    header = HOSTILE_HEADERS[what]
    caplog.set_level(logging.DEBUG)
    with _connection(port, authenticated) as sock:
        sock.sendall(struct.pack("<4sIQ", framing.MAGIC, len(header), 0) + header)
        answer = framing.recv_message(sock).header
        assert answer["type"] == "error" and answer["code"] == "bad_message"
        with pytest.raises((framing.ConnectionClosed, ConnectionResetError)):
            framing.recv_message(sock)
    assert _time_to_ping(port) < CLIENT_BOUND_S
    assert not [record for record in caplog.records
                if record.exc_info or record.levelno >= logging.ERROR]


# --- fuzzing -----------------------------------------------------------------------------


def test_fuzzed_frames_never_crash_hang_or_go_unanswered(port: int) -> None:
    counts = fuzzlib.fuzz(port, frames=2000, seed=19)
    assert not counts.failures, "\n".join(counts.failures[:20])
    assert counts.requests > 200 and counts.replies > 100  # it did reach the handlers
