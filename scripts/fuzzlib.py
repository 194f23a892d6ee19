"""A fuzzer of the worker's server: valid frames, mutated (cut short, bytes flipped, lengths
lied about, headers Python cannot parse, values of the wrong type), sent before and after
authentication to a server running `HANDLERS` in this process, each checked against what
the server must do with it.

The server must answer each well-framed request exactly once and never with ``internal``
(the handler cannot fail: any ``internal`` is the server's), refuse a bad hello with the
right error, drop a connection whose bytes are not a message (after, at most, a
``bad_message`` error), log no error, and answer a ping within PING_BOUND_S after every batch.
Used by tests/unit/test_server_hostile.py (a short run) and scripts/fuzz_server.py (a long one).
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import reprlib
import socket
import struct
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

from blender_dff.wire import framing
from raw_client import TOKEN, session

BATCH = 25  # frames between two pings
PING_BOUND_S = 1.0  # how soon a ping after a batch must be answered
ANSWER_BOUND_S = 3.0  # how soon any other answer must come (a wrong token waits up to 0.5 s)
MAX_FAILURES = 50  # a run stops early once it has found this many
PING_ID = 0  # the fuzzed requests' ids are positive
METHODS = ("echo", "ping", "no_such_method")
MUTATIONS = {"none": 5, "truncate": 2, "flip": 4, "length": 2, "json": 2, "types": 5}  # weights
_PREFIX = struct.Struct("<4sIQ")  # the framing's: magic, header length, payload length
# Headers that Python's json, numpy or the framing's checks trip over.
_BAD_HEADERS = (
    b"", b"{", b"[]", b"7", b"null", b'"request"', b"\xff\xfe{}", b'{"type": 7}',
    b'{"type": "request"}\0', b"[" * 5000, b'{"a":' * 5000,
    b'{"type": "request", "id": ' + b"9" * 5000 + b"}",
    b'{"type": "request", "id": 1e999, "method": "echo", "params": {}}',
    b'{"type": "request", "id": NaN, "method": "echo", "params": {}}',
    b'{"type": "request", "id": 1, "method": "echo", "params": {}, "arrays": 7}',
    b'{"type": "request", "id": 1, "method": "\\udcff", "params": {"\\ud800": "\\udcff"}}',
    b'{"type": "request", "arrays": [{"name": "a", "dtype": "uint8", "shape": ['
    + b"1, " * 40 + b'1], "offset": 0, "nbytes": 1}]}',
    b'{"type": "request", "arrays": [{"name": "a", "dtype": "uint8", "shape": ['
    + str(2**70).encode() + b', 0], "offset": 0, "nbytes": 0}]}',
)
_WRONG_VALUES = (None, True, 0, -1, 1.5, float("inf"), 10**300, "", "\udcff", "x" * 100_000,
                 [], [1, "a"], {}, {"id": 1}, [[[[[]]]]])


def echo(params: dict, arrays: dict, context: object) -> tuple[dict, dict]:
    """The fuzzed server's handler: it cannot fail, whatever it gets."""
    return {"params": len(params)}, arrays


HANDLERS = {"echo": echo}


@dataclass
class Counts:
    frames: int = 0  # frames sent
    requests: int = 0  # well-framed requests among them, after authentication
    replies: int = 0
    errors: Counter = field(default_factory=Counter)  # error answers by code
    dropped: int = 0  # connections the server closed after malformed bytes
    failures: list[str] = field(default_factory=list)

    def report(self) -> str:
        errors = ", ".join(f"{code} {n}" for code, n in sorted(self.errors.items()))
        lines = [f"frames sent: {self.frames}", f"well-framed requests: {self.requests}",
                 f"replies: {self.replies}", f"errors: {errors or 'none'}",
                 f"connections dropped: {self.dropped}", f"failures: {len(self.failures)}"]
        return "\n".join(lines + [f"  {failure}" for failure in self.failures])

    def fail(self, what: str) -> None:
        self.failures.append(what)


