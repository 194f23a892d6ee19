"""The user flow in real Blender against the real worker process, through the add-on's operators:
import -> train -> select by label -> threshold -> separate; cancel; errors from bad input."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import bpy
import numpy as np
import pytest
import trimesh
from PIL import Image

from addon_helpers import pump_until
from blender_dff import jobs
from blender_dff.scene import selection
from conftest import BREAKAGES, broken_copy, run_worker
from external_worker.evaluation import nearest_ground_truth_labels
from external_worker.geometry.raycast import first_hit


def world_triangles(obj: bpy.types.Object) -> trimesh.Trimesh:
    mesh = obj.data
    vertices = np.empty(len(mesh.vertices) * 3, np.float32)
    mesh.vertices.foreach_get("co", vertices)
    mesh.calc_loop_triangles()
    tris = np.empty(len(mesh.loop_triangles) * 3, np.int32)
    mesh.loop_triangles.foreach_get("vertices", tris)
    matrix = np.array(obj.matrix_world)
    vertices = vertices.reshape(-1, 3) @ matrix[:3, :3].T + matrix[:3, 3]
    return trimesh.Trimesh(vertices, tris.reshape(-1, 3), process=False)


def area_on_label(obj, label: int, ground_truth) -> float:
    """Fraction of the object's surface area whose nearest ground-truth face has `label`."""
    tm = world_triangles(obj)
    truth = nearest_ground_truth_labels(tm.triangles_center, ground_truth["vertices"], ground_truth["faces"],
                                        ground_truth["face_labels"])
    return float(tm.area_faces[truth == label].sum() / tm.area_faces.sum())


def _nerf_step() -> int:
    """The step of the scene's training job while it trains the NeRF; -1 otherwise."""
    job = jobs.of(bpy.context.scene)
    return job.step if job is not None and job.stage == "nerf" else -1


def import_and_train(props, scene_dir: Path, workspace: Path, settings: dict) -> None:
    props.dataset_path = str(scene_dir)
    props.workspace_path = str(workspace)
    bpy.ops.dff.import_dataset()
    pump_until(lambda: props.n_images > 0 or props.error)
    assert not props.error, (props.error, props.error_hint)
    for key, value in settings.items():
        setattr(props, key, value)
    bpy.ops.dff.train()
    assert jobs.running(bpy.context.scene)
    pump_until(lambda: not jobs.running(bpy.context.scene))


TRAINED = {"custom_settings": True, "nerf_steps": 250, "feature_steps": 150,
           "mesh_resolution": 96}  # as conftest.TINY_TRAINING


