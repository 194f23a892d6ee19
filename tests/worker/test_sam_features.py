"""Distilling SAM's encoder features into the feature field (SAN), with the tiny random SAM,
camera augmentation and its FIFO cache included."""

from __future__ import annotations

import shutil
from dataclasses import replace

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from external_worker import pipeline
from external_worker.errors import WorkerError
from external_worker.features.augment import (AugmentedViewCache, augmented_view, interpolate_camera,
                                              random_camera_pair, stored_background, use_augmentation)
from external_worker.features.field import quadrature_samples
from external_worker.features.train import train_features
from external_worker.config import FeatureConfig
from external_worker.nerf.train import load_field
from external_worker.workspace import Workspace
from external_worker.mesh.stored import load_mesh
from external_worker.queries.prompt import query_click
from external_worker.queries.similar import query_similar
from external_worker.queries.text import query_text
from external_worker.training import device
from external_worker.workspace import Files

# Few new views (each costs seconds on a CPU), still more than the cache holds.
AUGMENTED = replace(FeatureConfig(), steps=60, augment="on", cache_size=3, reuse_probability=0.9)


class LossRecorder:
    def __init__(self) -> None:
        self.losses: list[float] = []
        self.metrics: list[dict] = []

    def progress(self, stage, step, total, metrics=None, message=None, preview=None) -> None:
        if metrics and "loss" in metrics:
            self.losses.append(metrics["loss"])
            self.metrics.append(metrics)


@pytest.fixture(scope="module")
def sam_workspace(trained_workspace, tmp_path_factory):
    ws = Workspace(tmp_path_factory.mktemp("sam") / "ws")
    shutil.copytree(trained_workspace, ws.root)
    scene = pipeline.open_scene(ws)
    teacher = pipeline.make_teacher("sam", scene.dataset, "tiny", device=device())
    recorder = LossRecorder()
    pipeline.run_features(scene, teacher, AUGMENTED, recorder)
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
    with np.load(ws.path(Files.face_features("sam"))) as stored:
        code, weight = stored["code"], stored["weight"]
    assert code.dtype == np.float16 and code.shape == (ws.stage("mesh")["n_faces"], 64) and weight.shape == (256, 64)
    assert np.isfinite(code.astype(np.float32)).all()


def test_select_similar_works_with_sam_features_and_text_is_refused(sam_workspace):
    ws, *_ = sam_workspace
    n = ws.stage("mesh")["n_faces"]
    selected = np.zeros(n, bool)
    selected[:50] = True
    similarity = query_similar(ws, selected, teacher="sam")
    assert similarity.shape == (n,) and 0 <= similarity.min() and similarity.max() <= 1
    assert similarity[:50].mean() > similarity.mean()
    with pytest.raises(WorkerError) as error:
        query_text(ws, "cube", teacher="sam")
    assert error.value.code == "unsupported_query"


def test_sam_teacher_settings_fail_before_training(sam_workspace, tmp_path):
    _, scene, _, _ = sam_workspace
    with pytest.raises(WorkerError, match="needs a SAM checkpoint"):
        pipeline.make_teacher("sam", scene.dataset, "", device=device())
    with pytest.raises(WorkerError) as error:
        pipeline.make_teacher("sam", scene.dataset, str(tmp_path / "missing.pth"), device=device())
    assert error.value.code == "bad_checkpoint" and "missing.pth" in error.value.message


