"""The worker's wire methods: checked parameters in, pipeline stages run, arrays out.

One handler per method of `blender_dff.wire.api`, which says each one's parameters; `Params`
checks them (types, ranges, paths) before a stage sees them.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Callable

import numpy as np

from blender_dff.wire import api

from .. import pipeline
from ..config import from_flat
from ..errors import WorkerError
from ..mesh.bake import TRIANGLES_HINT, Triangles
from ..mesh.stored import check_mesh_id, current_mesh_id, load_mesh
from ..progress import SilentReporter
from ..queries import prompt as click_query, similar as similar_query, text as text_query
from ..queries.click import ClickPrompt
from ..queries.relevancy import split_terms
from ..workspace import Confinement, Files, Workspace
from .params import Params

Handler = Callable[[dict, dict[str, np.ndarray], Any], tuple[dict, dict[str, np.ndarray]]]


def own_triangles(arrays: dict[str, np.ndarray]) -> Triangles | None:
    """The triangles a bake request carries for one object (both arrays, or neither)."""
    if not arrays.keys() & set(api.BAKE.arrays):
        return None
    missing = [name for name in api.BAKE.arrays if name not in arrays]
    if missing:
        raise WorkerError("bad_request", f"a bake with its own triangles lacks the array '{missing[0]}'",
                          TRIANGLES_HINT)
    return Triangles(arrays["vertices"], arrays["faces"])


def make_handlers(root: Path | None = None) -> dict[str, Handler]:
    """The handlers, each file they open held to `root` (None: anywhere)."""
    confine = Confinement(root)
    training = threading.Lock()  # one training or bake job at a time: they would fight over the workspace

    def import_dataset(params: dict, arrays: dict, ctx: Any) -> tuple[dict, dict]:
        p = Params(api.IMPORT_DATASET.params, params, confine)
        dataset = pipeline.import_dataset(p["dataset"], Workspace(p["workspace"], confine), downscale=p["downscale"],
                                          test_every=p["test_every"], bounds=p["bounds"])
        result = {"n_images": len(dataset), "width": dataset.width, "height": dataset.height,
                  "root": str(dataset.root), "names": list(dataset.names),
                  "split": [str(s) for s in dataset.split], "unbounded": dataset.unbounded,
                  "labels": {str(k): v for k, v in dataset.label_names.items()}}
        arrays = {"c2w": dataset.c2w.astype(np.float32), "intrinsics": dataset.intrinsics.astype(np.float32)}
        if dataset.points is not None:
            arrays.update(points=dataset.points.astype(np.float32), point_colors=dataset.point_colors.astype(np.uint8))
        return result, arrays

    def train(params: dict, arrays: dict, ctx: Any) -> tuple[dict, dict]:
        p = Params(api.TRAIN.params, params, confine)
        flat = {spec.key: p[spec.key] for spec in api.TRAIN.params if spec.kind != api.PATH}
        if flat["sam_checkpoint"] not in ("", api.TINY_MODEL):
            flat["sam_checkpoint"] = str(p.path("sam_checkpoint"))
        if flat["clip_model"].startswith("local-dir:"):  # open_clip would read a folder outside the root check
            raise WorkerError("bad_request", f"clip_model '{flat['clip_model']}' names a folder",
                              "Give a model name and put a local checkpoint file in clip_pretrained.")
        # a tag names weights open_clip downloads; anything path-like is a file, checked as paths are
        pretrained = flat["clip_pretrained"]
        if any(sep in pretrained for sep in ("/", "\\")) or pretrained.startswith("~"):
            flat["clip_pretrained"] = str(p.path("clip_pretrained"))
        settings = from_flat(flat)
        if not training.acquire(blocking=False):
            raise WorkerError("busy", "the worker is already training", "Wait for it to finish or cancel it.")
        try:
            mesh, summary = pipeline.train_all(Workspace(p["workspace"], confine), settings, ctx)
        finally:
            training.release()
        return summary, mesh.to_arrays()

    def bake(params: dict, arrays: dict, ctx: Any) -> tuple[dict, dict]:
        p = Params(api.BAKE.params, params, confine)
        triangles = own_triangles(arrays)
        ws = Workspace(p["workspace"], confine)
        size = p["size"]
        check_mesh_id(ws, p["mesh_id"])
        if not training.acquire(blocking=False):
            raise WorkerError("busy", "the worker is training", "Wait for it to finish or cancel it.")
        try:
            result = pipeline.run_bake(ws, size, ctx, triangles)
        finally:
            training.release()
        texture_path = ws.path(Files.texture(size, pipeline.bake_key(triangles)))
        return {"size": size, "texture_path": str(texture_path)}, result.to_arrays()

    def get_mesh(params: dict, arrays: dict, ctx: Any) -> tuple[dict, dict]:
        ws = Workspace(Params(api.GET_MESH.params, params, confine)["workspace"], confine)
        mesh = load_mesh(ws)
        return {"n_faces": int(len(mesh.faces)), "mesh_id": current_mesh_id(ws)}, mesh.to_arrays()

    def query_text(params: dict, arrays: dict, ctx: Any) -> tuple[dict, dict]:
        p = Params(api.QUERY_TEXT.params, params, confine)
        text, negatives, label_set = p["text"], p["negatives"], p["label_set"]
        negatives = split_terms(negatives, "list of negatives") if negatives is not None else None
        label_set = split_terms(label_set, "label set") if label_set else None
        ws = Workspace(p["workspace"], confine)
        check_mesh_id(ws, p["mesh_id"])
        probability = text_query.query_text(ws, text, p["teacher"], negatives, label_set)
        return {"text": text, "n_faces": int(len(probability))}, {"face_probability": probability}

    def query_click(params: dict, arrays: dict, ctx: Any) -> tuple[dict, dict]:
        p = Params(api.QUERY_CLICK.params, params, confine)
        clicks = p.read("clicks", required="box" not in params)
        box = p["box"]
        prompt = ClickPrompt([c["origin"] for c in clicks], [c["direction"] for c in clicks],
                             [int(c["object"]) for c in clicks],
                             None if box is None else [c["origin"] for c in box],
                             None if box is None else [c["direction"] for c in box])
        ws = Workspace(p["workspace"], confine)
        check_mesh_id(ws, p["mesh_id"])
        result = click_query.query_click(ws, prompt, p["teacher"], p["views"])
        return ({"query": result.query, "hit_face": result.hit_face, "views": result.views,
                 "n_faces": int(len(result.probability))}, {"face_probability": result.probability})

    def query_similar(params: dict, arrays: dict, ctx: Any) -> tuple[dict, dict]:
        p = Params(api.QUERY_SIMILAR.params, params, confine)
        selected = arrays.get("selected")
        if selected is None or selected.dtype != np.bool_ or selected.ndim != 1:
            raise WorkerError("bad_request", "array 'selected' must be a 1-D bool array (one value per face)",
                              "Send the selection of the workspace's mesh in its face order.")
        ws = Workspace(p["workspace"], confine)
        check_mesh_id(ws, p["mesh_id"])
        probability = similar_query.query_similar(ws, selected, p["teacher"])
        return {"n_faces": int(len(probability))}, {"face_probability": probability}

    def split(params: dict, arrays: dict, ctx: Any) -> tuple[dict, dict]:
        p = Params(api.SPLIT.params, params, confine)
        ws = Workspace(p["workspace"], confine)
        check_mesh_id(ws, p["mesh_id"])
        result = pipeline.run_split(ws, p["teacher"], p["label_set"], p["close"], p["fill_holes"],
                                    ctx or SilentReporter())
        return {"names": result.names, "closed": result.closed, "n_faces": int(len(result.face_part))}, result.to_arrays()

    return {api.IMPORT_DATASET.name: import_dataset, api.TRAIN.name: train, api.BAKE.name: bake,
            api.GET_MESH.name: get_mesh, api.QUERY_TEXT.name: query_text, api.QUERY_CLICK.name: query_click,
            api.QUERY_SIMILAR.name: query_similar, api.SPLIT.name: split}