def test_user_flow_selects_and_separates_the_object(addon, tiny_scene, trained_workspace, label_names,
                                                    ground_truth, tmp_path):
    props = addon
    workspace = tmp_path / "ws"
    shutil.copytree(trained_workspace, workspace)  # training resumes: every stage is already done
    import_and_train(props, tiny_scene, workspace, TRAINED)
    assert not props.error, (props.error, props.error_hint)

    cameras = bpy.data.collections["DFF Cameras"].objects
    assert len(cameras) == len(json.loads((tiny_scene / "transforms_train.json").read_text())["frames"]) + \
        len(json.loads((tiny_scene / "transforms_test.json").read_text())["frames"])
    mesh_obj = props.mesh_object
    n_faces = json.loads((workspace / "state.json").read_text())["stages"]["mesh"]["n_faces"]
    assert mesh_obj is not None and len(mesh_obj.data.polygons) == n_faces
    assert "Col" in mesh_obj.data.color_attributes

    label, name = next(iter(label_names.items()))
    props.query_text = name
    bpy.ops.dff.select_text()
    pump_until(lambda: props.active_query == name or props.error)
    assert not props.error, (props.error, props.error_hint)
    group = mesh_obj.vertex_groups.get(name)
    assert group is not None
    weights = np.array([g.weight for v in mesh_obj.data.vertices for g in v.groups if g.group == group.index])
    assert len(weights) > 0 and weights.min() >= 0 and weights.max() <= 1
    assert mesh_obj.mode == 'EDIT'

    # The threshold slider re-selects from the stored probabilities, without the worker.
    def selected() -> int:
        selection.settle()
        bpy.ops.object.mode_set(mode='OBJECT')
        count = sum(p.select for p in mesh_obj.data.polygons)
        bpy.ops.object.mode_set(mode='EDIT')
        return count

    props.threshold = 0.99
    strict = selected()
    props.threshold = 0.01
    loose = selected()
    props.threshold = 0.5
    chosen = selected()
    assert strict <= chosen <= loose and strict < loose

    bpy.ops.dff.separate()
    part = bpy.data.objects.get(name)
    assert part is not None and part is not mesh_obj
    assert len(part.data.polygons) == chosen
    assert len(mesh_obj.data.polygons) == n_faces - chosen
    assert "Col" in part.data.color_attributes
    assert area_on_label(part, label, ground_truth) > 0.8

    # Bake of the whole mesh (the DFF mesh active; the separated part would be baked alone):
    # both the rest and the separated part get the atlas and the texture.
    bpy.context.view_layer.objects.active = mesh_obj
    props.texture_size = '1024'
    bpy.ops.dff.bake_texture()
    pump_until(lambda: not jobs.running(bpy.context.scene))
    assert not props.error, (props.error, props.error_hint)
    image = bpy.data.images["DFF Texture"]
    assert tuple(image.size) == (1024, 1024) and (workspace / "texture_1024.png").exists()
    for obj in (mesh_obj, part):
        uv = np.empty(len(obj.data.loops) * 2, np.float32)
        obj.data.uv_layers["DFF UV"].data.foreach_get("uv", uv)
        assert uv.min() >= 0 and uv.max() <= 1 and np.ptp(uv) > 0.5
        assert obj.data.materials[0].node_tree.nodes.active.image == image


def test_cancel_leaves_a_resumable_workspace(addon, tiny_scene, tmp_path):
    props = addon
    workspace = tmp_path / "ws"
    props.dataset_path = str(tiny_scene)
    props.workspace_path = str(workspace)
    bpy.ops.dff.import_dataset()
    pump_until(lambda: props.n_images > 0 or props.error)
    props.custom_settings, props.nerf_steps = True, 100000
    bpy.ops.dff.train()
    pump_until(lambda: _nerf_step() >= 3)
    bpy.ops.dff.cancel()
    pump_until(lambda: not jobs.running(bpy.context.scene), seconds=60)
    assert props.error_code == "cancelled"
    state = json.loads((workspace / "state.json").read_text())
    stopped_at = state["stages"]["nerf"]["step"]
    assert stopped_at >= 3 and not state["stages"]["nerf"].get("done")
    assert (workspace / "nerf.pt").exists()

    # Train again: the first progress event continues from the checkpoint.
    seen = []
    props.nerf_steps = stopped_at + 2
    props.feature_steps = 1
    props.mesh_resolution = 16
    bpy.ops.dff.train()
    pump_until(lambda: seen.append(_nerf_step()) or not jobs.running(bpy.context.scene))
    assert [s for s in seen if s > 0] and min(s for s in seen if s > 0) > stopped_at

    # The last NeRF step sent a preview: the render of the first training view beside its photo.
    first = json.loads((tiny_scene / "transforms_train.json").read_text())["frames"][0]["file_path"]
    photo = np.asarray(Image.open(next(tiny_scene.glob(first.removeprefix("./") + "*"))).convert("RGBA")) / 255.0
    height, width = photo.shape[:2]
    preview = bpy.data.images.get("DFF Training Preview")
    assert preview is not None and tuple(preview.size) == (2 * width, height)
    pixels = np.array(preview.pixels[:]).reshape(height, 2 * width, 4)[::-1]
    on_white = photo[..., :3] * photo[..., 3:] + 1 - photo[..., 3:]
    assert np.abs(pixels[:, width:, :3] - on_white).mean() < 0.01
    assert preview.preview is not None and tuple(preview.preview.image_size) == (2 * width, height)


