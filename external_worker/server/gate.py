"""Admission to the worker's server: every new connection says hello on its own thread, so
strangers that are silent, slow or wrong cannot keep the add-on waiting.

- The whole hello must arrive within HELLO_TIMEOUT_S: one deadline for the message, however
  slowly its bytes trickle in.
- At most MAX_PENDING connections wait to be admitted; a new one pushes the oldest out, so
  connections held open by strangers cannot fill the door for good.
- Wrong tokens are slowed: after FREE_FAILURES of them from one host, that host's next token
  is checked only after a wait growing by PENALTY_STEP_S per failure, up to MAX_PENALTY_S. The
  wait comes before the check, so a guesser learns nothing sooner by timing the answer, and it
  is short enough that the add-on's own connection, which shares 127.0.0.1 with any local
  stranger, is still admitted within a second. A right token from the host clears its count.

An admitted connection (the right token and protocol version) is handed on; the server
welcomes it when its turn comes.
"""

from __future__ import annotations

import hmac
import logging
import reprlib
import socket
import threading
import time
from typing import Callable

from blender_dff.wire import framing

log = logging.getLogger(__name__)

HELLO_TIMEOUT_S = 5.0  # a connection whose whole hello has not arrived by then is dropped
MAX_PENDING = 16  # connections saying hello at once
FREE_FAILURES = 3  # wrong tokens from one host answered at once (a typo must not wait)
PENALTY_STEP_S = 0.1
MAX_PENALTY_S = 0.5
FORGET_S = 60.0  # a host's failures older than this no longer count
ACCEPT_POLL_S = 0.2  # how often the accept loop looks whether the server is stopping
ANSWER_TIMEOUT_S = 5.0  # a refused peer that does not read its answer is cut off

Admit = Callable[[socket.socket, tuple], None]


class Penalties:
    """Wrong tokens per host, and how long that host's next token check waits."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._failures: dict[str, tuple[int, float]] = {}  # host -> (count, time of the latest)

    def wait_s(self, host: str) -> float:
        with self._lock:
            count, latest = self._failures.get(host, (0, 0.0))
        if time.monotonic() - latest > FORGET_S:
            return 0.0
        return min(MAX_PENALTY_S, PENALTY_STEP_S * max(0, count - FREE_FAILURES + 1))

    def failed(self, host: str) -> None:
        now = time.monotonic()
        with self._lock:
            count, latest = self._failures.get(host, (0, 0.0))
            if now - latest > FORGET_S:
                count = 0
            self._failures[host] = (count + 1, now)
            # Forget quiet hosts, so that guessers from many addresses do not grow the table.
            for stale in [h for h, (_, t) in self._failures.items() if now - t > FORGET_S]:
                del self._failures[stale]

    def succeeded(self, host: str) -> None:
        with self._lock:
            self._failures.pop(host, None)


class _Pending:
    """A connection saying hello; `pushed_out` is set when a newer one took its place."""

    def __init__(self, conn: socket.socket, address: tuple) -> None:
        self.conn = conn
        self.address = address
        self.pushed_out = threading.Event()


class Gate:
    """Accepts connections on `listener` and hands each one whose hello is right to `admit`."""

    def __init__(self, listener: socket.socket, token: str, admit: Admit) -> None:
        self.listener = listener
        # surrogatepass: any str encodes, also one from an environment that is not UTF-8.
        self.token = token.encode("utf-8", "surrogatepass")
        self.admit = admit
        self.penalties = Penalties()
        self._lock = threading.Lock()
        self._pending: dict[socket.socket, _Pending] = {}  # oldest first

    def run(self, stop: threading.Event) -> None:
        """Accept until `stop` is set, then drop the connections still saying hello."""
        self.listener.settimeout(ACCEPT_POLL_S)
        try:
            while not stop.is_set():
                try:
                    conn, address = self.listener.accept()
                except TimeoutError:
                    continue
                except OSError as exc:  # e.g. out of file descriptors: wait, do not spin
                    log.warning("could not accept a connection: %s", exc)
                    time.sleep(ACCEPT_POLL_S)
                    continue
                self._let_in(_Pending(conn, address))
        finally:
            with self._lock:
                for pending in list(self._pending.values()):
                    self._push_out(pending)

    def _let_in(self, pending: _Pending) -> None:
        with self._lock:
            if len(self._pending) >= MAX_PENDING:
                self._push_out(next(iter(self._pending.values())))
            self._pending[pending.conn] = pending
        threading.Thread(target=self._hello, args=(pending,), name="dff-hello",
                         daemon=True).start()

    def _push_out(self, pending: _Pending) -> None:
        """Called with the lock held. shutdown (not close) wakes the thread reading it,
        which closes it; closing here could close a descriptor already reused."""
        del self._pending[pending.conn]
        pending.pushed_out.set()
        try:
            pending.conn.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _hello(self, pending: _Pending) -> None:
        conn, address = pending.conn, pending.address
        admitted = False
        try:
            admitted = self._check_hello(pending)
        except TimeoutError:
            log.info("client %s did not say hello within %s s", address, HELLO_TIMEOUT_S)
        except framing.ConnectionClosed:
            log.info("client %s left before saying hello", address)
        except framing.ProtocolError as exc:  # info: strangers must not flood the log
            log.info("dropping client %s: %s", address, exc)
            self.send_error(conn, "bad_message", str(exc))
        except OSError as exc:
            log.info("dropping client %s: %s", address, exc)
        finally:
            with self._lock:
                still_pending = self._pending.pop(conn, None) is not None
            if admitted and still_pending:
                self.admit(conn, address)
            else:
                conn.close()

    def _check_hello(self, pending: _Pending) -> bool:
        """Read and check the hello, answering a refusal; True when the client may come in."""
        conn, host = pending.conn, pending.address[0]
        # A stranger gets no payload allowance until admitted.
        hello = framing.recv_message(conn, max_payload=0,
                                     deadline=time.monotonic() + HELLO_TIMEOUT_S)
        token = hello.header.get("token")
        if hello.type != "hello" or not isinstance(token, str):
            log.info("dropping client %s: it did not start with a hello", pending.address)
            self.send_error(conn, "bad_message", "the first message must be 'hello' with a token")
            return False
        if pending.pushed_out.wait(self.penalties.wait_s(host)):
            return False
        if not hmac.compare_digest(token.encode("utf-8", "surrogatepass"), self.token):
            self.penalties.failed(host)
            log.warning("client %s sent a wrong token", pending.address)
            self.send_error(conn, "auth_failed", "wrong token",
                         "Use the token the worker was started with (DFF_WORKER_TOKEN).")
            return False
        self.penalties.succeeded(host)
        version = hello.header.get("version")
        if version != framing.PROTOCOL_VERSION:
            self.send_error(
                conn, "version_mismatch",
                f"client speaks protocol {reprlib.repr(version)}, "
                f"worker speaks {framing.PROTOCOL_VERSION}",
                "Install the same blender_dff version for the add-on and the worker.",
            )
            return False
        return True

    @staticmethod
    def send_error(conn: socket.socket, code: str, message: str, hint: str = "") -> None:
        """Tell a refused peer why, if it still listens."""
        try:
            conn.settimeout(ANSWER_TIMEOUT_S)
            framing.send_message(conn, framing.error_header(None, code, message, hint))
        except OSError:
            pass
