"""Distilling SAM's encoder features into the feature field (SAN), with the tiny random SAM."""

from __future__ import annotations

import shutil
from dataclasses import replace

import numpy as np
import pytest

from external_worker import pipeline
from external_worker.errors import WorkerError
from external_worker.features import FeatureConfig, face_features_name
from external_worker.workspace import Workspace


class LossRecorder:
    def __init__(self) -> None:
        self.losses: list[float] = []

    def progress(self, stage, step, total, metrics=None, message=None) -> None:
        if metrics and "loss" in metrics:
            self.losses.append(metrics["loss"])


@pytest.fixture(scope="module")
def sam_workspace(trained_workspace, tmp_path_factory):
    ws = Workspace(tmp_path_factory.mktemp("sam") / "ws")
    shutil.copytree(trained_workspace, ws.root)
    scene = pipeline.open_scene(ws)
    teacher = pipeline.make_teacher("sam", scene.dataset, "tiny")
    recorder = LossRecorder()
    pipeline.run_features(scene, teacher, replace(FeatureConfig(), steps=60), recorder)
    return ws, scene, teacher, recorder


def test_sam_targets_are_one_ray_per_feature_cell_over_the_image(sam_workspace):
    _, scene, teacher, _ = sam_workspace
    views = np.flatnonzero(scene.dataset.split == "train")[:2]
    targets = teacher.targets(scene.dataset, views)
    assert targets.value.shape == (2 * 64 * 64, 256)  # square images fill the whole 64 x 64 grid
    assert targets.row.min() < 0.5 and targets.row.max() > scene.dataset.height - 1.5
    cell = scene.dataset.height / 64
    assert np.allclose(np.diff(np.unique(targets.col)), cell)


def test_feature_imitation_learns_and_writes_256_wide_face_features(sam_workspace):
    ws, _, _, recorder = sam_workspace
    assert len(recorder.losses) >= 50
    assert np.mean(recorder.losses[-10:]) < 0.8 * np.mean(recorder.losses[:5])
    features = np.load(ws.path(face_features_name("sam")))
    assert features.dtype == np.float16 and features.shape == (ws.stage("mesh")["n_faces"], 256)
    assert np.isfinite(features.astype(np.float32)).all()


def test_select_similar_works_with_sam_features_and_text_is_refused(sam_workspace):
    ws, *_ = sam_workspace
    n = ws.stage("mesh")["n_faces"]
    selected = np.zeros(n, bool)
    selected[:50] = True
    similarity = pipeline.query_similar(ws, selected, teacher="sam")
    assert similarity.shape == (n,) and 0 <= similarity.min() and similarity.max() <= 1
    assert similarity[:50].mean() > similarity.mean()
    with pytest.raises(WorkerError) as error:
        pipeline.query_text(ws, "cube", teacher="sam")
    assert error.value.code == "unsupported_query"


def test_sam_teacher_settings_fail_before_training(sam_workspace, tmp_path):
    _, scene, _, _ = sam_workspace
    with pytest.raises(WorkerError, match="needs a SAM checkpoint"):
        pipeline.make_teacher("sam", scene.dataset, "")
    with pytest.raises(WorkerError) as error:
        pipeline.make_teacher("sam", scene.dataset, str(tmp_path / "missing.pth"))
    assert error.value.code == "bad_checkpoint" and "missing.pth" in error.value.message


def test_click_runs_sams_decoder_on_rendered_features(sam_workspace, tiny_scene):
    import json

    ws, *_ = sam_workspace
    eye = np.array(json.loads((tiny_scene / "transforms_train.json").read_text())["frames"][0]["transform_matrix"])[:3, 3]
    mesh = pipeline.load_mesh(ws)
    target = mesh.vertices.mean(0)
    name, face, probability = pipeline.query_click(ws, eye, target - eye, teacher="sam")
    assert name == "click" and face >= 0
    assert probability.shape == (len(mesh.faces),) and set(np.unique(probability)) <= {0.0, 1.0}
    # Only faces seen from the clicking eye can be in the mask.
    tri = mesh.vertices[mesh.faces]
    normals = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    facing_away = np.einsum("ij,ij->i", normals, eye - tri.mean(1)) < 0
    assert probability[facing_away].max(initial=0) == 0
    with pytest.raises(WorkerError) as error:
        pipeline.query_click(ws, eye, eye - target, teacher="sam")
    assert error.value.code == "no_hit"
