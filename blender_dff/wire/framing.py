"""The wire between the add-on and the worker: framed JSON headers plus raw numpy arrays.

Both sides import this module, so it needs only the standard library and numpy (no bpy,
no torch). Nothing is ever unpickled: a peer can send data, never code.

Framing of one message::

    b"DFFW" | uint32 header_len | uint64 payload_len     (16 bytes, little endian)
    header: UTF-8 JSON object, header_len bytes
    payload: payload_len bytes, the arrays' raw C-contiguous little-endian bytes

The header has a ``"type"`` and, when arrays are attached, ``"arrays"``: a list of
``{"name", "dtype", "shape", "offset", "nbytes"}`` locating each array in the payload.
Each array starts at a multiple of 8 bytes so the receiver can view it without a copy.

Message types:

- ``hello`` {token, version}: client -> server, first message on a connection.
- ``welcome`` {version, pid}: server -> client, the token was accepted.
- ``request`` {id, method, params} + arrays: client -> server; ``id`` is an int chosen
  by the client, unique per connection.
- ``progress`` {id, stage, step, total, metrics: {name: float}, eta: float|null,
  message: str|null}: server -> client, zero or more per request, before its end.
- ``reply`` {id, result} + arrays: server -> client, the request succeeded.
- ``error`` {id, code, message, hint}: server -> client, the request failed (``id`` is
  null for failures not tied to a request, e.g. ``auth_failed``); see ``error_header``.
- ``cancel`` {id}: client -> server; the request then ends with an ``error`` whose code
  is ``cancelled`` (or with its reply if it finished first).

Every request ends with exactly one ``reply`` or ``error``.
"""

from __future__ import annotations

import io
import json
import math
import reprlib
import socket
import struct
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

PROTOCOL_VERSION = 1
MAGIC = b"DFFW"
MAX_HEADER_BYTES = 1 << 20
MAX_PAYLOAD_BYTES = 4 << 30
MAX_DIMS = 32  # the most dimensions numpy 1 arrays have
ERROR_TEXT_CHARS = 8000  # an error's message or hint is cut to this many characters
ALLOWED_DTYPES = frozenset({
    "bool",
    "int8", "int16", "int32", "int64",
    "uint8", "uint16", "uint32", "uint64",
    "float16", "float32", "float64",
})

_PREFIX = struct.Struct("<4sIQ")
_ALIGN = 8  # the largest itemsize among ALLOWED_DTYPES
_ARRAY_KEYS = frozenset({"name", "dtype", "shape", "offset", "nbytes"})
_CHUNK_BYTES = 1 << 20  # received bytes are read this many at a time at most


class ProtocolError(Exception):
    """The peer sent bytes that are not a valid message; the connection must be dropped."""


class ConnectionClosed(ConnectionError):
    """The peer closed the connection cleanly, between two messages."""


@dataclass
class Message:
    """One received message: its JSON header (without the array table) and its arrays."""

    header: dict
    arrays: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def type(self) -> str:
        return self.header["type"]


# --- sending -----------------------------------------------------------------------------


def _json_default(value: object) -> object:
    # Handlers often return numpy scalars (a loss, a count); JSON needs Python numbers.
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(
        f"cannot put a {type(value).__name__} in a message header; "
        "send arrays as arrays and everything else as JSON values"
    )


def _prepare_array(name: object, value: object) -> np.ndarray:
    if not isinstance(name, str) or not name:
        raise ValueError(f"array names must be non-empty strings, got {name!r}")
    array = np.asarray(value)
    if array.dtype.name not in ALLOWED_DTYPES:
        raise ValueError(
            f"cannot send array {name!r}: dtype {array.dtype} is not one of "
            f"{sorted(ALLOWED_DTYPES)}"
        )
    # No copy when the array is already little-endian and C-contiguous (the usual case).
    # (Not np.ascontiguousarray: it turns 0-d arrays into 1-d ones.)
    return np.asarray(array, dtype=array.dtype.newbyteorder("<"), order="C")


