"""Queries on a trained workspace: clicks and boxes (the object under them, carried across views)
and select similar (DFF patch query)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import trimesh

from external_worker.queries.click import ClickPrompt, ViewRenderer, sam_click
from external_worker.errors import WorkerError
from external_worker.evaluation import nearest_ground_truth_labels
from external_worker.teachers.oracles import LabelOracle
from external_worker.server.handlers import make_handlers
from external_worker.geometry.raycast import first_hit
from external_worker.workspace import Workspace
from external_worker.mesh.stored import load_mesh, mesh_voxel
from external_worker.queries.faces import load_face_features, load_geometry
from external_worker.queries.prompt import query_click
from external_worker.queries.similar import query_similar
from external_worker.workspace import Files


def test_first_hit_takes_the_nearest_triangle():
    box = trimesh.creation.box(extents=(1, 1, 1))
    shifted = box.copy()
    shifted.apply_translation((0, 0, -3))
    both = trimesh.util.concatenate([shifted, box])
    face, t = first_hit(np.asarray(both.vertices), np.asarray(both.faces), np.array([0.1, 0.2, 5.0]), np.array([0, 0, -2.0]))
    assert face >= len(shifted.faces) and both.face_normals[face][2] > 0.9  # top of the near box
    assert t == pytest.approx(4.5)
    assert first_hit(np.asarray(box.vertices), np.asarray(box.faces), np.array([3.0, 0, 5]), np.array([0, 0, -1.0]))[0] == -1


@pytest.fixture(scope="module")
def scene_parts(trained_workspace, tiny_scene, ground_truth):
    """The trained mesh, its faces' ground-truth labels, and a camera position of the dataset."""
    ws = Workspace(trained_workspace)
    mesh = load_mesh(ws)
    tm = trimesh.Trimesh(mesh.vertices, mesh.faces, process=False)
    truth = nearest_ground_truth_labels(tm.triangles_center, ground_truth["vertices"], ground_truth["faces"],
                                        ground_truth["face_labels"])
    camera = np.array(json.loads((tiny_scene / "transforms_train.json").read_text())["frames"][0]["transform_matrix"])
    return ws, tm, truth, camera[:3, 3]


def visible_objects(tm: trimesh.Trimesh, truth: np.ndarray, eye: np.ndarray) -> dict[int, np.ndarray]:
    """For each object whose centre the camera at `eye` sees unhidden: the point to click at."""
    targets = {}
    for label in np.unique(truth):
        centre = tm.triangles_center[truth == label].mean(0)
        face, _ = first_hit(tm.vertices, tm.faces, eye, centre - eye)
        if face >= 0 and truth[face] == label:
            targets[int(label)] = centre
    return targets


def click(eye: np.ndarray, target: np.ndarray, on_object: bool = True) -> tuple[np.ndarray, np.ndarray, int]:
    return eye, target - eye, int(on_object)


def prompt(*clicks, box=None) -> ClickPrompt:
    origins, directions, labels = zip(*clicks) if clicks else ((), (), ())
    return ClickPrompt(np.array(origins).reshape(-1, 3), np.array(directions).reshape(-1, 3), np.array(labels),
                       *(box if box is not None else (None, None)))


def test_click_selects_the_object_under_the_cursor(scene_parts, label_names):
    ws, tm, truth, eye = scene_parts
    targets = visible_objects(tm, truth, eye)
    assert targets
    for label, target in targets.items():
        result = query_click(ws, prompt(click(eye, target)))
        assert result.query == label_names[label] and truth[result.hit_face] == label
        chosen = result.probability > 0.5
        assert tm.area_faces[chosen & (truth == label)].sum() > 0.9 * tm.area_faces[chosen].sum()
        assert tm.area_faces[chosen & (truth == label)].sum() > 0.9 * tm.area_faces[truth == label].sum()


