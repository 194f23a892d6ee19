"""How stages report progress: the server's JobContext over the wire, tqdm on the command line.

A stage calls `reporter.progress(stage, step, total, metrics)` now and then; the reporter
raises `Cancelled` from there when the user has asked to stop, so stages checkpoint around it.
Training also passes a `preview` image now and then (a render beside its photo, uint8 RGB,
top row first), which the server sends to Blender and the command line ignores.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
from tqdm import tqdm


class Reporter(Protocol):
    def progress(self, stage: str, step: int, total: int, metrics: dict | None = None,
                 message: str | None = None, preview: np.ndarray | None = None) -> None: ...


class TqdmReporter:
    """One tqdm bar per stage, metrics in the postfix."""

    def __init__(self) -> None:
        self._bar: tqdm | None = None
        self._stage: str | None = None

    def progress(self, stage: str, step: int, total: int, metrics: dict | None = None,
                 message: str | None = None, preview: np.ndarray | None = None) -> None:
        if stage != self._stage or self._bar is None or self._bar.total != total:
            self.close()
            self._bar = tqdm(total=total, desc=stage, unit="step", dynamic_ncols=True)
            self._stage = stage
        self._bar.n = step
        if metrics:
            self._bar.set_postfix({k: f"{v:.4g}" for k, v in metrics.items()}, refresh=False)
        self._bar.refresh()
        if step >= total:
            self.close()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
            self._stage = None


class SilentReporter:
    def progress(self, stage: str, step: int, total: int, metrics: dict | None = None,
                 message: str | None = None, preview: np.ndarray | None = None) -> None:
        pass