def encode_parts(header: dict, arrays: dict | None = None) -> list[memoryview | bytes]:
    """The buffers of one message, in order: prefix + header, then each array's bytes
    (views of the arrays, not copies), with zero padding between arrays."""
    if not isinstance(header, dict) or not isinstance(header.get("type"), str):
        raise ValueError(f"a message header must be a dict with a string 'type', got {header!r}")
    if "arrays" in header:
        raise ValueError("the header key 'arrays' is reserved for the array table")
    table = []
    buffers: list[memoryview | bytes] = []
    offset = 0
    for name, value in (arrays or {}).items():
        array = _prepare_array(name, value)
        padding = -offset % _ALIGN
        if padding:
            buffers.append(bytes(padding))
            offset += padding
        table.append({
            "name": name,
            "dtype": array.dtype.name,
            "shape": list(array.shape),
            "offset": offset,
            "nbytes": array.nbytes,
        })
        if array.nbytes:
            buffers.append(memoryview(array.reshape(-1).view(np.uint8)))
        offset += array.nbytes
    if table:
        header = {**header, "arrays": table}
    # ASCII escapes, so that any str encodes, even one holding a lone surrogate (a file name
    # that is not UTF-8, read with surrogateescape).
    header_bytes = json.dumps(
        header, separators=(",", ":"), ensure_ascii=True, default=_json_default
    ).encode("ascii")
    if len(header_bytes) > MAX_HEADER_BYTES:
        raise ValueError(
            f"message header is {len(header_bytes)} bytes, more than {MAX_HEADER_BYTES}; "
            "send large data as arrays"
        )
    prefix = _PREFIX.pack(MAGIC, len(header_bytes), offset)
    return [prefix + header_bytes, *buffers]


def error_header(request_id: int | None, code: str, message: str, hint: str = "") -> dict:
    """The header of an ``error`` message. Its texts are cut to ERROR_TEXT_CHARS, and
    characters UTF-8 cannot hold (lone surrogates, from a file name that is not UTF-8) are
    written as backslash escapes, so that the add-on can show them."""
    return {"type": "error", "id": request_id, "code": str(code),
            "message": _displayable(message), "hint": _displayable(hint)}


def _displayable(text: object) -> str:
    text = str(text)
    if len(text) > ERROR_TEXT_CHARS:
        text = text[:ERROR_TEXT_CHARS] + " [cut]"
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def encode(header: dict, arrays: dict | None = None) -> bytes:
    """One whole message as bytes (for tests and small messages)."""
    return b"".join(encode_parts(header, arrays))


def send_message(sock: socket.socket, header: dict, arrays: dict | None = None) -> None:
    """Send one message. Everything is validated before the first byte goes out, so a
    ValueError leaves the connection usable."""
    for part in encode_parts(header, arrays):
        sock.sendall(part)


# --- receiving ---------------------------------------------------------------------------

ReadInto = Callable[[memoryview], int]  # like socket.recv_into: bytes read, 0 at EOF


def _read_exact(read_into: ReadInto, size: int, *, at_boundary: bool = False) -> bytearray:
    """Read `size` bytes. The buffer grows as they arrive, so a peer that announces
    gigabytes and then stops has cost only what it sent."""
    buffer = bytearray()
    chunk = memoryview(bytearray(min(size, _CHUNK_BYTES)))
    while len(buffer) < size:
        count = read_into(chunk[:size - len(buffer)])
        if count == 0:
            if at_boundary and not buffer:
                raise ConnectionClosed("the peer closed the connection")
            raise ProtocolError(
                f"connection closed in the middle of a message ({len(buffer)} of {size} "
                "bytes read)"
            )
        buffer += chunk[:count]
    return buffer


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _validate_table(table: object, payload_len: int) -> list[dict]:
    if not isinstance(table, list):
        raise ProtocolError(f"'arrays' must be a list, got {type(table).__name__}")
    names = set()
    for entry in table:
        if not isinstance(entry, dict) or set(entry) != _ARRAY_KEYS:
            raise ProtocolError(
                f"each array entry needs exactly the keys {sorted(_ARRAY_KEYS)}, "
                f"got {reprlib.repr(entry)}"
            )
        name, dtype, shape = entry["name"], entry["dtype"], entry["shape"]
        offset, nbytes = entry["offset"], entry["nbytes"]
        if not isinstance(name, str) or not name:
            raise ProtocolError(
                f"array name must be a non-empty string, got {reprlib.repr(name)}"
            )
        shown = reprlib.repr(name)  # a peer's names may be long: messages show their start
        if name in names:
            raise ProtocolError(f"array name {shown} appears twice")
        names.add(name)
        if not isinstance(dtype, str) or dtype not in ALLOWED_DTYPES:
            raise ProtocolError(
                f"array {shown}: dtype {reprlib.repr(dtype)} is not one of "
                f"{sorted(ALLOWED_DTYPES)}"
            )
        if not isinstance(shape, list) or not all(_is_int(n) and n >= 0 for n in shape):
            raise ProtocolError(
                f"array {shown}: shape must be a list of non-negative ints, "
                f"got {reprlib.repr(shape)}"
            )
        # numpy's limits; a dimension of an empty array could otherwise be anything.
        if len(shape) > MAX_DIMS or math.prod(n for n in shape if n) > MAX_PAYLOAD_BYTES:
            raise ProtocolError(
                f"array {shown}: shape {reprlib.repr(shape)} has more than {MAX_DIMS} "
                f"dimensions or more than {MAX_PAYLOAD_BYTES} elements"
            )
        if not (_is_int(offset) and _is_int(nbytes) and offset >= 0 and nbytes >= 0):
            raise ProtocolError(
                f"array {shown}: offset and nbytes must be non-negative ints, "
                f"got {reprlib.repr(offset)} and {reprlib.repr(nbytes)}"
            )
        expected = math.prod(shape) * np.dtype(dtype).itemsize
        if nbytes != expected:
            raise ProtocolError(
                f"array {shown}: nbytes is {reprlib.repr(nbytes)} but shape "
                f"{reprlib.repr(shape)} of {dtype} needs {expected}"
            )
        if offset + nbytes > payload_len:
            raise ProtocolError(
                f"array {shown}: bytes {reprlib.repr(offset)}..{reprlib.repr(offset + nbytes)} "
                f"lie outside the {payload_len}-byte payload"
            )
    return table