@pytest.mark.parametrize("breakage, expected", list(zip(BREAKAGES, ["", "transforms_train.json", "r_001", "r_002"])))
def test_import_errors_name_the_file(addon, tiny_scene, tmp_path, breakage, expected):
    props = addon
    scene = broken_copy(tiny_scene, tmp_path / "scene", breakage)
    props.dataset_path = str(scene)
    props.workspace_path = str(tmp_path / "ws")
    if breakage == "missing_folder":  # checked by the add-on before asking the worker
        with pytest.raises(RuntimeError, match=f"dataset folder not found: '{scene}'"):
            bpy.ops.dff.import_dataset()
        return
    bpy.ops.dff.import_dataset()
    pump_until(lambda: props.error or props.n_images > 0, seconds=120)
    assert props.error_code == "bad_dataset" and expected in props.error, props.error
    assert props.error_hint
    assert "DFF Cameras" not in bpy.data.collections


def test_import_a_colmap_project_at_half_scale_with_its_photos_and_points(addon, tmp_path):
    from blender_dff.scene.cameras import COLLECTION_NAME, POINTS_NAME
    from capture_files import colmap_model, random_pixels, ring_poses

    props = addon
    rng = np.random.default_rng(3)
    poses = ring_poses(12)
    colmap_model(tmp_path / "capture", poses, "SIMPLE_RADIAL 48 32 40 24 16 0.05",
                 [random_pixels(rng, 32, 48) for _ in poses], rng.uniform(-1, 1, (30, 3)))
    props.dataset_path = str(tmp_path / "capture")
    props.workspace_path = str(tmp_path / "ws")
    props.image_scale, props.test_every, props.bounds = '2', 4, 'box'
    bpy.ops.dff.import_dataset()
    pump_until(lambda: props.n_images > 0 or props.error)
    assert not props.error, (props.error, props.error_hint)
    collection = bpy.data.collections[COLLECTION_NAME]
    cameras = [obj for obj in collection.objects if obj.type == 'CAMERA']
    assert props.n_images == len(cameras) == 12
    render = bpy.context.scene.render
    assert render.resolution_x <= 24 and render.resolution_y <= 16  # half size, cropped by undistortion
    assert all(obj.data.background_images[0].image.filepath.endswith(obj.name) for obj in cameras)
    assert len(collection.objects[POINTS_NAME].data.vertices) == 30
    state = json.loads((tmp_path / "ws" / "state.json").read_text())
    assert state["dataset"] == {"path": str((tmp_path / "capture").resolve()), "downscale": 2,
                                "test_every": 4, "bounds": "box"}
    # Importing the same capture with other options into that workspace is refused.
    props.image_scale = '1'
    bpy.ops.dff.import_dataset()
    pump_until(lambda: props.n_images > 0 or props.error)
    assert props.error_code == "workspace_in_use" and "downscale 2" in props.error


@pytest.mark.slow
def test_a_capture_is_a_job_that_cancel_stops(addon, tmp_path):
    from blender_dff.capture import job as capture_job

    props = addon
    bpy.ops.mesh.primitive_cube_add()
    props.capture_path = str(tmp_path / "capture")
    props.capture_views, props.capture_resolution, props.capture_samples = 64, 32, 1
    assert bpy.ops.dff.capture_scene() == {'FINISHED'}
    scene = bpy.context.scene
    assert jobs.of(scene).kind == "Capture" and jobs.of(scene).total == 72
    assert not bpy.ops.dff.train.poll() and not bpy.ops.dff.capture_scene.poll()  # one job at a time
    assert bpy.ops.dff.cancel() == {'FINISHED'}
    deadline = time.monotonic() + 60
    while capture_job.pump():
        assert time.monotonic() < deadline, "the cancelled capture did not stop"
        time.sleep(0.05)
    assert not jobs.running(scene) and "cancelled" in props.error and props.n_images == 0
    assert not list((tmp_path / "capture").glob(".capture*"))  # its saved copy and plan are gone