def fuzz(port: int, frames: int, seed: int) -> Counts:
    """Send `frames` fuzzed frames to the server at `port`, in batches alternately before
    and after authentication; what went wrong is in the counts' failures."""
    rng, counts = random.Random(seed), Counts()
    with _logged_errors() as logged:
        for batch in range((frames + BATCH - 1) // BATCH):
            size = min(BATCH, frames - batch * BATCH)
            try:
                if batch % 2:
                    _authenticated_batch(port, rng, size, counts)
                else:
                    _stranger_batch(port, rng, size, counts)
                with _welcomed(port) as sock:  # the server still serves, within the bound
                    _check_ping(sock, counts)
            except (OSError, framing.ProtocolError) as exc:
                counts.fail(f"batch {batch}: {type(exc).__name__}: {exc}")
            if len(counts.failures) >= MAX_FAILURES:
                break
    counts.failures += [f"the server logged an error: {message}" for message in logged]
    return counts


def _stranger_batch(port: int, rng: random.Random, size: int, counts: Counts) -> None:
    """Each frame a mutated hello, on a connection of its own."""
    for _ in range(size):
        hello = {"type": "hello", "token": TOKEN, "version": framing.PROTOCOL_VERSION}
        frame = _mutate(rng, framing.encode(hello))
        message = _decode(frame, 0, counts)
        counts.frames += 1
        with socket.create_connection(("127.0.0.1", port), timeout=ANSWER_BOUND_S) as sock:
            if message is None:
                _expect_drop(sock, frame, counts)
                continue
            sock.sendall(frame)
            answer = _receive(sock, counts)
            wanted = _answer_to_hello(message.header)
            got = None if answer is None else answer.header.get("code", answer.type)
            if got != wanted:
                counts.fail(f"hello {_shown(message.header)} was answered {got}, not {wanted}")


def _authenticated_batch(port: int, rng: random.Random, size: int, counts: Counts) -> None:
    """Mutated requests on an authenticated connection; a new one after each it drops."""
    with contextlib.ExitStack() as stack:
        sock = None
        for _ in range(size):
            header, arrays = _random_message(rng)
            frame = _mutate(rng, framing.encode(header, arrays))
            message = _decode(frame, framing.MAX_PAYLOAD_BYTES, counts)
            if message is not None and message.header.get("method") == "shutdown":
                continue  # well-framed and obeyed: it would end the run
            if sock is None:
                sock = stack.enter_context(_welcomed(port))
            counts.frames += 1
            if message is None:
                _expect_drop(sock, frame, counts)
                stack.close()
                sock = None
            else:
                sock.sendall(frame)
                _expect_answer(sock, message, counts)
        if sock is not None:  # nothing more came than the answers already read
            _check_ping(sock, counts)


def _answer_to_hello(header: dict) -> str:
    token = header.get("token")
    if header["type"] != "hello" or not isinstance(token, str):
        return "bad_message"
    if token != TOKEN:
        return "auth_failed"
    return "welcome" if header.get("version") == framing.PROTOCOL_VERSION else "version_mismatch"


def _expect_answer(sock: socket.socket, message: framing.Message, counts: Counts) -> None:
    """A request gets one reply or error with its id; a cancel nothing; anything else a
    bad_message error."""
    header = message.header
    if message.type == "cancel":
        return
    if message.type == "request":
        counts.requests += 1
    answer = _receive(sock, counts)
    if answer is None:
        counts.fail(f"no answer to {_shown(header)}")
        return
    request_id = header.get("id")
    if not (isinstance(request_id, int) and not isinstance(request_id, bool)):
        request_id = None
    if answer.type not in ("reply", "error") or answer.header.get("id") != request_id:
        counts.fail(f"{_shown(header)} was answered by {_shown(answer.header)}")
    elif message.type != "request" and answer.header.get("code") != "bad_message":
        counts.fail(f"{_shown(header)} was answered by {_shown(answer.header)}, not bad_message")


def _expect_drop(sock: socket.socket, frame: bytes, counts: Counts) -> None:
    """Malformed bytes: the server answers what it could read, then closes the connection."""
    with contextlib.suppress(OSError):  # the server may close before all of it is sent
        sock.sendall(frame)
        sock.shutdown(socket.SHUT_WR)  # the server's read ends, wherever it stopped
    while True:
        try:
            message = framing.recv_message(sock)
        except TimeoutError:
            counts.fail(f"the connection was not dropped after {_shown(frame)}")
            return
        except OSError:  # includes ConnectionClosed
            counts.dropped += 1
            return
        _count(message, counts)


def _receive(sock: socket.socket, counts: Counts) -> framing.Message | None:
    """The next message, or None when none came in time."""
    try:
        message = framing.recv_message(sock)
    except TimeoutError:
        return None
    _count(message, counts)
    return message


def _count(message: framing.Message, counts: Counts) -> None:
    if message.type == "reply":
        counts.replies += 1
    elif message.type == "error":
        code = message.header.get("code")
        counts.errors[code] += 1
        if code == "internal":
            counts.fail(f"an internal error: {_shown(message.header)}")


def _check_ping(sock: socket.socket, counts: Counts) -> None:
    started = time.monotonic()
    framing.send_message(sock, {"type": "request", "id": PING_ID, "method": "ping",
                                "params": {}})
    answer = _receive(sock, counts)
    seconds = time.monotonic() - started
    if answer is None:
        counts.fail("a ping got no answer")
    elif answer.type != "reply" or answer.header.get("id") != PING_ID:
        counts.fail(f"a ping was answered by {_shown(answer.header)}")
    elif seconds > PING_BOUND_S:
        counts.fail(f"a ping took {seconds:.2f} s")


@contextlib.contextmanager
def _welcomed(port: int) -> Iterator[socket.socket]:
    with session(port) as sock:
        sock.settimeout(ANSWER_BOUND_S)
        answer = framing.recv_message(sock, max_payload=0)
        if answer.type != "welcome":
            raise framing.ProtocolError(f"the right hello was answered {_shown(answer.header)}")
        yield sock


class _ErrorLog(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextlib.contextmanager
def _logged_errors() -> Iterator[list[str]]:
    """The messages the server logs at level ERROR or above while inside."""
    handler = _ErrorLog()
    logger = logging.getLogger("external_worker.server")
    logger.addHandler(handler)
    try:
        yield handler.messages
    finally:
        logger.removeHandler(handler)


def _decode(frame: bytes, max_payload: int, counts: Counts) -> framing.Message | None:
    """The message the server will read from `frame`, or None when it is malformed."""
    try:
        return framing.decode(frame, max_payload)
    except (framing.ProtocolError, framing.ConnectionClosed):  # the latter: no bytes at all
        return None
    except Exception as exc:  # the framing itself broke: the server's reader would too
        counts.fail(f"decoding {_shown(frame)} raised {type(exc).__name__}: {exc}")
        return None


def _random_message(rng: random.Random) -> tuple[dict, dict]:
    """A valid request (sometimes a cancel) with random parameters and arrays."""
    if rng.random() < 0.1:
        return {"type": "cancel", "id": rng.randrange(1, 1 << 31)}, {}
    params = {f"p{n}": rng.choice(_WRONG_VALUES) for n in range(rng.randrange(4))}
    arrays = {f"a{n}": np.zeros([rng.randrange(4) for _ in range(rng.randrange(4))],
                                rng.choice(sorted(framing.ALLOWED_DTYPES)))
              for n in range(rng.choice((0, 0, 1, 2)))}
    return {"type": "request", "id": rng.randrange(1, 1 << 31), "method": rng.choice(METHODS),
            "params": params}, arrays


def _mutate(rng: random.Random, frame: bytes) -> bytes:
    kind = rng.choices(list(MUTATIONS), weights=list(MUTATIONS.values()))[0]
    if kind == "none":
        return frame
    if kind == "truncate":
        return frame[:rng.randrange(len(frame))]
    if kind == "flip":
        data = bytearray(frame)
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(len(data))] ^= rng.randint(1, 255)
        return bytes(data)
    magic, header_len, payload_len = _PREFIX.unpack_from(frame)
    header, payload = frame[_PREFIX.size:_PREFIX.size + header_len], frame[_PREFIX.size + header_len:]
    if kind == "length":
        if rng.random() < 0.5:
            header_len = rng.choice((0, max(0, header_len - rng.randint(1, 16)),
                                     header_len + rng.randint(1, 16), framing.MAX_HEADER_BYTES + 1,
                                     (1 << 32) - 1))
        else:
            payload_len = rng.choice((0, max(0, payload_len - rng.randint(1, 16)),
                                      payload_len + rng.randint(1, 16),
                                      framing.MAX_PAYLOAD_BYTES, (1 << 64) - 1))
        return _PREFIX.pack(magic, header_len, payload_len) + header + payload
    if kind == "json":
        header = rng.choice(_BAD_HEADERS)
    else:
        header = json.dumps(_with_a_wrong_value(rng, json.loads(header))).encode()
    return _PREFIX.pack(magic, len(header), len(payload)) + header + payload


def _with_a_wrong_value(rng: random.Random, header: dict) -> dict:
    """The header with one value (its own, or one of its array table's) of a wrong type, or
    one key left out."""
    target = header
    if header.get("arrays") and rng.random() < 0.5:
        target = rng.choice(header["arrays"])
    key = rng.choice(sorted(target))
    if rng.random() < 0.2:
        del target[key]
    else:
        target[key] = rng.choice(_WRONG_VALUES + ([1] * 33, [2**70, 0], [-1]))
    return header


def _shown(value: object) -> str:
    return reprlib.repr(value)
