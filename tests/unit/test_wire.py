"""The wire: message framing and validation, the worker's server, the add-on's client."""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from blender_dff.wire import framing
from blender_dff.worker.client import WorkerClient
from blender_dff.wire.framing import ConnectionClosed, ProtocolError
from external_worker.server import job, server
from external_worker.errors import Cancelled, WorkerError
from raw_client import TIMEOUT_S as TIMEOUT, TOKEN, call, serving, session

ROOT = Path(__file__).resolve().parents[2]


# --- protocol ----------------------------------------------------------------------------

ROUND_TRIP_ARRAYS = {
    "f32": np.arange(12, dtype=np.float32).reshape(3, 4),
    "f16": np.array([0.5, -2.0], dtype=np.float16),
    "f64_scalar": np.array(3.25),
    "i64": np.array([-(2**62), 0, 2**62], dtype=np.int64),
    "u8": np.arange(7, dtype=np.uint8),  # odd length: the next array needs padding
    "u16": np.array([1, 65535], dtype=np.uint16),
    "i8": np.array([-128, 127], dtype=np.int8),
    "mask": np.array([[True, False], [False, True]]),
    "empty": np.zeros((0, 3), dtype=np.float32),
    "empty_1d": np.zeros(0, dtype=np.int32),
    "u64": np.array([2**64 - 1], dtype=np.uint64),
}


def test_round_trip_keeps_dtype_shape_and_values() -> None:
    message = framing.decode(framing.encode({"type": "reply", "id": 7}, ROUND_TRIP_ARRAYS))
    assert message.header == {"type": "reply", "id": 7}
    assert set(message.arrays) == set(ROUND_TRIP_ARRAYS)
    for name, sent in ROUND_TRIP_ARRAYS.items():
        got = message.arrays[name]
        assert got.dtype == sent.dtype, name
        assert got.shape == sent.shape, name
        np.testing.assert_array_equal(got, sent)
        assert got.flags.writeable and got.flags.aligned, name
    got = message.arrays["f32"]
    got[0, 0] = 42.0  # writable for real, not just flagged
    assert got[0, 0] == 42.0


def test_big_endian_and_strided_input_arrive_as_little_endian_copies_of_the_values() -> None:
    big = np.arange(6, dtype=">f8").reshape(2, 3)
    strided = np.arange(20, dtype=np.int32).reshape(4, 5)[:, ::2]
    message = framing.decode(framing.encode({"type": "x"}, {"big": big, "strided": strided}))
    assert message.arrays["big"].dtype == np.dtype("<f8")
    np.testing.assert_array_equal(message.arrays["big"], big)
    np.testing.assert_array_equal(message.arrays["strided"], strided)


def test_numpy_scalars_in_headers_become_json_numbers() -> None:
    header = {"type": "reply", "result": {"loss": np.float32(0.5), "n": np.int64(3)}}
    decoded = framing.decode(framing.encode(header)).header
    assert decoded["result"] == {"loss": 0.5, "n": 3}


def test_sender_rejects_what_it_cannot_send() -> None:
    with pytest.raises(ValueError, match="'bad'.*object"):
        framing.encode({"type": "x"}, {"bad": np.array([object()])})
    with pytest.raises(ValueError, match="reserved"):
        framing.encode({"type": "x", "arrays": []})
    with pytest.raises(ValueError, match="type"):
        framing.encode({"id": 1})
    with pytest.raises(TypeError, match="set"):
        framing.encode({"type": "x", "value": {1, 2}})


def _frame(header: dict | bytes, payload: bytes = b"", *, magic: bytes = framing.MAGIC,
           header_len: int | None = None, payload_len: int | None = None) -> bytes:
    """A hand-made message, so the receiver can be fed anything."""
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    prefix = struct.pack("<4sIQ", magic, len(raw) if header_len is None else header_len,
                         len(payload) if payload_len is None else payload_len)
    return prefix + raw + payload


