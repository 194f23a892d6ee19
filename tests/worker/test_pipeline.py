"""The headless pipeline from the command line: stages, per-face queries, resume, clear errors."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import trimesh

from conftest import BREAKAGES, broken_copy, run_worker
from external_worker import pipeline
from external_worker.errors import WorkerError
from external_worker.evaluation import chamfer, face_miou
from external_worker.config import TrainConfig
from external_worker.workspace import Workspace
from external_worker.mesh.stored import load_mesh, mesh_voxel
from external_worker.queries.text import query_text
from external_worker.training import device


class RecordingReporter:
    def __init__(self) -> None:
        self.events: list[tuple[str, int, int]] = []
        self.previews: list[tuple[int, np.ndarray]] = []

    def progress(self, stage, step, total, metrics=None, message=None, preview=None) -> None:
        self.events.append((stage, step, total))
        if preview is not None:
            self.previews.append((step, preview))


def test_every_stage_leaves_its_output(trained_workspace):
    state = json.loads((trained_workspace / "state.json").read_text())
    for stage in ("import", "nerf", "mesh", "features_labels", "face_features_labels"):
        assert state["stages"][stage]["done"], stage
    assert state["stages"]["nerf"]["psnr"] > 20
    mesh = trimesh.load(trained_workspace / "mesh.ply", process=False)
    assert len(mesh.faces) == state["stages"]["mesh"]["n_faces"] > 1000
    assert mesh.visual.vertex_colors.shape == (len(mesh.vertices), 4)
    assert not list(trained_workspace.glob(".*"))  # no temporary files left behind


def test_query_writes_one_value_per_face_and_segments_objects(trained_workspace, label_names, ground_truth, tmp_path):
    mesh = trimesh.load(trained_workspace / "mesh.ply", process=False)
    probabilities = []
    for label, name in label_names.items():
        out = tmp_path / f"{name}.npy"
        result = run_worker("query", "--workspace", str(trained_workspace), "--text", name, "--out", str(out))
        assert f"match '{name}'" in result.stdout
        values = np.load(out)
        assert values.dtype == np.float32 and values.shape == (len(mesh.faces),)
        assert 0 <= values.min() and values.max() <= 1
        probabilities.append(values)
    predicted = np.array(list(label_names))[np.stack(probabilities, 1).argmax(1)]
    miou, per_object = face_miou(np.asarray(mesh.vertices), np.asarray(mesh.faces), predicted, ground_truth["vertices"],
                                 ground_truth["faces"], ground_truth["face_labels"], list(label_names))
    assert miou > 0.8, per_object


def test_unknown_label_names_the_known_ones(trained_workspace, label_names):
    result = run_worker("query", "--workspace", str(trained_workspace), "--text", "giraffe", check=False)
    assert result.returncode == 2
    assert "no label named 'giraffe'" in result.stderr
    assert all(name in result.stderr for name in label_names.values())


def test_second_run_resumes_instead_of_restarting(trained_workspace, tmp_path):
    ws_dir = tmp_path / "ws"
    shutil.copytree(trained_workspace, ws_dir)
    ws = Workspace(ws_dir)
    done_steps = ws.stage("nerf")["step"]
    scene = pipeline.open_scene(ws)
    reporter = RecordingReporter()
    pipeline.run_nerf(scene, TrainConfig(steps=done_steps), reporter)
    assert reporter.events == []  # already done: nothing runs
    pipeline.run_nerf(scene, TrainConfig(steps=done_steps + 3), reporter)
    steps = [step for stage, step, _ in reporter.events if stage == "nerf"]
    assert steps == [done_steps + 1, done_steps + 2, done_steps + 3]
    assert ws.stage("nerf")["step"] == done_steps + 3

    # The last step carries a preview: the render of the first training view beside its photo,
    # top row first. A trained field's half matches the photo's half closely.
    step, preview = reporter.previews[-1]
    height, width = scene.dataset.height, scene.dataset.width
    assert step == done_steps + 3 and preview.dtype == np.uint8 and preview.shape == (height, 2 * width, 3)
    photo = scene.dataset.images[np.flatnonzero(scene.dataset.split == "train")[0]]
    alpha = scene.dataset.alphas[np.flatnonzero(scene.dataset.split == "train")[0]][..., None]
    on_white = (photo * alpha + (1 - alpha)) * 255
    assert np.abs(preview[:, width:].astype(float) - on_white).mean() < 2
    mse = np.mean((preview[:, :width].astype(float) - preview[:, width:]) ** 2) / 255**2
    assert -10 * np.log10(mse) > 20


def test_face_budget_decimates_the_mesh_and_invalidates_face_features(trained_workspace, tmp_path):
    ws_dir = tmp_path / "ws"
    shutil.copytree(trained_workspace, ws_dir)
    ws = Workspace(ws_dir)
    full = load_mesh(ws)
    settings = ws.stage("mesh")["settings"]
    budget = len(full.faces) // 4
    scene = pipeline.open_scene(ws)
    config = pipeline.MeshConfig(resolution=settings["resolution"], max_faces=budget)
    small = pipeline.run_mesh(scene, config, RecordingReporter())
    assert budget * 0.9 <= len(small.faces) <= budget
    assert "face_features_labels" not in ws.load_state()["stages"]  # they described the old faces
    # The decimated surface stays on the full one: mean distance under a marching-cubes voxel.
    distance, _ = chamfer(small.vertices, small.faces, full.vertices, full.faces)
    assert distance < mesh_voxel(ws)


def test_missing_face_features_are_reported_and_rebuilt_by_training(trained_workspace, tmp_path):
    ws_dir = tmp_path / "ws"
    shutil.copytree(trained_workspace, ws_dir)
    ws = Workspace(ws_dir)
    ws.path("face_features_labels.npz").unlink()
    with pytest.raises(WorkerError) as error:
        query_text(ws, "cube")
    assert error.value.code == "stage_missing" and "Train again" in error.value.hint
    scene = pipeline.open_scene(ws)
    teacher = pipeline.make_teacher("labels", scene.dataset, device=device())
    steps = ws.stage("features_labels")["step"]
    pipeline.run_features(scene, teacher, pipeline.FeatureConfig(steps=steps), RecordingReporter())
    assert ws.path("face_features_labels.npz").exists()
    assert query_text(ws, next(iter(teacher.class_names))).shape == (ws.stage("mesh")["n_faces"],)


def test_labels_teacher_without_label_maps_fails_before_training(tiny_scene, tmp_path):
    scene = tmp_path / "scene"
    shutil.copytree(tiny_scene, scene)
    shutil.rmtree(scene / "labels")
    ws = tmp_path / "ws"
    run_worker("import", "--dataset", str(scene), "--workspace", str(ws))
    result = run_worker("train", "--workspace", str(ws), "--steps", "5", check=False)  # NeRF alone needs no labels
    assert result.returncode == 0, result.stderr
    result = run_worker("run", "--dataset", str(scene), "--workspace", str(ws), "--steps", "5", check=False)
    assert result.returncode == 2
    assert "needs label maps" in result.stderr and str(scene / "labels") in result.stderr


@pytest.mark.parametrize("breakage, expected", list(zip(BREAKAGES, ["does not exist", "transforms_train.json", "r_001", "r_002"])))
def test_bad_datasets_get_errors_naming_the_file(tiny_scene, tmp_path, breakage, expected):
    scene = broken_copy(tiny_scene, tmp_path / "scene", breakage)
    ws = tmp_path / "ws"
    result = run_worker("import", "--dataset", str(scene), "--workspace", str(ws), check=False)
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and expected in result.stderr
    assert "hint: " in result.stderr
    assert not ws.exists()  # nothing half-written


def test_import_refuses_what_cannot_be_trained(tmp_path):
    from capture_files import frame, look_at, random_pixels, save_image, single_transforms

    rng = np.random.default_rng(0)
    for i in range(4):
        save_image(tmp_path / "one" / f"{i}.png", random_pixels(rng, 8, 8))  # big enough to train on
    single_transforms(tmp_path / "one", [frame("0.png", np.eye(4))])
    with pytest.raises(WorkerError, match="only 1 training view") as info:
        pipeline.import_dataset(tmp_path / "one", Workspace(tmp_path / "ws"))
    assert info.value.hint and not (tmp_path / "ws").exists()  # nothing written

    # A panorama: four directions from one spot.
    targets = [(1, 0, 0), (0, 1, 0), (-1, 0, 0), (0, -1, 0)]
    single_transforms(tmp_path / "one", [frame(f"{i}.png", look_at(np.zeros(3), np.array(t, float)))
                                         for i, t in enumerate(targets)])
    with pytest.raises(WorkerError, match="all cameras sit at one point"):
        pipeline.import_dataset(tmp_path / "one", Workspace(tmp_path / "ws"))
    assert not (tmp_path / "ws").exists()