def test_capture_the_open_scene_then_train_gives_a_mesh_on_its_objects(addon, tmp_path):
    """The round trip: a Blender scene captured by the add-on (rendered in a background process),
    imported, trained briefly; the mesh lies on the scene's objects."""
    from blender_dff.capture import job as capture_job
    from blender_dff.worker import session as worker_session
    from external_worker.evaluation import chamfer

    props = addon
    bpy.ops.mesh.primitive_cube_add(size=0.8, location=(-0.5, 0.0, 0.4))
    bpy.ops.mesh.primitive_uv_sphere_add(radius=0.4, location=(0.6, 0.2, 0.4))
    bpy.ops.mesh.primitive_plane_add(size=0.5, location=(0.0, 3.0, 0.0))  # left out: not selected
    bpy.data.objects["Plane"].select_set(False)
    for name in ("Cube", "Sphere"):
        bpy.data.objects[name].select_set(True)
    sun = bpy.data.objects.new("Sun", bpy.data.lights.new("Sun", type='SUN'))
    bpy.context.scene.collection.objects.link(sun)
    props.capture_path = str(tmp_path / "capture")
    props.capture_views, props.capture_resolution, props.capture_samples = 24, 48, 4
    bpy.ops.dff.capture_scene()
    assert "Capturing 27 views" in props.message  # 24 around, 3 between them held out

    deadline = time.monotonic() + 300
    while not (props.n_images or props.error):
        assert time.monotonic() < deadline, "the capture did not finish"
        capture_job.pump()
        worker_session.pump()
        time.sleep(0.05)
    assert not props.error, (props.error, props.error_hint)
    out = tmp_path / "capture"
    frames = json.loads((out / "transforms_train.json").read_text())["frames"]
    assert len(frames) == 24 and props.n_images == 27
    assert Image.open(out / "train" / "r_000.png").mode == "RGBA"
    umask = os.umask(0o022)
    os.umask(umask)
    for written in (out / "train" / "r_000.png", out / "transforms_train.json"):
        assert written.stat().st_mode & 0o777 == 0o666 & ~umask, written  # the user's umask, not 0600
    assert not list(out.glob(".capture*"))  # the saved copy and the plan are gone
    assert props.dataset_path == str(out)

    ws = props.workspace_path
    run_worker("train", "--workspace", ws, "--steps", "250")
    run_worker("mesh", "--workspace", ws, "--resolution", "96", "--out", str(tmp_path / "mesh.ply"))
    mesh = trimesh.load(tmp_path / "mesh.ply", process=False)
    truth = trimesh.util.concatenate([world_triangles(bpy.data.objects[name]) for name in ("Cube", "Sphere")])
    _, relative = chamfer(mesh.vertices, mesh.faces, truth.vertices, truth.faces, samples=50_000)
    print(f"round trip: Chamfer distance {relative:.2%} of the scene's extent")
    # 1.6% measured (48 px views, 250 steps, a 96^3 grid whose cells are 1.5% of the extent);
    # a mesh in another frame, or of the plane left out, is off by more than 10%.
    assert relative < 0.03


def test_unknown_label_and_missing_label_maps_are_reported(addon, tiny_scene, trained_workspace, tmp_path):
    props = addon
    workspace = tmp_path / "ws"
    shutil.copytree(trained_workspace, workspace)
    import_and_train(props, tiny_scene, workspace, TRAINED)
    props.query_text = "giraffe"
    bpy.ops.dff.select_text()
    pump_until(lambda: props.error or props.active_query)
    assert props.error_code == "unknown_label" and "giraffe" in props.error

    unlabelled = tmp_path / "unlabelled"
    shutil.copytree(tiny_scene, unlabelled)
    shutil.rmtree(unlabelled / "labels")
    props.dataset_path = str(unlabelled)
    props.workspace_path = str(tmp_path / "ws2")
    bpy.ops.dff.import_dataset()
    pump_until(lambda: props.n_images > 0 or props.error)
    bpy.ops.dff.train()
    pump_until(lambda: not jobs.running(bpy.context.scene), seconds=120)
    assert props.error_code == "bad_dataset" and "label maps" in props.error
    assert not (tmp_path / "ws2" / "nerf.pt").exists()  # refused before any training