def _entry(name: str = "a", dtype: str = "float32", shape: list | None = None,
           offset: int = 0, nbytes: int = 16) -> dict:
    return {"name": name, "dtype": dtype, "shape": [4] if shape is None else shape,
            "offset": offset, "nbytes": nbytes}


@pytest.mark.parametrize("data, match", [
    (_frame({"type": "x"}, magic=b"HTTP"), "bad magic"),
    (_frame(b"", header_len=framing.MAX_HEADER_BYTES + 1), "header of"),
    (_frame({"type": "x"}, payload_len=framing.MAX_PAYLOAD_BYTES + 1), "payload of"),
    (_frame(b"\xff\xfe not json"), "not UTF-8 JSON"),
    (_frame({"no_type": 1}), "'type'"),
    (_frame({"type": "x", "arrays": [_entry(dtype="object")]}, bytes(16)), "dtype 'object'"),
    (_frame({"type": "x", "arrays": [_entry(dtype="complex64", nbytes=32)]}, bytes(32)),
     "dtype 'complex64'"),
    (_frame({"type": "x", "arrays": [_entry(offset=8)]}, bytes(16)), "outside"),
    (_frame({"type": "x", "arrays": [_entry(nbytes=12)]}, bytes(16)), "needs 16"),
    (_frame({"type": "x", "arrays": [_entry(shape=[-4])]}, bytes(16)), "non-negative"),
    (_frame({"type": "x", "arrays": [_entry(shape=[True])]}, bytes(16)), "non-negative"),
    (_frame({"type": "x", "arrays": [_entry(), _entry()]}, bytes(16)), "appears twice"),
    (_frame({"type": "x", "arrays": [{"name": "a"}]}, bytes(16)), "exactly the keys"),
    # What Python's json or numpy would raise on, as a plain exception
    (_frame(b"[" * 100_000), "not UTF-8 JSON"),
    (_frame(b'{"type": "x", "id": ' + b"7" * 5000 + b"}"), "not UTF-8 JSON"),
    (_frame({"type": "x", "arrays": [_entry(shape=[1] * 33, nbytes=4)]}, bytes(16)),
     "more than 32 dimensions"),
    (_frame({"type": "x", "arrays": [_entry(shape=[2**70, 0], nbytes=0)]}, bytes(16)),
     "more than 32 dimensions or more than"),
    (_frame({"type": "x", "arrays": [_entry(name="n" * 100_000, dtype="object")]}, bytes(16)),
     r"array 'n{10,20}\.\.\.n{10,20}': dtype"),  # a peer's long name is shown cut
])
def test_receiver_rejects_malformed_messages(data: bytes, match: str) -> None:
    with pytest.raises(ProtocolError, match=match):
        framing.decode(data)


def test_receiver_applies_the_callers_payload_limit() -> None:
    data = framing.encode({"type": "x"}, {"a": np.zeros(100, dtype=np.uint8)})
    assert framing.decode(data, max_payload=100).arrays["a"].shape == (100,)
    with pytest.raises(ProtocolError, match="exceeds the limit 99"):
        framing.decode(data, max_payload=99)


def test_a_payload_announced_but_not_sent_is_not_allocated_up_front() -> None:
    # 4 GiB promised, none sent: the buffer grows with what arrives, so this is instant.
    started = time.monotonic()
    with pytest.raises(ProtocolError, match="middle of a message"):
        framing.decode(_frame({"type": "x"}, payload_len=framing.MAX_PAYLOAD_BYTES))
    assert time.monotonic() - started < 1.0


def test_any_text_encodes_and_error_texts_are_displayable() -> None:
    path = "/data/\udcff.png"  # a file name that is not UTF-8, as os.listdir returns it
    assert framing.decode(framing.encode({"type": "reply", "path": path})).header["path"] == path
    error = framing.error_header(3, "bad_dataset", f"cannot read {path}", "x" * 10_000)
    assert error["message"] == "cannot read /data/\\udcff.png"
    assert len(error["hint"]) < 9000 and error["hint"].endswith("[cut]")
    assert framing.decode(framing.encode(error)).header == error


