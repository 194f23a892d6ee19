"""A tiny grounded scene, as users capture them: objects on a floor that reaches past the scene
box, the cone standing on the cube, the sphere touching it. Trained once (conftest), then
checked for what floating scenes never show: surface under the floor or on the box's walls,
and selections that bite into the support or leave their base behind."""

from __future__ import annotations

import json

import numpy as np
import pytest
import trimesh

from external_worker import pipeline
from external_worker.evaluation import contact_miou, crop_to_box, stray_area
from external_worker.mesh.stored import load_mesh, mesh_voxel
from external_worker.queries.text import query_text
from external_worker.workspace import Workspace


@pytest.fixture(scope="module")
def grounded(grounded_scene, grounded_workspace):
    ws = Workspace(grounded_workspace)
    scene = pipeline.open_scene(ws)
    mesh = load_mesh(ws)
    names = {int(k): v for k, v in json.loads((grounded_scene / "labels.json").read_text()).items()}
    with np.load(grounded_scene / "ground_truth.npz") as data:
        gt = {k: data[k] for k in data.files}
    return ws, scene, mesh, names, gt


def test_the_floor_past_the_box_makes_the_scene_unbounded(grounded):
    _, scene, _, names, _ = grounded
    assert "ground" in names.values() and scene.dataset.unbounded


def test_no_surface_below_the_floor_or_on_the_box_walls(grounded):
    ws, scene, mesh, names, gt = grounded
    floor = [i for i, name in names.items() if name == "ground"][0]
    height = gt["vertices"][np.unique(gt["faces"][gt["face_labels"] == floor])][:, 2].max()
    voxel = mesh_voxel(ws)
    below, on_walls = stray_area(mesh.vertices, mesh.faces, scene.dataset.aabb.astype(np.float64), height,
                                 tolerance=2 * voxel)
    area = trimesh.Trimesh(mesh.vertices, mesh.faces, process=False).area
    assert below < 0.01 * area, f"{below:.3f} of {area:.3f} units^2 below the floor"
    assert on_walls < 0.01 * area, f"{on_walls:.3f} of {area:.3f} units^2 on the box's walls"


def test_a_selection_keeps_its_base_and_takes_nothing_of_its_support(grounded):
    """Where the cone stands on the cube and the sphere touches it, each face goes to its own object."""
    ws, scene, mesh, names, gt = grounded
    ids = sorted(names)
    probabilities = np.stack([query_text(ws, names[i]) for i in ids], 1)
    predicted = np.asarray(ids)[probabilities.argmax(1)]
    truth = crop_to_box(gt["vertices"], gt["faces"], gt["face_labels"], scene.dataset.aabb.astype(np.float64))
    contact, per_object, share = contact_miou(mesh.vertices, mesh.faces, predicted, *truth, ids,
                                              radius=3 * mesh_voxel(ws))
    by_name = {names[i]: value for i, value in per_object.items()}
    assert share > 0.02 and {"cube", "cone", "sphere"} <= set(by_name), by_name
    assert contact > 0.6 and min(by_name["cube"], by_name["cone"]) > 0.5, by_name


def test_the_feature_field_gives_the_box_its_full_resolution_in_an_unbounded_scene(grounded):
    """Contraction squeezes the box into half of the grid: the grid's finest level doubles, so
    objects and their contacts keep the detail the settings name."""
    from external_worker.config import FeatureConfig
    from external_worker.workspace import Files

    ws, scene, _, _, _ = grounded
    stored = ws.load_torch(Files.features("labels"))["config"]
    assert stored["contract"] and stored["max_res"] == 2 * FeatureConfig().max_res
