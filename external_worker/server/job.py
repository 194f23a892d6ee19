"""What a request's handler gets from the server: progress reporting, throttled to what the
wire and the add-on's status bar need, and the request's cancellation."""

from __future__ import annotations

import threading
import time
from typing import Callable

import numpy as np

from ..errors import Cancelled

PROGRESS_INTERVAL_S = 0.1  # at most ~10 progress events per second per request


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