def test_a_deadline_bounds_the_whole_message_however_it_trickles_in() -> None:
    left, right = socket.socketpair()
    stop = threading.Event()

    def dribble() -> None:  # one byte every 50 ms: each read alone would be quick
        for byte in framing.encode({"type": "x", "pad": "y" * 100}):
            if stop.wait(0.05):
                return
            left.sendall(bytes([byte]))

    sender = threading.Thread(target=dribble)
    sender.start()
    started = time.monotonic()
    try:
        with pytest.raises(TimeoutError):
            framing.recv_message(right, deadline=started + 0.5)
        assert time.monotonic() - started < 1.5
    finally:
        stop.set()
        sender.join()
        left.close()
        right.close()


def test_end_of_stream_between_messages_is_a_clean_close_but_inside_one_is_an_error() -> None:
    data = framing.encode({"type": "x"}, {"a": np.ones(10)})
    left, right = socket.socketpair()
    with left, right:
        left.sendall(data + data[:20])
        left.close()
        assert framing.recv_message(right).arrays["a"].sum() == 10
        with pytest.raises(ProtocolError, match="middle of a message"):
            framing.recv_message(right)
    left, right = socket.socketpair()
    with left, right:
        left.close()
        with pytest.raises(ConnectionClosed):
            framing.recv_message(right)


def test_send_and_recv_over_a_socket() -> None:
    big = np.random.default_rng(0).random((256, 1024), dtype=np.float32)  # 1 MiB
    left, right = socket.socketpair()
    with left, right:
        sender = threading.Thread(target=framing.send_message,
                                  args=(left, {"type": "reply", "id": 1}, {"big": big}))
        sender.start()
        message = framing.recv_message(right)
        sender.join()
    np.testing.assert_array_equal(message.arrays["big"], big)


# --- server: JobContext ------------------------------------------------------------------


def test_progress_is_throttled_but_keeps_first_and_last_step_and_estimates_eta(
        monkeypatch: pytest.MonkeyPatch) -> None:
    now = [100.0]
    monkeypatch.setattr(job.time, "monotonic", lambda: now[0])
    sent: list[dict] = []
    previews: list[int] = []

    def send(header: dict, arrays: dict | None) -> None:
        sent.append(header)
        if arrays:
            previews.append(header["step"])

    context = job.JobContext(5, send)
    image = np.zeros((4, 8, 3), np.uint8)
    for step in range(101):  # one step every 10 ms
        context.progress("nerf", step, 100, {"loss": np.float32(0.25)}, preview=image if step in (50, 51) else None)
        now[0] += 0.01
    assert previews == [50, 51]  # never throttled away
    steps = [event["step"] for event in sent]
    assert steps[0] == 0 and steps[-1] == 100
    assert 8 <= len(steps) <= 15  # ~10 per second over one second, and the previews
    assert steps == sorted(steps)
    middle = next(event for event in sent if event["step"] == 50)
    assert middle["eta"] == pytest.approx(0.5)  # 50 steps took 0.5 s, 50 remain
    assert sent[-1]["eta"] == 0.0
    assert sent[-1]["metrics"] == {"loss": 0.25} and sent[-1]["id"] == 5
    context.progress("mesh", 0, 10)  # a new stage is always sent at once
    assert sent[-1]["stage"] == "mesh" and sent[-1]["eta"] is None


def test_progress_and_check_raise_once_cancelled() -> None:
    context = job.JobContext(1, lambda header, arrays: None)
    context.check_cancelled()
    context.cancel()
    assert context.cancelled
    with pytest.raises(Cancelled):
        context.progress("nerf", 1, 10)
    with pytest.raises(Cancelled):
        context.check_cancelled()


# --- server over a socket ----------------------------------------------------------------


