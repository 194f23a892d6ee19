"""The worker's wire methods: checked parameters in, pipeline stages run, arrays out.

Every value from the wire is checked here (types, ranges, paths) before a stage sees it. When
the server is given a root folder (required off loopback), every path must lie inside it.
"""

from __future__ import annotations

import threading
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .. import pipeline
from ..config import TrainSettings
from ..mesh.stored import load_mesh
from ..queries import prompt as click_query, similar as similar_query, text as text_query
from ..datasets.dataset import TEST_EVERY
from ..queries.click import ClickPrompt
from ..errors import WorkerError
from ..queries.relevancy import split_terms
from ..workspace import Files, Workspace

MAX_CLICKS = 64       # clicks in one prompt
MAX_CLICK_VIEWS = 32  # views a click may be carried to


class Params:
    """Typed access to a request's params with clear errors."""

    def __init__(self, params: dict, root: Path | None) -> None:
        self.params, self.root = params, root

    def text(self, key: str, default: str | None = None, max_len: int = 4096) -> str:
        value = self.params.get(key, default)
        if not isinstance(value, str) or len(value) > max_len or "\0" in value:
            raise WorkerError("bad_request", f"parameter '{key}' must be a string of at most {max_len} characters",
                              f"Got {type(value).__name__}.")
        return value

    def integer(self, key: str, default: int, low: int, high: int) -> int:
        value = self.params.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise WorkerError("bad_request", f"parameter '{key}' must be an integer in [{low}, {high}]", f"Got {value!r}.")
        return value

    def vector(self, key: str) -> np.ndarray:
        value = self.params.get(key)
        if (not isinstance(value, list) or len(value) != 3
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
                or not np.isfinite(value).all()):
            raise WorkerError("bad_request", f"parameter '{key}' must be a list of 3 finite numbers", f"Got {value!r}.")
        return np.asarray(value, dtype=np.float64)

    def flag(self, key: str, default: bool) -> bool:
        value = self.params.get(key, default)
        if not isinstance(value, bool):
            raise WorkerError("bad_request", f"parameter '{key}' must be true or false", f"Got {value!r}.")
        return value

    def records(self, key: str, max_count: int, required: bool = True) -> list["Params"]:
        """A list of objects, each read with the same checks (a prompt's clicks, say)."""
        value = self.params.get(key, [] if not required else None)
        if (not isinstance(value, list) or not all(isinstance(v, dict) for v in value)
                or len(value) > max_count or (required and not value)):
            raise WorkerError("bad_request", f"parameter '{key}' must be a list of 1 to {max_count} objects",
                              f"Got {type(value).__name__} of length {len(value) if isinstance(value, list) else '-'}.")
        return [Params(v, self.root) for v in value]

    def path(self, key: str) -> Path:
        raw = self.text(key)
        if not raw:
            raise WorkerError("bad_request", f"parameter '{key}' is empty", "Give a folder path.")
        path = Path(raw).expanduser().resolve()
        if self.root is not None and not path.is_relative_to(self.root):
            raise WorkerError("path_not_allowed", f"{path} is outside the worker's root folder {self.root}",
                              "Put the data under the root folder the worker was started with.")
        return path


Handler = Callable[[dict, dict[str, np.ndarray], Any], tuple[dict, dict[str, np.ndarray]]]