def test_more_clicks_add_objects_and_background_clicks_remove_them(scene_parts, label_names):
    ws, tm, truth, eye = scene_parts
    targets = visible_objects(tm, truth, eye)
    if len(targets) < 2:
        pytest.skip("the first camera sees fewer than two objects unhidden")
    (a, at), (b, bt) = list(targets.items())[:2]
    both = query_click(ws, prompt(click(eye, at), click(eye, bt)))
    assert both.query == "+".join(sorted([label_names[a], label_names[b]], key=list(label_names.values()).index))
    chosen = both.probability > 0.5
    assert tm.area_faces[chosen & ((truth == a) | (truth == b))].sum() > 0.9 * tm.area_faces[chosen].sum()
    assert (chosen & (truth == a)).any() and (chosen & (truth == b)).any()
    only_a = query_click(ws, prompt(click(eye, at), click(eye, bt, on_object=False)))
    assert only_a.query == label_names[a]
    with pytest.raises(WorkerError) as error:
        query_click(ws, prompt(click(eye, at), click(eye, at, on_object=False)))
    assert error.value.code == "empty_selection"


def test_a_box_selects_the_object_filling_it(scene_parts, label_names):
    ws, tm, truth, eye = scene_parts
    label, target = next(iter(visible_objects(tm, truth, eye).items()))
    forward = (target - eye) / np.linalg.norm(target - eye)
    right = np.cross(forward, [0, 0, 1.0])
    right /= np.linalg.norm(right)
    up = np.cross(right, forward)
    half = 0.02 * np.linalg.norm(target - eye)  # a small box around the object's centre
    corners = [target + half * (sx * right + sy * up) for sx, sy in ((-1, -1), (1, -1), (1, 1), (-1, 1))]
    box = (np.repeat(eye[None], 4, 0), np.array(corners) - eye)
    assert query_click(ws, prompt(box=box)).query == label_names[label]
    away = (np.repeat(eye[None], 4, 0), -(np.array(corners) - eye))
    with pytest.raises(WorkerError) as error:
        query_click(ws, prompt(box=away))
    assert error.value.code == "no_hit"


def test_click_on_empty_space_says_so(scene_parts):
    ws, _, _, eye = scene_parts
    with pytest.raises(WorkerError) as error:
        query_click(ws, prompt(click(eye, 2 * eye)))  # looking away from the scene
    assert error.value.code == "no_hit"


@pytest.mark.parametrize("make, message", [
    (lambda: ClickPrompt(np.zeros((1, 3)), np.zeros((1, 3)), np.array([1])), "no direction"),
    (lambda: ClickPrompt(np.zeros((1, 3)), np.ones((1, 3)), np.array([0])), "only background clicks"),
    (lambda: ClickPrompt(np.zeros((1, 3)), np.ones((1, 3)), np.array([2])), "must be 1 .object. or 0"),
    (lambda: ClickPrompt(np.zeros((2, 3)), np.ones((1, 3)), np.array([1, 1])), "2 click origins, 1 directions"),
    (lambda: ClickPrompt(np.zeros((0, 3)), np.zeros((0, 3)), np.zeros(0), np.zeros((2, 3)), np.ones((2, 3))),
     "needs 4 corner rays"),
])
def test_bad_prompts_are_refused(make, message):
    with pytest.raises(WorkerError, match=message) as error:
        make()
    assert error.value.code == "bad_prompt"


def test_carrying_a_click_to_other_views_selects_the_back_side(scene_parts):
    """With an ideal 2D segmenter in place of SAM's decoder, one view sees only the front of an
    object; voting over views turned towards it selects nearly all of it."""
    ws, tm, truth, eye = scene_parts
    ff = load_face_features(ws, "labels")
    renderer = ViewRenderer(load_geometry(ws), ff.features, ff.background, 3 * mesh_voxel(ws))
    cameras = ws.load_npz(Files.CAMERAS)
    eyes = cameras["c2w"][cameras["split"] == "train"][:, :3, 3]
    oracle = LabelOracle(ff.background)
    for label, target in visible_objects(tm, truth, eye).items():
        obj = truth == label

        def iou(views: int) -> tuple[float, int]:
            probability, used = sam_click(oracle, renderer, prompt(click(eye, target)), eyes, views)
            chosen = probability > 0.5
            return tm.area_faces[chosen & obj].sum() / tm.area_faces[chosen | obj].sum(), used

        (single, one), (multi, used) = iou(0), iou(8)
        assert one == 1 and used > 4
        assert single < 0.75 and multi > 0.85 and multi > single + 0.2, (label, single, multi)