def _echo(params: dict, arrays: dict, context: job.JobContext) -> tuple[dict, dict]:
    return {"params": params}, {name: array * 2 for name, array in arrays.items()}


def _fail(params: dict, arrays: dict, context: job.JobContext) -> tuple[dict, dict]:
    raise WorkerError("bad_dataset", "no images in /data/scene", "Point it at a folder of images.")


def _crash(params: dict, arrays: dict, context: job.JobContext) -> tuple[dict, dict]:
    raise RuntimeError("kaboom")


def _stages(params: dict, arrays: dict, context: job.JobContext) -> tuple[dict, dict]:
    for stage, total in (("nerf", 3), ("mesh", 2)):
        for step in range(1, total + 1):
            preview = np.full((2, 3, 3), step, np.uint8) if stage == "nerf" else None
            context.progress(stage, step, total, {"loss": 1.0 / step}, preview=preview)
    return {"done": True}, {}


def _until_cancelled(params: dict, arrays: dict, context: job.JobContext) -> tuple[dict, dict]:
    context.progress("train", 0, 1000)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        context.check_cancelled()
        time.sleep(0.005)
    return {"finished": True}, {}


HANDLERS = {"echo": _echo, "fail": _fail, "crash": _crash, "stages": _stages,
            "until_cancelled": _until_cancelled}


@pytest.fixture
def worker_port():
    with serving(HANDLERS) as running:
        yield running.port


def test_serve_refuses_an_empty_token_and_clashing_handlers() -> None:
    with pytest.raises(ValueError, match="token"):
        server.serve(HANDLERS, token="")
    with pytest.raises(ValueError, match="ping"):
        server.serve({"ping": _echo}, token=TOKEN)


def test_announce_stdout_prints_one_json_line(capsys: pytest.CaptureFixture) -> None:
    server.announce_stdout("127.0.0.1", 4321)
    assert json.loads(capsys.readouterr().out) == {
        "event": "listening", "host": "127.0.0.1", "port": 4321}


def test_wrong_token_is_rejected_and_the_connection_closed(worker_port: int) -> None:
    with session(worker_port, token="guess") as sock:
        answer = framing.recv_message(sock)
        assert answer.type == "error" and answer.header["code"] == "auth_failed"
        with pytest.raises(ConnectionClosed):
            framing.recv_message(sock)


def test_requests_get_replies_and_structured_errors(worker_port: int) -> None:
    with session(worker_port) as sock:
        welcome = framing.recv_message(sock)
        assert welcome.header == {"type": "welcome", "version": 1, "pid": os.getpid()}

        reply = call(sock, 1, "echo", {"x": [1, 2]}, {"v": np.arange(3.0)})[-1]
        assert reply.header == {"type": "reply", "id": 1, "result": {"params": {"x": [1, 2]}}}
        np.testing.assert_array_equal(reply.arrays["v"], [0.0, 2.0, 4.0])

        assert call(sock, 2, "ping")[-1].header["result"] == {
            "version": framing.PROTOCOL_VERSION, "pid": os.getpid()}

        unknown = call(sock, 3, "train_nerf")[-1].header
        assert unknown["code"] == "unknown_method" and unknown["id"] == 3
        assert "echo" in unknown["hint"] and "ping" in unknown["hint"]

        failed = call(sock, 4, "fail")[-1].header
        assert failed == {"type": "error", "id": 4, "code": "bad_dataset",
                          "message": "no images in /data/scene",
                          "hint": "Point it at a folder of images."}

        crashed = call(sock, 5, "crash")[-1].header
        assert crashed["code"] == "internal" and crashed["message"] == "kaboom"
        assert "RuntimeError: kaboom" in crashed["hint"] and "_crash" in crashed["hint"]


