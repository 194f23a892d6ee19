"""The long jobs running for each scene (training, a bake, a capture) and their progress.

Runtime only, keyed by the scene's `session_uid`: undo, redo and saving never touch it. Job state
kept in `Scene.dff` was restored by undo while the worker went on training, which hid the
progress bar and Cancel and offered Train again. "Running" is whether a job is listed here; the
job is listed from the request that starts it to the reply (or error) that ends it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import bpy

STAGE_NAMES = {"nerf": "NeRF", "mesh": "Mesh", "features": "Feature field", "bake": "Texture bake",
               "capture": "Capture"}


def duration(seconds: float) -> str:
    minutes, seconds = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m {seconds:02d}s" if minutes else f"{seconds}s"


@dataclass
class Job:
    """One long job of one scene: what it is, how far it got, and how to stop it."""

    kind: str                   # what runs, as the UI says it: "Training", "Texture bake", "Capture"
    cancel: Callable[[], None]  # asks the job to stop; its end still arrives as its reply
    stage: str = ""
    step: int = 0
    total: int = 0
    loss: float | None = None
    psnr: float | None = None
    eta: float | None = None    # seconds left in this stage
    message: str = ""
    cancelling: bool = False

    @property
    def fraction(self) -> float:
        return min(self.step / self.total, 1.0) if self.total else 0.0

    def title(self) -> str:
        """What the progress bar says: the stage and its steps."""
        stage = STAGE_NAMES.get(self.stage, self.stage) or "Starting"
        if self.cancelling:
            return f"{stage}: cancelling..."
        return f"{stage} {self.step}/{self.total}" if self.total else stage

    def details(self) -> str:
        """The line under the progress bar: loss, PSNR and time left, as far as known."""
        parts = [f"loss {self.loss:.4f}" if self.loss is not None else "",
                 f"PSNR {self.psnr:.2f} dB" if self.psnr is not None else "",
                 f"ETA {duration(self.eta)}" if self.eta is not None and self.eta >= 0 else ""]
        return "  ".join(part for part in parts if part) or self.message

    def update(self, event: dict) -> None:
        """Apply one progress event {stage, step, total, metrics, eta, message}."""
        self.stage = str(event.get("stage") or "")
        self.step = int(event.get("step") or 0)
        self.total = int(event.get("total") or 0)
        metrics = event.get("metrics") or {}
        if "loss" in metrics:
            self.loss = float(metrics["loss"])
        if "psnr" in metrics:
            self.psnr = float(metrics["psnr"])
        eta = event.get("eta")
        self.eta = float(eta) if eta is not None else None
        if event.get("message"):
            self.message = str(event["message"])


_JOBS: dict[int, Job] = {}


def add(scene: bpy.types.Scene, job: Job) -> None:
    """List `job` as the one running for `scene` (callers check `running` first)."""
    _JOBS[scene.session_uid] = job


def of(scene: bpy.types.Scene) -> Job | None:
    """The job running for `scene`, if any."""
    return _JOBS.get(scene.session_uid)


def running(scene: bpy.types.Scene) -> bool:
    return scene.session_uid in _JOBS


def finish(scene_uid: int) -> None:
    """The job of the scene `scene_uid` ended (its reply arrived, or it failed to start)."""
    _JOBS.pop(scene_uid, None)


def all_jobs() -> list[tuple[bpy.types.Scene, Job]]:
    """Every running job with its scene (scenes deleted meanwhile are left out)."""
    scenes = {scene.session_uid: scene for scene in bpy.data.scenes}
    return [(scenes[uid], job) for uid, job in _JOBS.items() if uid in scenes]


def clear() -> None:
    """Forget every job: another file was loaded, or the add-on is being disabled."""
    _JOBS.clear()