def _read_message(read_into: ReadInto, max_payload: int) -> Message:
    magic, header_len, payload_len = _PREFIX.unpack(
        _read_exact(read_into, _PREFIX.size, at_boundary=True)
    )
    if magic != MAGIC:
        raise ProtocolError(f"bad magic {bytes(magic)!r}, expected {MAGIC!r}: not a DFF peer")
    if header_len > MAX_HEADER_BYTES:
        raise ProtocolError(f"header of {header_len} bytes exceeds {MAX_HEADER_BYTES}")
    if payload_len > max_payload:
        raise ProtocolError(f"payload of {payload_len} bytes exceeds the limit {max_payload}")
    raw_header = _read_exact(read_into, header_len)
    try:
        header = json.loads(raw_header.decode("utf-8"))
    # ValueError: not UTF-8, not JSON, or an int of more digits than Python converts;
    # RecursionError: nested deeper than Python's stack allows.
    except (ValueError, RecursionError) as exc:
        raise ProtocolError(f"header is not UTF-8 JSON that Python can read: {exc}") from None
    if not isinstance(header, dict) or not isinstance(header.get("type"), str):
        raise ProtocolError("header must be a JSON object with a string 'type'")
    table = _validate_table(header.pop("arrays", []), payload_len)
    payload = _read_exact(read_into, payload_len)
    arrays = {}
    for entry in table:
        dtype = np.dtype(entry["dtype"]).newbyteorder("<")
        count = entry["nbytes"] // dtype.itemsize
        array = np.frombuffer(payload, dtype=dtype, count=count, offset=entry["offset"])
        if not array.flags.aligned:  # a peer that did not pad; numpy copes, torch may not
            array = array.copy()
        arrays[entry["name"]] = array.reshape(entry["shape"])
    return Message(header, arrays)


def recv_message(
    sock: socket.socket, max_payload: int = MAX_PAYLOAD_BYTES, *, deadline: float | None = None
) -> Message:
    """Receive one message. Raises ConnectionClosed at a clean end of stream and
    ProtocolError for anything malformed (after which the connection is unusable).

    With `deadline` (a ``time.monotonic()`` value) the whole message must have arrived by
    then, however slowly its bytes trickle in; TimeoutError otherwise."""
    if deadline is None:
        return _read_message(sock.recv_into, max_payload)

    def read_into_before_deadline(view: memoryview) -> int:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("the message did not arrive in time")
        sock.settimeout(remaining)
        return sock.recv_into(view)

    return _read_message(read_into_before_deadline, max_payload)


def decode(data: bytes, max_payload: int = MAX_PAYLOAD_BYTES) -> Message:
    """Parse exactly one whole message from bytes (the inverse of encode)."""
    stream = io.BytesIO(data)
    message = _read_message(stream.readinto, max_payload)
    if stream.tell() != len(data):
        raise ProtocolError(f"{len(data) - stream.tell()} bytes left after the message")
    return message