def test_progress_arrives_in_order_before_the_reply(worker_port: int) -> None:
    with session(worker_port) as sock:
        framing.recv_message(sock)
        messages = call(sock, 1, "stages")
    assert messages[-1].header == {"type": "reply", "id": 1, "result": {"done": True}}
    events = [m.header for m in messages[:-1]]
    assert all(e["type"] == "progress" and e["id"] == 1 for e in events)
    assert [e["stage"] for e in events] == sorted((e["stage"] for e in events),
                                                  key=["nerf", "mesh"].index)
    for stage, total in (("nerf", 3), ("mesh", 2)):
        steps = [e["step"] for e in events if e["stage"] == stage]
        assert steps[0] == 1 and steps[-1] == total and steps == sorted(steps)
    assert events[-1]["metrics"] == {"loss": 0.5} and events[-1]["eta"] == 0.0
    previews = [m.arrays["preview"] for m in messages[:-1] if m.header["stage"] == "nerf"]
    assert [p.shape for p in previews] == [(2, 3, 3)] * 3 and [int(p[0, 0, 0]) for p in previews] == [1, 2, 3]


def test_cancel_stops_a_running_job(worker_port: int) -> None:
    with session(worker_port) as sock:
        framing.recv_message(sock)
        framing.send_message(sock, {"type": "request", "id": 1, "method": "until_cancelled",
                                     "params": {}})
        assert framing.recv_message(sock).header["stage"] == "train"  # the job is running
        framing.send_message(sock, {"type": "cancel", "id": 1})
        answer = framing.recv_message(sock).header
    assert answer["type"] == "error" and answer["id"] == 1 and answer["code"] == "cancelled"


def test_bad_framing_is_answered_and_drops_only_that_connection(worker_port: int) -> None:
    with socket.create_connection(("127.0.0.1", worker_port), timeout=TIMEOUT) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = framing.recv_message(sock).header
        assert answer["code"] == "bad_message" and "bad magic" in answer["message"]
        with pytest.raises((ConnectionClosed, ConnectionResetError)):
            framing.recv_message(sock)
    with session(worker_port) as sock:  # still serving
        framing.recv_message(sock)
        assert call(sock, 1, "ping")[-1].type == "reply"
        framing.send_message(sock, {"type": "request", "id": "one", "method": "ping"})
        assert framing.recv_message(sock).header["code"] == "bad_request"


# --- client ------------------------------------------------------------------------------


def _on_main_thread() -> None:
    assert threading.current_thread() is threading.main_thread()


def test_remote_client_requests_progress_errors_and_cancel(worker_port: int) -> None:
    client = WorkerClient(host="127.0.0.1", port=worker_port, token=TOKEN)
    assert client.state == "idle"
    try:
        client.start()
        # Queued while starting, sent once ready.
        echo = client.request("echo", {"k": "v"}, {"a": np.ones((2, 2), dtype=np.float32)})
        reply = client.wait(echo, TIMEOUT)
        assert client.state == "ready"
        assert reply.ok and reply.error is None and reply.result == {"params": {"k": "v"}}
        np.testing.assert_array_equal(reply.arrays["a"], np.full((2, 2), 2, np.float32))

        progress: list[dict] = []
        done: list = []

        def on_progress(event: dict) -> None:
            _on_main_thread()
            progress.append(event)

        def on_done(result) -> None:
            _on_main_thread()
            done.append(result)

        stages = client.request("stages", on_progress=on_progress, on_done=on_done)
        assert client.wait(stages, TIMEOUT).result == {"done": True}
        assert done[0].result == {"done": True}
        assert progress[0]["stage"] == "nerf" and progress[-1]["stage"] == "mesh"
        assert progress[0]["arrays"]["preview"].shape == (2, 3, 3) and progress[-1]["arrays"] == {}

        failed = client.wait(client.request("fail"), TIMEOUT)
        assert not failed.ok and failed.error["code"] == "bad_dataset"
        assert failed.error["hint"] == "Point it at a folder of images."

        started = threading.Event()
        job = client.request("until_cancelled", on_progress=lambda event: started.set())
        deadline = time.monotonic() + TIMEOUT
        while not started.is_set() and time.monotonic() < deadline:
            client.poll()
            time.sleep(0.01)
        client.cancel(job)
        cancelled = client.wait(job, TIMEOUT)
        assert not cancelled.ok and cancelled.error["code"] == "cancelled"

        with pytest.raises(ValueError, match="object"):
            client.request("echo", arrays={"bad": np.array([None])})
        with pytest.raises(KeyError):
            client.wait(echo, TIMEOUT)  # already taken
    finally:
        client.close()
    assert client.state == "closed"
    client.close()  # idempotent


