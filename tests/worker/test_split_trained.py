"""Separate All on a trained workspace: the command line writes one closed .ply per label and the
listing, the wire answers in the api's shape, and the split clicking by itself (an ideal 2D
segmenter in place of SAM's decoder) finds the objects."""

from __future__ import annotations

import json

import numpy as np
import pytest
import trimesh

from blender_dff.wire.api import BACKGROUND_PART, SPLIT
from conftest import run_worker
from external_worker.errors import WorkerError
from external_worker.evaluation import nearest_ground_truth_labels
from external_worker.mesh.stored import load_mesh
from external_worker.parts.assign import self_prompted
from external_worker.queries.faces import load_face_features
from external_worker.server.handlers import make_handlers
from external_worker.teachers.oracles import LabelOracle
from external_worker.workspace import Workspace


def test_split_writes_one_closed_ply_per_label_and_the_listing(trained_workspace, label_names, tmp_path):
    out = tmp_path / "objects"
    result = run_worker("split", "--workspace", str(trained_workspace), "--out", str(out))
    listing = json.loads((out / "objects.json").read_text())
    objects = [entry for entry in listing if entry["name"] != BACKGROUND_PART]
    assert [entry["name"] for entry in objects] == list(label_names.values()), result.stdout
    assert sum(entry["faces"] for entry in listing) == len(load_mesh(Workspace(trained_workspace)).faces)
    for entry in objects:
        surface = trimesh.load(out / entry["file"], process=False)
        assert entry["closed"] and surface.is_watertight, entry
        assert len(surface.faces) == entry["faces"] + entry["fill_faces"]
        assert surface.visual.vertex_colors.shape == (len(surface.vertices), 4)
    assert sorted(p.name for p in out.iterdir()) == sorted([entry["file"] for entry in listing] + ["objects.json"])


def test_the_wire_answers_the_split_in_the_api_s_shape(trained_workspace, label_names):
    handlers = make_handlers()
    ws = str(trained_workspace)
    result, arrays = handlers["split"]({"workspace": ws}, {}, None)
    mesh = load_mesh(Workspace(trained_workspace))
    names = result["names"]
    assert names[-1] == BACKGROUND_PART and names[:-1] == list(label_names.values())
    assert len(result["closed"]) == len(names) and all(result["closed"][:-1])
    assert set(arrays) == {"face_part", "patch_vertices", "patch_colors", "patch_faces", "patch_part"}
    assert arrays["face_part"].shape == (len(mesh.faces),) == (result["n_faces"],)
    assert 0 <= arrays["face_part"].min() and arrays["face_part"].max() < len(names)
    assert arrays["patch_faces"].max() < len(mesh.vertices) + len(arrays["patch_vertices"])
    assert arrays["patch_colors"].shape == arrays["patch_vertices"].shape and arrays["patch_colors"].dtype == np.uint8
    assert len(arrays["patch_part"]) == len(arrays["patch_faces"])
    bare, bare_arrays = handlers["split"]({"workspace": ws, "close": False, "fill_holes": False}, {}, None)
    assert len(bare_arrays["patch_faces"]) == 0 and not any(bare["closed"])
    assert np.array_equal(bare_arrays["face_part"], arrays["face_part"])
    with pytest.raises(WorkerError, match="needs a label set|none was given") as error:
        handlers["split"]({"workspace": ws, "teacher": "clip"}, {}, None)
    assert error.value.code == "empty_query"
    with pytest.raises(WorkerError) as error:
        handlers["split"]({"workspace": ws, "teacher": "clip", "label_set": "cube, cone"}, {}, None)
    assert error.value.code == "stage_missing"
    with pytest.raises(WorkerError) as error:
        handlers["split"]({"workspace": ws, "mesh_id": "0123456789abcdef"}, {}, None)
    assert error.value.code == "stale_mesh"
    assert SPLIT.name in handlers


def test_the_split_clicking_by_itself_finds_each_object(trained_workspace, ground_truth, label_names):
    ws = Workspace(trained_workspace)
    labels = load_face_features(ws, "labels")
    partition = self_prompted(ws, labels, LabelOracle(labels.background))
    mesh = load_mesh(ws)
    tm = trimesh.Trimesh(mesh.vertices, mesh.faces, process=False)
    truth = nearest_ground_truth_labels(tm.triangles_center, ground_truth["vertices"], ground_truth["faces"],
                                        ground_truth["face_labels"])
    assert partition.names[-1] == BACKGROUND_PART and len(partition.names) - 1 >= len(label_names)
    for label in label_names:
        best = max(tm.area_faces[(partition.face_part == p) & (truth == label)].sum()
                   / tm.area_faces[(partition.face_part == p) | (truth == label)].sum()
                   for p in range(len(partition.names) - 1))
        assert best > 0.9, (label_names[label], best)