def test_click_runs_sams_decoder_on_rendered_features(sam_workspace, tiny_scene):
    import json

    from external_worker.queries.click import ClickPrompt

    ws, *_ = sam_workspace
    eye = np.array(json.loads((tiny_scene / "transforms_train.json").read_text())["frames"][0]["transform_matrix"])[:3, 3]
    mesh = load_mesh(ws)
    target = mesh.vertices.mean(0)
    result = query_click(ws, ClickPrompt.single(eye, target - eye), teacher="sam", views=0)
    assert result.query == "click" and result.hit_face >= 0 and result.views == 1
    probability = result.probability
    assert probability.shape == (len(mesh.faces),) and set(np.unique(probability)) <= {0.0, 1.0}
    # From the clicked view alone, only faces seen from the clicking eye can be in the mask.
    tri = mesh.vertices[mesh.faces]
    normals = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    facing_away = np.einsum("ij,ij->i", normals, eye - tri.mean(1)) < 0
    assert probability[facing_away].max(initial=0) == 0
    # Carried to other views, a probability is a share of votes.
    carried = query_click(ws, ClickPrompt.single(eye, target - eye), teacher="sam", views=4)
    assert 1 <= carried.views <= 5 and 0 <= carried.probability.min() and carried.probability.max() <= 1
    with pytest.raises(WorkerError) as error:
        query_click(ws, ClickPrompt.single(eye, eye - target), teacher="sam")
    assert error.value.code == "no_hit"


def camera(rotation: Rotation, position: list[float]) -> np.ndarray:
    c2w = np.eye(4, dtype=np.float32)
    c2w[:3, :3] = rotation.as_matrix()
    c2w[:3, 3] = position
    return c2w


def test_interpolated_cameras_run_from_a_to_b_with_rotations_slerped():
    a = camera(Rotation.identity(), [1, 0, 0])
    b = camera(Rotation.from_euler("zx", [90, 30], degrees=True), [0, 2, 0])
    assert np.allclose(interpolate_camera(a, b, 0.0), a, atol=1e-6)
    assert np.allclose(interpolate_camera(a, b, 1.0), b, atol=1e-6)
    for t in (0.25, 0.5, 0.8):
        rotation = interpolate_camera(a, b, t)[:3, :3]
        assert np.allclose(rotation.T @ rotation, np.eye(3), atol=1e-6) and np.isclose(np.linalg.det(rotation), 1)
    assert np.allclose(interpolate_camera(a, b, 0.5)[:3, 3], [0.5, 1, 0])
    # Constant angular speed: a quarter of the way turns a quarter of the angle.
    quarter = interpolate_camera(camera(Rotation.identity(), [0, 0, 0]),
                                 camera(Rotation.from_euler("z", 90, degrees=True), [0, 0, 0]), 0.25)
    assert np.allclose(quarter[:3, :3], Rotation.from_euler("z", 22.5, degrees=True).as_matrix(), atol=1e-6)


def test_camera_pairs_are_near_neighbours():
    centres = np.random.default_rng(1).normal(size=(12, 3))
    rng = np.random.default_rng(0)
    partners: dict[int, set[int]] = {}
    for _ in range(1000):
        first, second = random_camera_pair(centres, rng, near=3)
        partners.setdefault(first, set()).add(second)
    for first, seen in partners.items():
        distance = np.linalg.norm(centres - centres[first], axis=1)
        assert seen == set(np.argsort(distance)[1:4].tolist())  # each of the 3 nearest, never itself
    assert len(partners) == len(centres)
    assert random_camera_pair(centres[:1], rng) == (0, 0)


def test_the_cache_keeps_the_newest_views_up_to_its_size():
    cache = AugmentedViewCache(capacity=3)
    for view in range(5):
        cache.push(torch.full((4, 2, 3), view), torch.full((4, 2), view), torch.full((4, 8), view))
        assert len(cache) == min(view + 1, 3) and cache.n_rays == 4 * len(cache)
    points, weights, value = cache.rays(torch.arange(cache.n_rays))
    assert sorted(set(value[:, 0].tolist())) == [2, 3, 4]  # views 0 and 1 were evicted, oldest first
    assert points.shape == (12, 2, 3) and weights.shape == (12, 2) and value.shape == (12, 8)
    assert torch.equal(points[:, 0, 0], value[:, 0]) and torch.equal(weights[:, 0], value[:, 0])