def test_remote_client_with_a_wrong_token_fails_its_requests(worker_port: int) -> None:
    client = WorkerClient(host="127.0.0.1", port=worker_port, token="guess")
    try:
        client.start()
        reply = client.wait(client.request("ping"), TIMEOUT)
        assert not reply.ok and reply.error["code"] == "worker_start_failed"
        assert "auth_failed" in reply.error["message"]
        assert client.state == "failed" and "auth_failed" in client.failure
        late = client.wait(client.request("ping"), TIMEOUT)  # sent after the failure: the same error,
        assert not late.ok and late.error["code"] == "worker_start_failed"  # however soon it came
    finally:
        client.close()


WORKER_SCRIPT = """
import os, sys, time
from external_worker.server import server

def block(params, arrays, context):
    print("worker is blocking now", file=sys.stderr, flush=True)
    context.progress("block", 0, 1)
    time.sleep(60)
    return {}, {}

server.serve({"block": block}, token=os.environ["DFF_WORKER_TOKEN"],
             announce=server.announce_stdout)
"""


def _local_client(script: str, **kwargs) -> WorkerClient:
    return WorkerClient(command=[sys.executable, "-c", script], worker_path=str(ROOT),
                        **kwargs)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_local_client_spawns_the_worker_and_shuts_it_down() -> None:
    client = _local_client(WORKER_SCRIPT)
    try:
        client.start()
        reply = client.wait(client.request("ping"), TIMEOUT)
        assert reply.ok and reply.result["pid"] != os.getpid()
    finally:
        client.close()
    assert not _pid_alive(reply.result["pid"])


def test_local_worker_killed_mid_request_fails_it_with_the_stderr_tail() -> None:
    client = _local_client(WORKER_SCRIPT)
    try:
        client.start()
        pid = client.wait(client.request("ping"), TIMEOUT).result["pid"]
        started = threading.Event()
        done = []
        job = client.request("block", on_progress=lambda event: started.set(),
                             on_done=done.append)
        deadline = time.monotonic() + TIMEOUT
        while not started.is_set() and time.monotonic() < deadline:
            client.poll()
            time.sleep(0.01)
        os.kill(pid, getattr(signal, "SIGKILL", signal.SIGTERM))
        reply = client.wait(job, TIMEOUT)
        assert done == [reply]
        assert not reply.ok and reply.error["code"] == "worker_exited"
        assert "worker is blocking now" in reply.error["hint"]
        assert client.state == "failed" and "worker is blocking now" in client.failure
    finally:
        client.close()


def test_local_worker_that_never_announces_times_out() -> None:
    client = _local_client("import time; time.sleep(60)", startup_timeout=0.5)
    try:
        client.start()
        reply = client.wait(client.request("ping"), TIMEOUT)
        assert not reply.ok and reply.error["code"] == "worker_start_failed"
        assert "did not announce" in reply.error["message"]
    finally:
        client.close()


def test_local_worker_that_dies_at_startup_reports_its_stderr() -> None:
    client = _local_client("import sys; sys.exit('no module named torch')")
    try:
        client.start()
        reply = client.wait(client.request("ping"), TIMEOUT)
        assert not reply.ok and "exited with code 1" in reply.error["message"]
        assert "no module named torch" in reply.error["hint"]
        assert "no module named torch" in client.failure
    finally:
        client.close()