def make_handlers(root: Path | None = None) -> dict[str, Handler]:
    root = root.resolve() if root else None
    training = threading.Lock()  # one training or bake job at a time: they would fight over the workspace

    def import_dataset(params: dict, arrays: dict, ctx: Any) -> tuple[dict, dict]:
        p = Params(params, root)
        dataset = pipeline.import_dataset(p.path("dataset"), Workspace(p.path("workspace")),
                                          downscale=p.integer("downscale", 1, 1, 64),
                                          test_every=p.integer("test_every", TEST_EVERY, 0, 1_000_000),
                                          bounds=p.text("bounds", "auto", 16))
        result = {"n_images": len(dataset), "width": dataset.width, "height": dataset.height,
                  "root": str(dataset.root), "names": list(dataset.names),
                  "split": [str(s) for s in dataset.split], "unbounded": dataset.unbounded,
                  "labels": {str(k): v for k, v in dataset.label_names.items()}}
        arrays = {"c2w": dataset.c2w.astype(np.float32), "intrinsics": dataset.intrinsics.astype(np.float32)}
        if dataset.points is not None:
            arrays.update(points=dataset.points.astype(np.float32), point_colors=dataset.point_colors.astype(np.uint8))
        return result, arrays

    def train(params: dict, arrays: dict, ctx: Any) -> tuple[dict, dict]:
        p = Params(params, root)
        defaults = TrainSettings()
        settings = TrainSettings(
            nerf=replace(defaults.nerf, steps=p.integer("nerf_steps", defaults.nerf.steps, 1, 1_000_000)),
            mesh=replace(defaults.mesh, resolution=p.integer("mesh_resolution", defaults.mesh.resolution, 16, 1024),
                         max_faces=p.integer("max_faces", defaults.mesh.max_faces, 0, 100_000_000)),
            features=replace(defaults.features, steps=p.integer("feature_steps", defaults.features.steps, 1, 1_000_000)),
            teacher=p.text("teacher", "labels", 64))
        checkpoint = p.text("sam_checkpoint", "")
        settings.sam_checkpoint = checkpoint if checkpoint in ("", "tiny") else str(p.path("sam_checkpoint"))
        settings.clip_model = p.text("clip_model", defaults.clip_model, 200)
        if settings.clip_model.startswith("local-dir:"):  # open_clip would read a folder outside the root check
            raise WorkerError("bad_request", f"clip_model '{settings.clip_model}' names a folder",
                              "Give a model name and put a local checkpoint file in clip_pretrained.")
        pretrained = p.text("clip_pretrained", defaults.clip_pretrained, 1000)
        # a tag names weights open_clip downloads; anything path-like is a file, checked as paths are
        is_file = any(sep in pretrained for sep in ("/", "\\")) or pretrained.startswith("~")
        settings.clip_pretrained = str(p.path("clip_pretrained")) if is_file else pretrained
        if not training.acquire(blocking=False):
            raise WorkerError("busy", "the worker is already training", "Wait for it to finish or cancel it.")
        try:
            mesh, summary = pipeline.train_all(Workspace(p.path("workspace")), settings, ctx)
        finally:
            training.release()
        return summary, mesh.to_arrays()

    def bake(params: dict, arrays: dict, ctx: Any) -> tuple[dict, dict]:
        p = Params(params, root)
        ws = Workspace(p.path("workspace"))
        size = p.integer("size", 2048, 1, 1 << 16)
        if not training.acquire(blocking=False):
            raise WorkerError("busy", "the worker is training", "Wait for it to finish or cancel it.")
        try:
            result = pipeline.run_bake(ws, size, ctx)
        finally:
            training.release()
        return {"size": size, "texture_path": str(ws.path(Files.texture(size)))}, result.to_arrays()

    def get_mesh(params: dict, arrays: dict, ctx: Any) -> tuple[dict, dict]:
        mesh = load_mesh(Workspace(Params(params, root).path("workspace")))
        return {"n_faces": int(len(mesh.faces))}, mesh.to_arrays()

    def query_text(params: dict, arrays: dict, ctx: Any) -> tuple[dict, dict]:
        p = Params(params, root)
        text = p.text("text", max_len=1000)
        negatives = split_terms(p.text("negatives"), "list of negatives") if "negatives" in params else None
        label_set = split_terms(p.text("label_set"), "label set") if p.text("label_set", "") else None
        probability = text_query.query_text(Workspace(p.path("workspace")), text, p.text("teacher", "labels", 64),
                                          negatives, label_set)
        return {"text": text, "n_faces": int(len(probability))}, {"face_probability": probability}

    def query_click(params: dict, arrays: dict, ctx: Any) -> tuple[dict, dict]:
        p = Params(params, root)
        clicks = p.records("clicks", MAX_CLICKS, required="box" not in params)
        box = p.records("box", 4, required=False) if "box" in params else None
        prompt = ClickPrompt([c.vector("origin") for c in clicks], [c.vector("direction") for c in clicks],
                             [int(c.flag("object", True)) for c in clicks],
                             None if box is None else [c.vector("origin") for c in box],
                             None if box is None else [c.vector("direction") for c in box])
        result = click_query.query_click(Workspace(p.path("workspace")), prompt, p.text("teacher", "labels", 64),
                                      p.integer("views", click_query.DEFAULT_CLICK_VIEWS, 0, MAX_CLICK_VIEWS))
        return ({"query": result.query, "hit_face": result.hit_face, "views": result.views,
                 "n_faces": int(len(result.probability))}, {"face_probability": result.probability})

    def query_similar(params: dict, arrays: dict, ctx: Any) -> tuple[dict, dict]:
        p = Params(params, root)
        selected = arrays.get("selected")
        if selected is None or selected.dtype != np.bool_ or selected.ndim != 1:
            raise WorkerError("bad_request", "array 'selected' must be a 1-D bool array (one value per face)",
                              "Send the selection of the workspace's mesh in its face order.")
        probability = similar_query.query_similar(Workspace(p.path("workspace")), selected, p.text("teacher", "labels", 64))
        return {"n_faces": int(len(probability))}, {"face_probability": probability}

    return {"bake": bake, "query_click": query_click, "query_similar": query_similar, "import_dataset": import_dataset, "train": train, "get_mesh": get_mesh, "query_text": query_text}
