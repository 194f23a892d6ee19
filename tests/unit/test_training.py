"""The resumable training loop both trainers share: learning-rate decay, checkpoints, cancel, resume."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from external_worker.errors import Cancelled
from external_worker.training import ResumableTraining
from external_worker.workspace import Workspace


@dataclass
class Schedule:
    steps: int = 10
    lr: float = 1e-2
    lr_final: float = 1e-3
    checkpoint_every: int = 4


class Recorder:
    def __init__(self, cancel_at: int | None = None) -> None:
        self.events, self.cancel_at = [], cancel_at

    def progress(self, stage, step, total, metrics=None, message=None, preview=None) -> None:
        self.events.append((stage, step, total, dict(metrics or {}), preview))
        if step == self.cancel_at:
            raise Cancelled()


def run(ws: Workspace, schedule: Schedule, reporter: Recorder, lrs: list[float]):
    torch.manual_seed(0)
    model = torch.nn.Linear(2, 1)
    optimizer = torch.optim.Adam(model.parameters(), lr=schedule.lr)
    training = ResumableTraining(ws, "model.pt", "model")
    if training.checkpoint:
        model.load_state_dict(training.checkpoint["model"])

    def forward(step):
        lrs.append(optimizer.param_groups[0]["lr"])
        return (model(torch.ones(1, 2)) ** 2).sum()

    step = training.run(optimizer, schedule, forward, lambda step, loss: ({"twice": 2 * loss}, None),
                        state=lambda: {"model": model.state_dict()}, reporter=reporter, progress_stage="model",
                        stage_info=lambda: {"extra": 1})
    return training, step


def test_decay_checkpoints_cancel_and_resume(tmp_path):
    ws = Workspace(tmp_path)
    lrs: list[float] = []
    with pytest.raises(Cancelled):
        run(ws, Schedule(), Recorder(cancel_at=6), lrs)
    ckpt = ws.load_torch("model.pt")
    assert list(ckpt) == ["model", "optimizer", "step"] and ckpt["step"] == 6
    assert ws.stage("model") == {"step": 6, "target_steps": 10, "extra": 1}
    reporter = Recorder()
    training, step = run(ws, Schedule(), reporter, lrs)
    assert step == training.step == 10 and [e[1] for e in reporter.events] == [7, 8, 9, 10]
    assert all(set(e[3]) == {"loss", "twice"} and e[3]["twice"] == 2 * e[3]["loss"] for e in reporter.events)
    assert training.loss == reporter.events[-1][3]["loss"] and training.seconds > 0
    gamma = (1e-3 / 1e-2) ** (1 / 10)
    assert lrs == pytest.approx([1e-2 * gamma**i for i in range(10)])
    assert ws.load_torch("model.pt")["step"] == 10
    # Done: running again writes the checkpoint back and reports nothing.
    reporter = Recorder()
    training, step = run(ws, Schedule(), reporter, lrs)
    assert step == 10 and reporter.events == [] and training.loss != training.loss


def test_a_step_draws_as_many_rays_as_its_sample_budget_allows_within_bounds():
    """Rays that hold many samples (a hazy floor in every view) get fewer rays; rays that hold
    few (an object on a transparent background) keep the most; never under a quarter of them."""
    from external_worker.config import TrainConfig
    from external_worker.nerf.train import RayBatch

    batch = RayBatch(TrainConfig(rays_per_batch=4096, samples_per_batch=24576))
    assert batch.rays == 4096
    for _ in range(60):
        batch.count(evaluated=batch.rays * 12)  # 12 samples a ray
    assert batch.rays == 2048
    for _ in range(60):
        batch.count(evaluated=batch.rays * 100)
    assert batch.rays == 1024  # the floor: rays_per_batch / 4
    for _ in range(100):
        batch.count(evaluated=batch.rays * 2)
    assert batch.rays == 4096
    assert 1024 < batch.mean_rays() < 4096