def test_select_similar_grows_to_the_whole_object(scene_parts, label_names):
    ws, tm, truth, _ = scene_parts
    label = next(iter(label_names))
    seed = np.zeros(len(truth), bool)
    seed[np.flatnonzero(truth == label)[:20]] = True  # a small patch of one object
    similarity = query_similar(ws, seed)
    assert similarity.dtype == np.float32 and 0 <= similarity.min() and similarity.max() <= 1
    assert np.median(similarity[truth == label]) > 0.9
    assert np.median(similarity[truth != label]) < 0.5
    with pytest.raises(WorkerError, match="no faces are selected"):
        query_similar(ws, np.zeros(len(truth), bool))


def test_wire_methods_check_their_inputs(trained_workspace):
    handlers = make_handlers()
    ws = str(trained_workspace)
    good = {"origin": [0, 0, 5], "direction": [0, 0, -1]}
    with pytest.raises(WorkerError, match="3 finite numbers"):
        handlers["query_click"]({"workspace": ws, "clicks": [{"origin": [0, 0], "direction": [0, 0, 1]}]}, {}, None)
    with pytest.raises(WorkerError, match="no direction"):
        handlers["query_click"]({"workspace": ws, "clicks": [{"origin": [0, 0, 0], "direction": [0, 0, 0]}]}, {}, None)
    with pytest.raises(WorkerError, match="list of 1 to 64"):
        handlers["query_click"]({"workspace": ws, "clicks": []}, {}, None)
    with pytest.raises(WorkerError, match="list of 1 to 64"):
        handlers["query_click"]({"workspace": ws, "clicks": [good] * 65}, {}, None)
    with pytest.raises(WorkerError, match="true or false"):
        handlers["query_click"]({"workspace": ws, "clicks": [{**good, "object": 1}]}, {}, None)
    with pytest.raises(WorkerError, match="'views' must be an integer"):
        handlers["query_click"]({"workspace": ws, "clicks": [good], "views": 99}, {}, None)
    with pytest.raises(WorkerError, match="1-D bool"):
        handlers["query_similar"]({"workspace": ws}, {"selected": np.zeros(3, np.float32)}, None)
    with pytest.raises(WorkerError, match="the mesh has"):
        handlers["query_similar"]({"workspace": ws}, {"selected": np.ones(3, bool)}, None)


def test_a_new_mesh_is_read_again_not_served_from_memory(trained_workspace, tmp_path):
    import shutil

    ws = Workspace(shutil.copytree(trained_workspace, tmp_path / "ws"))
    before = load_geometry(ws)
    assert load_geometry(ws) is before  # unchanged file: kept in memory
    arrays = ws.load_npz(Files.MESH)
    arrays["vertices"] = arrays["vertices"] + 1.0
    ws.save_npz(Files.MESH, **arrays)
    after = load_geometry(ws)
    assert np.allclose(after.vertices, before.vertices + 1.0)


def test_a_request_for_another_mesh_than_the_workspace_s_is_refused(trained_workspace, tmp_path, label_names):
    import shutil

    from external_worker.workspace import Stages

    handlers = make_handlers()
    label = next(iter(label_names.values()))
    result, arrays = handlers["get_mesh"]({"workspace": str(trained_workspace)}, {}, None)
    mesh_id = result["mesh_id"]
    assert len(mesh_id) == 16 and result["n_faces"] == len(arrays["faces"])
    query = {"workspace": str(trained_workspace), "text": label, "teacher": "labels"}
    for sent in ({"mesh_id": mesh_id}, {}):  # its own mesh, or no id (a script): answered
        result, arrays = handlers["query_text"]({**query, **sent}, {}, None)
        assert len(arrays["face_probability"]) == result["n_faces"]

    other = Workspace(shutil.copytree(trained_workspace, tmp_path / "retrained"))
    other.update_stage(Stages.MESH, mesh_id="0123456789abcdef")  # as a new mesh stage leaves it
    selected = np.ones(result["n_faces"], bool)
    for method, params, sent_arrays in (("query_text", query, {}), ("query_similar", {"teacher": "labels"}, {"selected": selected}),
                                        ("bake", {"size": 512}, {})):
        with pytest.raises(WorkerError, match="is not the mesh of the workspace") as error:
            handlers[method]({**params, "workspace": str(other.root), "mesh_id": mesh_id}, sent_arrays, None)
        assert error.value.code == "stale_mesh"