def test_augmented_training_generates_views_within_the_cache_size(sam_workspace):
    ws, _, _, recorder = sam_workspace
    generated = ws.stage("features_sam")["augmented_views"]
    # The first step always makes a view, then about one step in ten.
    assert AUGMENTED.cache_size < generated < AUGMENTED.steps / 2
    assert recorder.metrics[-1]["augmented_views"] == generated
    assert max(m["cached_views"] for m in recorder.metrics) == AUGMENTED.cache_size


def test_an_augmented_view_at_a_training_camera_matches_that_photo(sam_workspace):
    """Interpolating a camera with itself gives that camera: its render, encoded, must be
    supervised like the photo (same rays, features close), which needs the photo's background."""
    ws, scene, teacher, _ = sam_workspace
    dataset, nerf = scene.dataset, load_field(ws)
    assert stored_background(dataset) < 0.05  # the tiny scene's transparent pixels are stored black
    v = int(np.flatnonzero(dataset.split == "train")[3])
    poses = scene.frame.normalise_poses(dataset.c2w)
    points, weights, value = augmented_view(nerf, poses[[v]], dataset.intrinsics[[v]], (dataset.height, dataset.width),
                                            stored_background(dataset), teacher, 4, np.random.default_rng(0))
    row, col, photo = teacher.image_targets(dataset.images[v])
    assert value.shape == photo.shape == (64 * 64, 256)
    assert ((value - photo) ** 2).mean() < 0.2 * photo.var(0).mean()
    camera, lens, view, row, col = (torch.as_tensor(a).to(weights.device) for a in
                                    (poses[[v]], dataset.intrinsics[[v]], np.zeros(len(row), int), row, col))
    expected_points, expected_weights = quadrature_samples(*nerf, camera, lens, view, row, col, 4)
    # The slerp of a camera with itself differs from it by rounding, and importance resampling
    # can move a ray's samples when a stretch sits at the contribution threshold: a few rays
    # (0.5% measured) differ slightly, the others are the same.
    assert torch.allclose(weights, expected_weights, atol=1e-4)
    same = ((points - expected_points).abs().amax(-1).amax(-1) < 1e-5).float().mean()
    assert same > 0.98


def test_no_views_are_generated_with_augmentation_off(trained_workspace, tmp_path):
    ws = Workspace(tmp_path / "ws")
    shutil.copytree(trained_workspace, ws.root)
    scene = pipeline.open_scene(ws)
    # Two training views keep the precomputation short.
    split = np.where(np.arange(len(scene.dataset)) < 2, "train", "test")
    recorder = LossRecorder()
    result = train_features(replace(scene.dataset, split=split), scene.frame, ws, load_field(ws),
                            pipeline.make_teacher("sam", scene.dataset, "tiny", device=device()),
                            replace(AUGMENTED, steps=3, augment="off", rays_per_batch=256), recorder)
    assert result["augmented_views"] == 0 and ws.stage("features_sam")["augmented_views"] == 0
    assert all(set(m) == {"loss"} for m in recorder.metrics)


def test_augmentation_needs_a_teacher_that_encodes_images(sam_workspace):
    ws, scene, sam, _ = sam_workspace
    labels = pipeline.make_teacher("labels", scene.dataset, device=device())
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert use_augmentation(FeatureConfig(augment="auto"), sam, cuda)
    assert not use_augmentation(FeatureConfig(augment="auto"), sam, cpu)
    assert not use_augmentation(FeatureConfig(augment="auto"), labels, cuda)
    assert not use_augmentation(FeatureConfig(augment="off"), sam, cuda)
    with pytest.raises(WorkerError, match="'labels' teacher") as error:
        train_features(scene.dataset, scene.frame, ws, load_field(ws), labels, AUGMENTED, LossRecorder())
    assert error.value.code == "bad_request" and "off or auto" in error.value.hint
    with pytest.raises(WorkerError, match="'sometimes'"):
        use_augmentation(FeatureConfig(augment="sometimes"), sam, cpu)
