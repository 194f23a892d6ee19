"""A request's params read as its method's record in `blender_dff.wire.api` describes them.

Every value from the wire is checked here (type, range, length, paths) before a stage sees it;
a bad one is refused with a `bad_request` naming the parameter. When the server is given a
root folder (required off loopback), every path must lie inside it once its links are
followed (`workspace.Confinement`, which also holds the files a dataset or workspace leads to). Choices are left to the
stage that uses the value, which refuses a wrong one with its own error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from blender_dff.wire.api import FLAG, INT, PATH, RECORDS, TEXT, VECTOR, Param

from ..errors import WorkerError
from ..workspace import Confinement


class Params:
    """Typed access to a request's params (or to one object of a RECORDS param), with clear errors."""

    def __init__(self, specs: tuple[Param, ...], params: dict, confine: Confinement) -> None:
        self.specs = {spec.key: spec for spec in specs}
        self.params, self.confine = params, confine

    def __getitem__(self, key: str) -> Any:
        return self.read(key)

    def read(self, key: str, required: bool | None = None) -> Any:
        """The checked value of `key`: sent, or its default; None when it is optional, has no
        default and was not sent. `required` overrides the record's (a click prompt needs
        clicks only without a box)."""
        spec = self.specs[key]
        required = spec.required if required is None else required
        if key in self.params or required:
            value = self.params.get(key)
        elif spec.default is None:
            return None
        else:
            value = spec.default
        if spec.kind == TEXT:
            return self._text(spec, value)
        if spec.kind == PATH:
            return self.path(key)
        if spec.kind == INT:
            return self._integer(spec, value)
        if spec.kind == FLAG:
            return self._flag(spec, value)
        if spec.kind == VECTOR:
            return self._vector(spec, value)
        if spec.kind == RECORDS:
            return self._records(spec, value, required)
        raise ValueError(f"parameter '{key}' has an unknown kind {spec.kind!r}")

    def path(self, key: str) -> Path:
        """The text `key` as a resolved path, inside the root folder."""
        raw = self._text(self.specs[key], self.params.get(key))
        if not raw:
            raise WorkerError("bad_request", f"parameter '{key}' is empty", "Give a folder path.")
        return self.confine.check(raw)

    @staticmethod
    def _text(spec: Param, value: Any) -> str:
        if not isinstance(value, str) or len(value) > spec.max_len or "\0" in value:
            raise WorkerError("bad_request", f"parameter '{spec.key}' must be a string of at most "
                              f"{spec.max_len} characters", f"Got {type(value).__name__}.")
        return value

    @staticmethod
    def _integer(spec: Param, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not spec.low <= value <= spec.high:
            raise WorkerError("bad_request", f"parameter '{spec.key}' must be an integer in "
                              f"[{spec.low}, {spec.high}]", f"Got {value!r}.")
        return value

    @staticmethod
    def _flag(spec: Param, value: Any) -> bool:
        if not isinstance(value, bool):
            raise WorkerError("bad_request", f"parameter '{spec.key}' must be true or false", f"Got {value!r}.")
        return value

    @staticmethod
    def _vector(spec: Param, value: Any) -> np.ndarray:
        if (not isinstance(value, list) or len(value) != 3
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
                or not np.isfinite(value).all()):
            raise WorkerError("bad_request", f"parameter '{spec.key}' must be a list of 3 finite numbers",
                              f"Got {value!r}.")
        return np.asarray(value, dtype=np.float64)

    def _records(self, spec: Param, value: Any, required: bool) -> list[Params]:
        """A list of objects, each read with the same checks (a prompt's clicks, say). The
        default is a tuple: an empty list that cannot be changed by accident."""
        if (not isinstance(value, (list, tuple)) or not all(isinstance(v, dict) for v in value)
                or len(value) > spec.max_len or (required and not value)):
            length = len(value) if isinstance(value, (list, tuple)) else '-'
            raise WorkerError("bad_request", f"parameter '{spec.key}' must be a list of 1 to {spec.max_len} "
                              "objects", f"Got {type(value).__name__} of length {length}.")
        return [Params(spec.fields, v, self.confine) for v in value]