def test_click_then_select_similar(addon, tiny_scene, trained_workspace, label_names, ground_truth, tmp_path):
    props = addon
    workspace = tmp_path / "ws"
    shutil.copytree(trained_workspace, workspace)
    import_and_train(props, tiny_scene, workspace, TRAINED)
    camera = bpy.data.collections["DFF Cameras"].objects[0]
    eye = np.array(camera.matrix_world.translation)
    mesh_obj = props.mesh_object
    # Aim at the centre of the biggest object that no other object hides from this camera.
    gt_mesh = trimesh.Trimesh(ground_truth["vertices"], ground_truth["faces"], process=False)
    area = {label: gt_mesh.area_faces[ground_truth["face_labels"] == label].sum() for label in label_names}
    centres = {label: ground_truth["vertices"][np.unique(ground_truth["faces"][ground_truth["face_labels"] == label])].mean(0)
               for label in label_names}
    hits = {label: first_hit(ground_truth["vertices"], ground_truth["faces"], eye, centres[label] - eye)[0]
            for label in label_names}
    unhidden = [label for label, face in hits.items() if face >= 0 and ground_truth["face_labels"][face] == label]
    label = max(unhidden, key=area.get)
    bpy.ops.dff.click_select(clicks=[{"name": "", "origin": eye, "direction": centres[label] - eye, "on_object": True}])
    pump_until(lambda: props.active_query or props.error, seconds=120)
    assert props.active_query == label_names[label], (props.error, props.message)
    bpy.ops.object.mode_set(mode='OBJECT')
    selected = np.array([p.select for p in mesh_obj.data.polygons])
    tm = world_triangles(mesh_obj)
    truth = nearest_ground_truth_labels(tm.triangles_center, ground_truth["vertices"], ground_truth["faces"],
                                        ground_truth["face_labels"])
    on_object = tm.area_faces[selected & (truth == label)].sum()
    assert on_object > 0.9 * tm.area_faces[selected].sum()

    bpy.ops.dff.select_similar()
    pump_until(lambda: props.active_query == "similar" or props.error, seconds=120)
    assert props.active_query == "similar", (props.error, props.message)
    assert mesh_obj.vertex_groups.get("similar") is not None


def test_text_query_with_the_clip_teacher(addon, tiny_scene, trained_workspace, label_names, tmp_path):
    """Train the clip teacher (tiny random open_clip) beside the labels one through the panel's
    settings, then type queries: relevancy, heat map, both comparisons, and the worker's
    refusal of a query longer than CLIP's context."""
    from blender_dff.scene.heat_map import HEAT_ATTR
    from blender_dff.scene.selection import PROBABILITY_ATTR

    props = addon
    workspace = tmp_path / "ws"
    shutil.copytree(trained_workspace, workspace)
    import_and_train(props, tiny_scene, workspace, {**TRAINED, "teacher": 'clip', "clip_model": "tiny",
                                                    "clip_pretrained": ""})
    assert not props.error, (props.error, props.error_hint)
    stages = json.loads((workspace / "state.json").read_text())["stages"]
    assert stages["face_features_clip"]["done"] and stages["face_features_labels"]["done"]  # one field each
    mesh_obj = props.mesh_object
    name = next(iter(label_names.values()))

    def query(text: str) -> np.ndarray:
        props.active_query = ""
        bpy.ops.dff.select_text(text=text)
        pump_until(lambda: props.active_query or props.error, seconds=120)
        assert props.active_query == text.strip(), (props.error, props.error_hint)
        bpy.ops.object.mode_set(mode='OBJECT')
        values = np.empty(len(mesh_obj.data.polygons), np.float32)
        mesh_obj.data.attributes[PROBABILITY_ATTR].data.foreach_get("value", values)
        return values

    against_negatives = query(name)
    assert HEAT_ATTR in mesh_obj.data.color_attributes
    props.text_mode = 'LABEL_SET'
    props.label_set = ", ".join(label_names.values())
    in_label_set = query(name)
    assert not np.allclose(against_negatives, in_label_set)
    props.teacher = 'labels'  # switch fields: the labels one answers by its own label names
    by_label = query(name)
    assert not np.allclose(by_label, in_label_set)

    props.teacher = 'clip'
    props.active_query = ""
    bpy.ops.dff.select_text(text="the chair " * 40)
    pump_until(lambda: props.error or props.active_query, seconds=120)
    assert props.error_code == "query_too_long", (props.error, props.message)
