"""What both trainers (the radiance field's and the feature field's) share: the compute device
and the resumable training loop."""

from __future__ import annotations

import time
from typing import Callable, Protocol

import numpy as np
import torch

from .errors import Cancelled
from .progress import Reporter
from .workspace import Workspace


def device() -> torch.device:
    """The device the worker trains and queries on: the GPU when there is one."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class Schedule(Protocol):
    """How long and how fast a trainer runs (`TrainConfig` and `FeatureConfig` are both one)."""

    steps: int
    lr: float
    lr_final: float  # the learning rate decays exponentially from lr to this over all the steps
    checkpoint_every: int


class ResumableTraining:
    """One trainer's steps, continued from its checkpoint in the workspace when there is one.

    The checkpoint file holds the trainer's own state (config, weights: what `state()` returns,
    restored by the trainer from `checkpoint`), the optimiser's and the step. It is written every
    `checkpoint_every` steps, at the end, and when the user stops the run (the reporter raises
    `Cancelled`, or Ctrl-C on the command line), each time with the step and the target in the
    trainer's stage of state.json."""

    def __init__(self, workspace: Workspace, file: str, stage: str) -> None:
        self.workspace, self.file, self.stage = workspace, file, stage
        self.checkpoint: dict | None = workspace.load_torch(file) if workspace.path(file).exists() else None
        self.step = 0
        self.loss = float("nan")  # the last step's
        self.seconds = 0.0        # the last run's, checkpoint writes included

    def run(self, optimizer: torch.optim.Optimizer, schedule: Schedule, forward: Callable[[int], torch.Tensor],
            report: Callable[[int, float], tuple[dict, np.ndarray | None]], state: Callable[[], dict],
            reporter: Reporter, progress_stage: str, stage_info: Callable[[], dict] = dict) -> int:
        """Train up to `schedule.steps`; returns the step reached.

        `forward(step)` is the loss of step `step` (0-based), which the loop back-propagates and
        the optimiser steps on; `report(step, loss)`, after it, gives the metrics shown beside
        the loss and a preview image, or None. `stage_info()` adds to state.json at each checkpoint."""
        if self.checkpoint:
            with self.workspace.reading(self.file):
                optimizer.load_state_dict(self.checkpoint["optimizer"])
                self.step = int(self.checkpoint["step"])

        def save() -> None:
            self.workspace.save_torch(self.file, {**state(), "optimizer": optimizer.state_dict(), "step": self.step})
            self.workspace.update_stage(self.stage, step=self.step, target_steps=schedule.steps, **stage_info())

        gamma = (schedule.lr_final / schedule.lr) ** (1 / max(schedule.steps, 1))
        start = time.perf_counter()
        try:
            while self.step < schedule.steps:
                for group in optimizer.param_groups:
                    group["lr"] = schedule.lr * gamma**self.step
                loss = forward(self.step)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                self.step += 1
                self.loss = loss.item()
                if self.step % schedule.checkpoint_every == 0:
                    save()
                metrics, preview = report(self.step, self.loss)
                reporter.progress(progress_stage, self.step, schedule.steps, {"loss": self.loss, **metrics},
                                  preview=preview)
        except (Cancelled, KeyboardInterrupt):
            save()  # a step cut short by Ctrl-C only leaves some weights one update ahead
            raise
        save()
        self.seconds = time.perf_counter() - start
        return self.step
