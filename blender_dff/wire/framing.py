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
  null for failures not tied to a request, e.g. ``auth_failed``).
- ``cancel`` {id}: client -> server; the request then ends with an ``error`` whose code
  is ``cancelled`` (or with its reply if it finished first).

Every request ends with exactly one ``reply`` or ``error``.
"""

from __future__ import annotations

import io
import json
import math
import socket
import struct
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

PROTOCOL_VERSION = 1
MAGIC = b"DFFW"
MAX_HEADER_BYTES = 1 << 20
MAX_PAYLOAD_BYTES = 4 << 30
ALLOWED_DTYPES = frozenset({
    "bool",
    "int8", "int16", "int32", "int64",
    "uint8", "uint16", "uint32", "uint64",
    "float16", "float32", "float64",
})

_PREFIX = struct.Struct("<4sIQ")
_ALIGN = 8  # the largest itemsize among ALLOWED_DTYPES
_ARRAY_KEYS = frozenset({"name", "dtype", "shape", "offset", "nbytes"})


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
    header_bytes = json.dumps(
        header, separators=(",", ":"), ensure_ascii=False, default=_json_default
    ).encode("utf-8")
    if len(header_bytes) > MAX_HEADER_BYTES:
        raise ValueError(
            f"message header is {len(header_bytes)} bytes, more than {MAX_HEADER_BYTES}; "
            "send large data as arrays"
        )
    prefix = _PREFIX.pack(MAGIC, len(header_bytes), offset)
    return [prefix + header_bytes, *buffers]


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
    buffer = bytearray(size)
    view = memoryview(buffer)
    got = 0
    while got < size:
        count = read_into(view[got:])
        if count == 0:
            if at_boundary and got == 0:
                raise ConnectionClosed("the peer closed the connection")
            raise ProtocolError(
                f"connection closed in the middle of a message ({got} of {size} bytes read)"
            )
        got += count
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
                f"each array entry needs exactly the keys {sorted(_ARRAY_KEYS)}, got {entry!r}"
            )
        name, dtype, shape = entry["name"], entry["dtype"], entry["shape"]
        offset, nbytes = entry["offset"], entry["nbytes"]
        if not isinstance(name, str) or not name:
            raise ProtocolError(f"array name must be a non-empty string, got {name!r}")
        if name in names:
            raise ProtocolError(f"array name {name!r} appears twice")
        names.add(name)
        if not isinstance(dtype, str) or dtype not in ALLOWED_DTYPES:
            raise ProtocolError(
                f"array {name!r}: dtype {dtype!r} is not one of {sorted(ALLOWED_DTYPES)}"
            )
        if not isinstance(shape, list) or not all(_is_int(n) and n >= 0 for n in shape):
            raise ProtocolError(
                f"array {name!r}: shape must be a list of non-negative ints, got {shape!r}"
            )
        if not (_is_int(offset) and _is_int(nbytes) and offset >= 0 and nbytes >= 0):
            raise ProtocolError(
                f"array {name!r}: offset and nbytes must be non-negative ints, "
                f"got {offset!r} and {nbytes!r}"
            )
        expected = math.prod(shape) * np.dtype(dtype).itemsize
        if nbytes != expected:
            raise ProtocolError(
                f"array {name!r}: nbytes is {nbytes} but shape {shape} of {dtype} "
                f"needs {expected}"
            )
        if offset + nbytes > payload_len:
            raise ProtocolError(
                f"array {name!r}: bytes {offset}..{offset + nbytes} lie outside the "
                f"{payload_len}-byte payload"
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
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProtocolError(f"header is not UTF-8 JSON: {exc}") from None
    if not isinstance(header, dict) or not isinstance(header.get("type"), str):
        raise ProtocolError("header must be a JSON object with a string 'type'")
    table = _validate_table(header.pop("arrays", []), payload_len)
    # Allocation happens only now, after everything above was checked.
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


def recv_message(sock: socket.socket, max_payload: int = MAX_PAYLOAD_BYTES) -> Message:
    """Receive one message. Raises ConnectionClosed at a clean end of stream and
    ProtocolError for anything malformed (after which the connection is unusable)."""
    return _read_message(sock.recv_into, max_payload)


def decode(data: bytes, max_payload: int = MAX_PAYLOAD_BYTES) -> Message:
    """Parse exactly one whole message from bytes (the inverse of encode)."""
    stream = io.BytesIO(data)
    message = _read_message(stream.readinto, max_payload)
    if stream.tell() != len(data):
        raise ProtocolError(f"{len(data) - stream.tell()} bytes left after the message")
    return message
