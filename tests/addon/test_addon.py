"""The add-on in real Blender (the bpy module, headless), driven without the real worker:
reply handlers get hand-made replies, operators talk to a scripted client."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import bpy
import bmesh  # noqa: E402 -- importable only once bpy is
import numpy as np
import pytest
from bpy_extras.object_utils import world_to_camera_view
from mathutils import Euler, Matrix, Vector
from PIL import Image

import blender_dff
from blender_dff import jobs
from addon_helpers import (RecordingLayout, cube_arrays, edit_mode_selection, mesh_reply, pump_until, query_reply,
                           read, slide)
from blender_dff.worker.client import Reply, WorkerClient

REPO = Path(__file__).resolve().parents[2]


# --- helpers --------------------------------------------------------------------------


def make_mesh(addon) -> tuple[bpy.types.Object, tuple]:
    """The scene as after training: "DFF Mesh" from a cube, a workspace path."""
    from blender_dff.scene.mesh_import import apply_mesh

    arrays = cube_arrays()
    apply_mesh(bpy.context, mesh_reply(*arrays))
    bpy.context.scene.dff.workspace_path = "/tmp/dff_workspace"  # never touched here
    return bpy.context.scene.dff.mesh_object, arrays


# --- package --------------------------------------------------------------------------


def test_package_imports_without_bpy():
    # The worker imports blender_dff.wire in a Python that has no bpy.
    code = "import sys, blender_dff, blender_dff.wire.framing, blender_dff.wire.api; assert 'bpy' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)


def test_register_unregister_twice():
    bpy.ops.wm.read_homefile(use_empty=True)
    for _ in range(2):
        blender_dff.register()
        assert "dff" in bpy.types.Scene.bl_rna.properties
        assert {"import_dataset", "train", "cancel", "select_text", "separate"} <= set(
            dir(bpy.ops.dff))
        assert bpy.context.scene.dff.threshold == pytest.approx(0.5)
        blender_dff.unregister()
        assert "dff" not in bpy.types.Scene.bl_rna.properties
        assert not hasattr(bpy.types, "DFF_OT_train")
        assert not hasattr(bpy.types, "DFF_PT_train")


def test_operators_are_in_blender_s_menus_for_f3_search(addon):
    from blender_dff.ui import menus

    drawn = {}
    for menu, draw in menus._ENTRIES:
        assert draw in getattr(bpy.types, menu)._dyn_ui_initialize(), menu
        layout = RecordingLayout()
        draw(SimpleNamespace(layout=layout), bpy.context)
        drawn[menu] = layout.operators()
    assert drawn["TOPBAR_MT_file_import"] == ["dff.import_dataset"]
    assert {"dff.select_text", "dff.click_select"} <= set(drawn["VIEW3D_MT_select_edit_mesh"])
    assert drawn["VIEW3D_MT_edit_mesh"] == ["dff.separate", "dff.separate_all"]
    assert drawn["VIEW3D_MT_object"] == ["dff.separate", "dff.separate_all", "dff.link_mesh"]
    for name in dir(bpy.ops.dff):
        description = getattr(bpy.ops.dff, name).get_rna_type().description
        assert description and "\n" not in description, name  # a tooltip of one line


def test_panels_move_to_the_sidebar_tab_the_preferences_name(addon):
    from blender_dff.ui import panels

    panels.set_tab("Scan")
    try:
        for cls in panels._CLASSES:
            registered = getattr(bpy.types, cls.__name__)
            assert registered.bl_category == "Scan" and registered.is_registered
    finally:
        panels.set_tab("")
    assert bpy.types.DFF_PT_train.bl_category == "DFF"


def test_a_remote_worker_takes_its_token_from_the_environment(addon, monkeypatch):
    from blender_dff.preferences import worker_settings
    from blender_dff.wire import api

    prefs = SimpleNamespace(python="", host="gpu.example", port=5000, token="")
    context = SimpleNamespace(preferences=SimpleNamespace(addons={blender_dff.ADDON_ID: SimpleNamespace(preferences=prefs)}))
    monkeypatch.setenv(api.TOKEN_ENV, "from-the-environment")
    assert worker_settings(context).token == "from-the-environment"
    prefs.token = "typed"
    assert worker_settings(context).token == "typed"


def test_worker_pythonpath_of_a_checkout(addon):
    from blender_dff.worker.session import worker_pythonpath

    # In the repository, external_worker and blender_dff both live in the root.
    assert worker_pythonpath() == str(REPO)


# --- import ---------------------------------------------------------------------------


def camera_reply(n: int, width: int = 640, height: int = 480) -> tuple[Reply, np.ndarray]:
    rng = np.random.default_rng(0)
    c2w = np.zeros((n, 4, 4), dtype=np.float32)
    for i in range(n):
        rotation = Euler(rng.uniform(-math.pi, math.pi, 3)).to_matrix().to_4x4()
        rotation.translation = Vector(rng.uniform(-3, 3, 3))
        c2w[i] = np.array(rotation)
    intrinsics = np.array([[500.0 + 10 * i, 500.0 + 10 * i, 300.0 + i, 250.0 - i]
                           for i in range(n)], dtype=np.float32)
    reply = Reply(ok=True, result={
        "n_images": n, "width": width, "height": height,
        "names": [f"r_{i}" for i in range(n)], "split": ["train"] * n,
        "labels": {"1": "mug", "2": "table"},
    }, arrays={"c2w": c2w, "intrinsics": intrinsics})
    return reply, intrinsics


def test_apply_import_poses_cameras(addon):
    from blender_dff.scene.cameras import COLLECTION_NAME, apply_import

    reply, intrinsics = camera_reply(3)
    message = apply_import(bpy.context, reply)
    scene = bpy.context.scene
    collection = bpy.data.collections[COLLECTION_NAME]
    assert scene.collection.children.get(COLLECTION_NAME) == collection
    cameras = sorted(collection.objects, key=lambda obj: obj.name)
    assert [obj.name for obj in cameras] == ["r_0", "r_1", "r_2"]
    assert (scene.render.resolution_x, scene.render.resolution_y) == (640, 480)
    assert [label.name for label in scene.dff.labels] == ["mug", "table"]
    assert scene.camera is not None and "3 cameras" in message

    point = Vector((0.3, -0.2, 0.1))
    for obj, c2w, (fx, fy, cx, cy) in zip(cameras, reply.arrays["c2w"], intrinsics):
        assert np.allclose(np.array(obj.matrix_world), c2w, atol=1e-5)
        assert obj.data.sensor_fit == 'HORIZONTAL'
        assert obj.data.lens == pytest.approx(fx * 36.0 / 640)
        # Blender's projection of a point in front of the camera equals the pinhole model.
        in_front = Vector(c2w[:3, 3]) - 2.0 * Vector(c2w[:3, 2]) + point
        x, y, z = (Matrix(c2w.tolist()).inverted() @ in_front)
        u, v = cx + fx * x / -z, cy - fy * y / -z
        projected = world_to_camera_view(bpy.context.scene, obj, in_front)
        assert projected.x == pytest.approx(u / 640, abs=1e-5)
        assert projected.y == pytest.approx(1.0 - v / 480, abs=1e-5)

    # A second import replaces the cameras rather than adding to them; the render size is
    # left alone when the user says so.
    scene.dff.set_render_size = False
    scene.render.resolution_x = 100
    apply_import(bpy.context, camera_reply(2)[0])
    assert len(collection.objects) == 2
    assert len(bpy.data.cameras) == 2
    assert scene.render.resolution_x == 100


def test_apply_import_shows_photos_and_the_point_cloud(addon, tmp_path):
    from PIL import Image

    from blender_dff.scene.cameras import COLLECTION_NAME, POINT_COLOR_ATTR, POINTS_NAME, apply_import

    reply, _ = camera_reply(3)
    Image.new("RGB", (64, 48), (255, 0, 0)).save(tmp_path / "r_0.png")
    Image.new("RGB", (64, 48), (0, 0, 255)).save(tmp_path / "r_1.png")  # r_2's photo is missing
    reply.result.update(root=str(tmp_path), names=["r_0.png", "r_1.png", "r_2.png"])
    points = np.random.default_rng(1).uniform(-1, 1, (50, 3)).astype(np.float32)
    colors = np.tile(np.array([[255, 128, 0]], np.uint8), (50, 1))
    reply.arrays.update(points=points, point_colors=colors)
    message = apply_import(bpy.context, reply)
    collection = bpy.data.collections[COLLECTION_NAME]
    photos = {obj.name: [bg.image.filepath for bg in obj.data.background_images]
              for obj in collection.objects if obj.type == 'CAMERA'}
    assert photos == {"r_0.png": [str(tmp_path / "r_0.png")], "r_1.png": [str(tmp_path / "r_1.png")], "r_2.png": []}
    assert collection.objects["r_0.png"].data.show_background_images
    cloud = collection.objects[POINTS_NAME]
    co = np.empty(150, np.float32)
    cloud.data.vertices.foreach_get("co", co)
    np.testing.assert_allclose(co.reshape(-1, 3), points)
    rgba = np.empty(200, np.float32)
    cloud.data.color_attributes[POINT_COLOR_ATTR].data.foreach_get("color_srgb", rgba)
    np.testing.assert_allclose(rgba.reshape(-1, 4)[0], [1.0, 128 / 255, 0.0, 1.0], atol=1 / 255)
    # Drawn as points: the evaluated geometry is a point cloud of all of them.
    clouds = [instance.object.data for instance in bpy.context.evaluated_depsgraph_get().object_instances
              if instance.object.type == 'POINTCLOUD' and instance.object.original == cloud]
    assert [len(points.points) for points in clouds] == [50]
    assert "50 points" in message
    # A second import replaces the cloud rather than adding another.
    apply_import(bpy.context, reply)
    assert [obj.name for obj in collection.objects if obj.type == 'MESH'] == [POINTS_NAME]


def test_capture_plan_orbits_the_selection_or_uses_the_scene_cameras(addon, tmp_path):
    from blender_dff.capture.plan import plan_capture

    with pytest.raises(ValueError, match="nothing to capture"):
        plan_capture(bpy.context, tmp_path, 'ORBIT', 16, 64, 4)
    bpy.ops.mesh.primitive_cube_add(size=2.0, location=(1.0, 2.0, 1.0))
    plan = plan_capture(bpy.context, tmp_path, 'ORBIT', 16, 64, 4)
    assert (len(plan["views"]["train"]), len(plan["views"]["test"])) == (16, 2) and plan["hide"] == []
    assert (plan["width"], plan["height"]) == (64, 64)
    np.testing.assert_allclose(plan["aabb"], [[-0.2, 0.8, -0.2], [2.2, 3.2, 2.2]], atol=1e-5)
    for matrix in plan["views"]["train"] + plan["views"]["test"]:
        m = np.array(matrix)
        to_centre = np.array([1.0, 2.0, 1.0]) - m[:3, 3]
        # Every camera looks at the box's centre, from far enough to see all of it.
        np.testing.assert_allclose(-m[:3, 2], to_centre / np.linalg.norm(to_centre), atol=1e-5)
        assert np.linalg.norm(to_centre) * math.sin(plan["camera_angle_x"] / 2) > math.sqrt(3)

    with pytest.raises(ValueError, match="has 0 camera"):
        plan_capture(bpy.context, tmp_path, 'SCENE', 16, 64, 4)
    scene = bpy.context.scene
    scene.render.resolution_x, scene.render.resolution_y = 100, 200  # portrait: Auto fits the height
    for k in range(2):
        camera = bpy.data.objects.new(f"Cam{k}", bpy.data.cameras.new(f"Cam{k}"))
        camera.location = (8.0 + k, 2.0, 1.0)
        camera.rotation_euler = (math.pi / 2, 0.0, math.pi / 2)
        scene.collection.objects.link(camera)
    plan = plan_capture(bpy.context, tmp_path, 'SCENE', 16, 64, 4)
    assert (plan["width"], plan["height"]) == (32, 64) and len(plan["views"]["train"]) == 2
    # A point at the right edge of the half-angle the plan reports is at the right edge of the frame.
    camera = bpy.data.objects["Cam0"]
    edge = camera.matrix_world @ Vector((math.tan(plan["camera_angle_x"] / 2) * 5.0, 0.0, -5.0))
    assert world_to_camera_view(scene, camera, edge).x == pytest.approx(1.0, abs=1e-5)
    bpy.data.objects["Cam1"].data.lens = 35.0
    with pytest.raises(ValueError, match="different fields of view"):
        plan_capture(bpy.context, tmp_path, 'SCENE', 16, 64, 4)


def test_apply_import_rejects_mismatched_arrays(addon):
    from blender_dff.scene.cameras import apply_import

    reply, _ = camera_reply(3)
    reply.arrays["intrinsics"] = reply.arrays["intrinsics"][:2]
    with pytest.raises(ValueError, match="intrinsics"):
        apply_import(bpy.context, reply)


# --- mesh -----------------------------------------------------------------------------


def test_apply_mesh_creates_and_replaces_dff_mesh(addon):
    from blender_dff.scene.mesh_import import COLOR_ATTR, FACE_INDEX_ATTR, MESH_NAME, apply_mesh

    vertices, faces, colors = cube_arrays(cuts=3)
    apply_mesh(bpy.context, mesh_reply(vertices, faces, colors))
    obj = bpy.data.objects[MESH_NAME]
    mesh = obj.data
    assert bpy.context.scene.dff.mesh_object == obj
    assert (len(mesh.vertices), len(mesh.polygons)) == (len(vertices), len(faces))
    assert np.allclose(read(mesh.vertices, "co", np.float32, 3), vertices)
    assert np.array_equal(read(mesh.loops, "vertex_index", np.int32), faces.ravel())
    assert np.array_equal(read(mesh.attributes[FACE_INDEX_ATTR].data, "value", np.int32),
                          np.arange(len(faces)))
    color = mesh.color_attributes[COLOR_ATTR]
    assert color.domain == 'POINT'
    assert np.allclose(read(color.data, "color_srgb", np.float32, 4)[:, :3], colors, atol=1e-4)
    assert np.allclose(np.array(obj.matrix_world), np.eye(4))

    old_mesh_name = mesh.name
    obj.location = (1.0, 2.0, 3.0)  # the user placed it: a new mesh keeps the placement
    vertices, faces, colors = cube_arrays(cuts=1)
    apply_mesh(bpy.context, mesh_reply(vertices, faces, colors), "/tmp/ws")
    assert bpy.data.objects[MESH_NAME] == obj and len(bpy.data.objects) == 1
    assert tuple(obj.location) == (1.0, 2.0, 3.0) and obj.data["dff_workspace"] == "/tmp/ws"
    assert len(obj.data.polygons) == len(faces)
    assert old_mesh_name not in bpy.data.meshes or bpy.data.meshes[old_mesh_name] == obj.data


def test_degenerate_faces_are_dropped_but_keep_the_worker_order(addon):
    from blender_dff.scene.mesh_import import FACE_INDEX_ATTR, build_mesh

    vertices = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [1, 1, 0]], dtype=np.float32)
    faces = np.array([[0, 1, 2], [1, 1, 3], [1, 3, 2]], dtype=np.int32)
    mesh = build_mesh("quad", vertices, faces)
    assert [list(face.vertices) for face in mesh.polygons] == [[0, 1, 2], [1, 3, 2]]
    assert list(read(mesh.attributes[FACE_INDEX_ATTR].data, "value", np.int32)) == [0, 2]


def test_apply_mesh_rejects_bad_faces(addon):
    from blender_dff.scene.mesh_import import apply_mesh

    vertices, faces, colors = cube_arrays(cuts=1)
    faces[0, 0] = len(vertices)
    with pytest.raises(ValueError, match="faces"):
        apply_mesh(bpy.context, mesh_reply(vertices, faces, colors))
    assert not bpy.data.meshes


# --- selection ------------------------------------------------------------------------


def test_apply_query_writes_attributes_group_and_selection(addon):
    from blender_dff.scene.selection import PROBABILITY_ATTR, apply_query

    obj, (_, faces, _) = make_mesh(addon)
    probability = np.random.default_rng(1).uniform(0.0, 1.0, len(faces)).astype(np.float32)
    probability[:3] = [1.4, -0.2, 0.5]  # clamped; 0.5 is not above the threshold
    message = apply_query(bpy.context, "mug", query_reply(probability), obj.name)
    expected = np.clip(probability, 0.0, 1.0)
    mask = expected > 0.5
    assert obj.mode == 'EDIT'
    assert np.array_equal(edit_mode_selection(obj), mask)
    assert f"selected {mask.sum()} of {len(faces)}" in message
    assert bpy.context.scene.dff.active_query == "mug"

    bpy.ops.object.mode_set(mode='OBJECT')
    mesh = obj.data
    assert np.array_equal(read(mesh.attributes["dff_mug"].data, "value", bool), mask)
    assert np.allclose(read(mesh.attributes[PROBABILITY_ATTR].data, "value", np.float32),
                       expected)
    group = obj.vertex_groups["mug"]
    for vertex in mesh.vertices:
        adjacent = [expected[i] for i, face in enumerate(faces) if vertex.index in face]
        assert group.weight(vertex.index) == pytest.approx(max(adjacent))
        assert 0.0 <= group.weight(vertex.index) <= 1.0


def test_threshold_reselects_without_the_worker(worker):
    obj, (_, faces, _) = make_mesh(worker)
    probability = np.linspace(0.0, 1.0, len(faces), dtype=np.float32)
    bpy.context.scene.dff.query_text = "mug"
    assert bpy.ops.dff.select_text() == {'FINISHED'}
    (sent,) = worker.sent
    assert (sent.method, sent.params["text"]) == ("query_text", "mug")
    worker.reply(sent, query_reply(probability))
    blender_dff.worker.session.pump()
    assert np.array_equal(edit_mode_selection(obj), probability > 0.5)

    bpy.context.scene.dff.threshold = 0.8  # in edit mode: applied once the slider stands still
    assert np.array_equal(edit_mode_selection(obj), probability > 0.5)
    blender_dff.scene.selection.settle()
    assert np.array_equal(edit_mode_selection(obj), probability > 0.8)
    bpy.ops.object.mode_set(mode='OBJECT')
    bpy.context.scene.dff.threshold = 0.2  # in object mode: the selection at once
    assert np.array_equal(read(obj.data.polygons, "select", bool), probability > 0.2)
    assert np.array_equal(read(obj.data.attributes["dff_mug"].data, "value", bool),
                          probability > 0.2)
    assert len(worker.sent) == 1


def test_separate_moves_the_selection_into_an_object(worker):
    from blender_dff.scene.selection import apply_query

    obj, (_, faces, colors) = make_mesh(worker)
    probability = np.random.default_rng(2).uniform(0.0, 1.0, len(faces)).astype(np.float32)
    apply_query(bpy.context, "mug", query_reply(probability), obj.name)
    selected = int((probability > 0.5).sum())

    assert bpy.ops.dff.separate() == {'FINISHED'}
    part = bpy.data.objects["mug"]
    assert part != obj and part.mode == 'OBJECT' and obj.mode == 'OBJECT'
    assert len(part.data.polygons) == selected
    assert len(obj.data.polygons) == len(faces) - selected
    part_colors = read(part.data.color_attributes["Col"].data, "color_srgb", np.float32, 4)
    part_vertices = read(part.data.vertices, "co", np.float32, 3)
    # Each vertex of the part keeps the colour it had (colour = position here).
    assert np.allclose(part_colors[:, :3], (part_vertices + 1.0) / 2.0, atol=1e-4)
    assert "mug" in part.vertex_groups

    # The rest still answers queries in the worker's face order.
    face_index = read(obj.data.attributes["dff_face_index"].data, "value", np.int32)
    apply_query(bpy.context, "table", query_reply(1.0 - probability), obj.name)
    assert np.array_equal(edit_mode_selection(obj), 1.0 - probability[face_index] > 0.5)


def test_a_query_is_for_the_active_dff_object_a_separated_part_or_another_mesh(worker, tmp_path):
    from blender_dff.scene.mesh_import import apply_mesh
    from blender_dff.scene.modes import set_mode

    scene = bpy.context.scene
    scene.dff.workspace_path = str(tmp_path / "a")
    assert bpy.ops.dff.load_mesh() == {'FINISHED'}
    vertices, faces, colors = cube_arrays(cuts=1)
    worker.reply(worker.sent[-1], mesh_reply(vertices, faces, colors))
    blender_dff.worker.session.pump()
    main = scene.dff.mesh_object
    n = len(faces)
    probability = np.linspace(0.0, 1.0, n, dtype=np.float32)

    # A part separated from the mesh: active, it is what a query selects on.
    bpy.ops.dff.select_text(text="mug")
    worker.reply(worker.sent[-1], query_reply(probability))
    blender_dff.worker.session.pump()
    assert bpy.ops.dff.separate() == {'FINISHED'}
    part = bpy.data.objects["mug"]
    set_mode(bpy.context, part, 'OBJECT')
    part_index = read(part.data.attributes["dff_face_index"].data, "value", np.int32)
    bpy.ops.dff.select_text(text="handle")
    sent = worker.sent[-1]
    assert sent.params["workspace"] == str(tmp_path / "a") and sent.params["mesh_id"] == main.data["dff_mesh_id"]
    worker.reply(sent, query_reply(1.0 - probability))
    blender_dff.worker.session.pump()
    assert "handle" in part.vertex_groups and "handle" not in main.vertex_groups
    assert scene.dff.query_object == part and scene.dff.mesh_object == main
    assert np.array_equal(edit_mode_selection(part), 1.0 - probability[part_index] > 0.5)

    # Another workspace's mesh in the same scene: its queries go to its workspace, with its id.
    other_scene = bpy.data.scenes.new("B")
    other_vertices = vertices * 2.0
    with bpy.context.temp_override(scene=other_scene, view_layer=other_scene.view_layers[0]):
        apply_mesh(bpy.context, mesh_reply(other_vertices, faces[::-1].copy(), colors), str(tmp_path / "b"))
    other = other_scene.dff.mesh_object
    scene.collection.objects.link(other)
    assert other.data["dff_mesh_id"] != main.data["dff_mesh_id"]
    set_mode(bpy.context, other, 'OBJECT')
    bpy.ops.dff.select_text(text="chair")
    sent = worker.sent[-1]
    assert (sent.params["workspace"], sent.params["mesh_id"]) == (str(tmp_path / "b"), other.data["dff_mesh_id"])
    worker.reply(sent, query_reply(probability))
    blender_dff.worker.session.pump()
    assert "chair" in other.vertex_groups and "chair" not in main.vertex_groups and "chair" not in part.vertex_groups


def test_a_deleted_dff_mesh_is_not_queried_and_frees_its_name(worker):
    obj, _ = make_mesh(worker)
    bpy.context.scene.collection.objects.unlink(obj)  # deleted, but still in memory
    assert not bpy.ops.dff.select_similar.poll()
    with pytest.raises(RuntimeError, match="no DFF mesh yet|not in the scene"):
        bpy.ops.dff.select_text(text="mug")
    make_mesh(worker)
    assert bpy.context.scene.dff.mesh_object.name == "DFF Mesh"


def bake_reply(faces: np.ndarray, size: int = 16) -> Reply:
    """UVs that encode the face and corner (u = face / F, v = corner / 3) and a texture whose
    pixels encode their row and column."""
    n = len(faces)
    uv = np.stack([np.repeat(np.arange(n)[:, None] / n, 3, 1), np.tile(np.arange(3) / 3, (n, 1))], -1)
    texture = np.zeros((size, size, 3), np.uint8)
    texture[..., 0] = np.arange(size)[:, None] * 10
    texture[..., 1] = np.arange(size)[None, :] * 10
    return Reply(ok=True, result={"size": size}, arrays={"uv": uv.astype(np.float32), "texture": texture})


def test_bake_gives_uvs_an_image_and_a_paintable_material_that_separate_keeps(worker):
    from blender_dff.scene.selection import apply_query
    from blender_dff.scene.texture import IMAGE_NAME, UV_NAME

    obj, (_, faces, _) = make_mesh(worker)
    assert bpy.ops.dff.bake_texture() == {'FINISHED'}
    sent = worker.sent[-1]
    assert (sent.method, sent.params["size"]) == ("bake", 2048) and jobs.running(bpy.context.scene)
    assert sent.params["mesh_id"] == obj.data["dff_mesh_id"] and len(sent.params["mesh_id"]) == 16
    reply = bake_reply(faces)
    worker.reply(sent, reply)
    blender_dff.worker.session.pump()
    props = bpy.context.scene.dff
    assert not jobs.running(bpy.context.scene) and not props.error, props.error
    face_index = read(obj.data.attributes["dff_face_index"].data, "value", np.int32)
    uv = read(obj.data.uv_layers[UV_NAME].data, "uv", np.float32, 2).reshape(-1, 3, 2)
    assert np.allclose(uv, reply.arrays["uv"][face_index])
    image = bpy.data.images[IMAGE_NAME]
    pixels = np.array(image.pixels[:], np.float32).reshape(16, 16, 4)
    # Blender stores the bottom row first; the wire sends the top row first.
    assert np.allclose(pixels[::-1, :, :3] * 255, reply.arrays["texture"], atol=0.5)
    assert image.packed_file is not None
    material = obj.data.materials[0]
    node = material.node_tree.nodes.active
    assert node.type == 'TEX_IMAGE' and node.image == image  # what Texture Paint paints on
    assert any(link.to_node.type == 'BSDF_PRINCIPLED' for link in node.outputs["Color"].links)

    apply_query(bpy.context, "mug", query_reply(np.linspace(0, 1, len(faces), dtype=np.float32)), obj.name)
    bpy.ops.dff.separate()
    part = bpy.data.objects["mug"]
    part_index = read(part.data.attributes["dff_face_index"].data, "value", np.int32)
    part_uv = read(part.data.uv_layers[UV_NAME].data, "uv", np.float32, 2).reshape(-1, 3, 2)
    assert np.allclose(part_uv, reply.arrays["uv"][part_index]) and part.data.materials[0] == material


def test_a_second_scene_keeps_its_own_cameras_mesh_texture_and_pictures(worker):
    from blender_dff.scene import images, texture
    from blender_dff.scene.cameras import apply_import

    def bake(context, value: int) -> bpy.types.Image:
        reply = bake_reply(cube_arrays()[1])
        reply.arrays["texture"][:] = value
        mesh = context.scene.dff.mesh_object.data
        texture.apply_bake(context, reply, mesh["dff_mesh_id"])
        return mesh.materials[0].node_tree.nodes.active.image

    first = bpy.context.scene
    apply_import(bpy.context, camera_reply(3)[0])
    mine = bpy.data.objects.new("My Empty", None)  # the user keeps something of theirs there
    first.dff.cameras.objects.link(mine)
    first_mesh, _ = make_mesh(bpy.context)
    first_image = bake(bpy.context, 10)
    images.show_training_preview(first.dff, np.full((4, 8, 3), 10, np.uint8))

    second = bpy.data.scenes.new("Second")
    with bpy.context.temp_override(scene=second, view_layer=second.view_layers[0]):
        apply_import(bpy.context, camera_reply(2)[0])
        second_mesh, _ = make_mesh(bpy.context)
        second_image = bake(bpy.context, 200)
        images.show_training_preview(second.dff, np.full((4, 8, 3), 200, np.uint8))

    assert second.dff.cameras != first.dff.cameras and len(second.dff.cameras.objects) == 2
    assert set(first.dff.cameras.objects) == {mine, *[obj for obj in first.dff.cameras.objects if obj.type == 'CAMERA']}
    assert len([obj for obj in first.dff.cameras.objects if obj.type == 'CAMERA']) == 3
    assert first.dff.mesh_object == first_mesh and second.dff.mesh_object == second_mesh != first_mesh
    assert first_mesh.data.materials[0].node_tree.nodes.active.image == first_image != second_image
    assert first_image.pixels[0] == pytest.approx(10 / 255) and second_image.pixels[0] == pytest.approx(200 / 255)
    assert first.dff.preview_image != second.dff.preview_image
    assert first.dff.preview_image.pixels[0] == pytest.approx(10 / 255)
    assert first.dff.preview_image.packed_file is not None  # still there when the file is opened again

    apply_import(bpy.context, camera_reply(2)[0])  # a new import removes only what an import made
    assert mine.name in first.dff.cameras.objects and len(first.dff.cameras.objects) == 3


def test_bad_bake_replies_are_refused(worker):
    obj, (_, faces, _) = make_mesh(worker)
    bpy.ops.dff.bake_texture()
    good = bake_reply(faces)
    worker.reply(worker.sent[-1], Reply(ok=True, result={}, arrays={"uv": good.arrays["uv"][:-1],
                                                                    "texture": good.arrays["texture"]}))
    blender_dff.worker.session.pump()
    props = bpy.context.scene.dff
    assert props.error_code == "apply_failed" and "faces the texture was baked for" in props.error
    assert "DFF Texture" not in bpy.data.images and not obj.data.uv_layers


def separated_parts(obj: bpy.types.Object, vertices: np.ndarray, faces: np.ndarray
                    ) -> tuple[bpy.types.Object, bpy.types.Object]:
    """Two parts separated from the DFF mesh `obj` made of `vertices` and `faces`: "mug" (the
    top of the cube, some of its triangles joined into quads) and "bowl" (the bottom)."""
    from blender_dff.scene.selection import apply_query

    height = vertices[faces].mean(1)[:, 2]
    apply_query(bpy.context, "mug", query_reply((height > 0.99).astype(np.float32)), obj.name)
    bpy.ops.dff.separate()
    apply_query(bpy.context, "bowl", query_reply((height < -0.99).astype(np.float32)), obj.name)
    bpy.ops.dff.separate()
    mug, bowl = bpy.data.objects["mug"], bpy.data.objects["bowl"]
    bm = bmesh.new()
    bm.from_mesh(mug.data)
    pairs, used = [], set()
    for edge in list(bm.edges)[::5]:  # a quad of two triangles here and there
        if len(edge.link_faces) == 2 and not used & set(edge.link_faces):
            pairs.append(list(edge.link_faces))
            used.update(edge.link_faces)
    for pair in pairs:
        bmesh.ops.dissolve_faces(bm, faces=pair)
    bm.to_mesh(mug.data)
    bm.free()
    assert max(polygon.loop_total for polygon in mug.data.polygons) == 4
    return mug, bowl


def bake_button() -> str:
    """The text of the Texture panel's bake button."""
    panel = SimpleNamespace(layout=RecordingLayout())
    bpy.types.DFF_PT_texture.draw(panel, bpy.context)
    (text,) = [entry[2] for entry in panel.layout.log if entry[:2] == ("operator", "dff.bake_texture")]
    return text


def test_a_part_is_baked_alone_on_its_own_atlas_image_and_material(worker, tmp_path):
    from blender_dff.scene.texture import UV_NAME

    obj, (vertices, faces, _) = make_mesh(worker)
    assert bake_button() == "Bake Texture"
    bpy.ops.dff.bake_texture()
    worker.reply(worker.sent[-1], bake_reply(faces))
    blender_dff.worker.session.pump()
    scene_material = obj.data.materials[0]
    mug, bowl = separated_parts(obj, vertices, faces)
    bowl_uv = read(bowl.data.uv_layers[UV_NAME].data, "uv", np.float32, 2)
    mine = bpy.data.materials.new("My Glaze")  # the user's own material keeps its slot
    mug.data.materials.append(mine)
    mug.location = (5.0, 0.0, 0.0)  # moved aside: the worker's frame is the mesh's own

    bpy.context.view_layer.objects.active = mug
    assert bake_button() == "Bake 'mug'" and bpy.ops.dff.bake_texture.poll()
    assert bpy.ops.dff.bake_texture() == {'FINISHED'}
    sent = worker.sent[-1]
    assert sent.params == worker.sent[0].params  # the workspace, mesh id and size of the scene's bake
    mug.data.calc_loop_triangles()
    triangles = read(mug.data.loop_triangles, "vertices", np.int32, 3)
    assert len(triangles) > len(mug.data.polygons)  # the quads went as two triangles each
    assert sent.arrays["vertices"].dtype == np.float32 and sent.arrays["faces"].dtype == np.int32
    assert np.array_equal(sent.arrays["vertices"], read(mug.data.vertices, "co", np.float32, 3))
    assert np.array_equal(sent.arrays["faces"], triangles)

    # Each triangle corner's UV encodes its loop, so every loop has one UV whichever triangle sets it.
    loops = read(mug.data.loop_triangles, "loops", np.int32, 3)
    uv = np.stack([loops / len(mug.data.loops), np.full(loops.shape, 0.5)], -1).astype(np.float32)
    reply = bake_reply(triangles)
    reply.arrays["uv"] = uv
    worker.reply(sent, reply)
    blender_dff.worker.session.pump()
    props = bpy.context.scene.dff
    assert not props.error and "onto 'mug'" in props.message, props.error
    mug_uv = read(mug.data.uv_layers[UV_NAME].data, "uv", np.float32, 2)
    assert np.allclose(mug_uv[:, 0], np.arange(len(mug.data.loops)) / len(mug.data.loops))
    assert mug.data.uv_layers.active.name == UV_NAME
    material = mug.data.materials[0]
    assert material.name == "mug Texture" and mug.data.materials[1] == mine
    image = material.node_tree.nodes.active.image
    assert image.name == "mug Texture" and image.packed_file is not None
    assert np.allclose(np.array(image.pixels[:]).reshape(16, 16, 4)[::-1, :, :3] * 255, reply.arrays["texture"],
                       atol=0.5)
    # The other part and the rest of the mesh keep the scene's bake.
    assert bowl.data.materials[0] == scene_material == obj.data.materials[0]
    assert np.array_equal(read(bowl.data.uv_layers[UV_NAME].data, "uv", np.float32, 2), bowl_uv)
    # A new bake of the whole mesh leaves the part's own bake be.
    bpy.context.view_layer.objects.active = obj
    assert bpy.ops.dff.bake_texture() == {'FINISHED'} and not worker.sent[-1].arrays
    worker.reply(worker.sent[-1], bake_reply(faces))
    blender_dff.worker.session.pump()
    assert bowl.data.materials[0] == obj.data.materials[0] != scene_material and mug.data.materials[0] == material
    assert np.allclose(read(mug.data.uv_layers[UV_NAME].data, "uv", np.float32, 2), mug_uv)

    # Blender's own exporters take the part with its texture.
    bpy.ops.object.select_all(action='DESELECT')
    mug.select_set(True)
    bpy.ops.wm.obj_export(filepath=str(tmp_path / "mug.obj"), export_selected_objects=True, export_materials=True)
    assert "map_Kd mug_Texture.png" in (tmp_path / "mug.mtl").read_text()
    bpy.ops.export_scene.gltf(filepath=str(tmp_path / "mug.gltf"), export_format='GLTF_SEPARATE', use_selection=True)
    gltf = json.loads((tmp_path / "mug.gltf").read_text())
    assert [image["uri"] for image in gltf["images"]] == ["mug_Texture.png"]
    assert np.array_equal(np.array(Image.open(tmp_path / "mug_Texture.png"))[..., :3], reply.arrays["texture"])


def test_a_part_in_edit_mode_is_baked_as_edited_but_not_if_edited_during_the_bake(worker):
    from blender_dff.scene.modes import set_mode

    def delete_a_face() -> int:
        """Delete a face of the mug in edit mode; the triangles it has left."""
        bm = bmesh.from_edit_mesh(mug.data)
        bmesh.ops.delete(bm, geom=list(bm.faces)[:1], context='FACES')
        bmesh.update_edit_mesh(mug.data)
        return sum(len(face.verts) - 2 for face in bm.faces)

    obj, (vertices, faces, _) = make_mesh(worker)
    mug, _ = separated_parts(obj, vertices, faces)
    set_mode(bpy.context, mug, 'EDIT')
    triangles = delete_a_face()
    assert bpy.ops.dff.bake_texture() == {'FINISHED'}
    sent = worker.sent[-1]
    assert len(sent.arrays["faces"]) == triangles
    worker.reply(sent, bake_reply(sent.arrays["faces"]))
    blender_dff.worker.session.pump()
    props = bpy.context.scene.dff
    assert not props.error and mug.mode == 'EDIT' and mug.data.materials[0].name == "mug Texture", props.error

    bpy.ops.dff.bake_texture()
    sent = worker.sent[-1]
    delete_a_face()
    worker.reply(sent, bake_reply(sent.arrays["faces"]))
    blender_dff.worker.session.pump()
    assert props.error_code == "apply_failed" and "changed while its texture was baked" in props.error
    assert "mug Texture.001" not in bpy.data.images and mug.mode == 'EDIT'


# --- operators through the scripted worker ----------------------------------------------


def test_import_operator_sends_paths_and_applies_reply(worker, tmp_path):
    props = bpy.context.scene.dff
    props.dataset_path = str(tmp_path)
    assert bpy.ops.dff.import_dataset() == {'FINISHED'}
    (sent,) = worker.sent
    assert sent.params == {"dataset": str(tmp_path), "workspace": str(tmp_path / "dff_workspace"),
                           "downscale": 1, "test_every": 8, "bounds": "auto"}
    assert props.workspace_path == str(tmp_path / "dff_workspace")
    worker.reply(sent, camera_reply(3)[0])
    blender_dff.worker.session.pump()
    assert len(bpy.data.collections["DFF Cameras"].objects) == 3
    assert props.n_images == 3 and not props.error


def test_reply_lands_in_the_scene_that_asked(worker, tmp_path):
    asking = bpy.context.scene
    asking.dff.workspace_path = str(tmp_path)
    assert bpy.ops.dff.load_mesh() == {'FINISHED'}
    other = bpy.data.scenes.new("Other")
    worker.reply(worker.sent[0], mesh_reply(*cube_arrays(cuts=1)))
    # The user has switched to the other scene when the reply comes. (Setting window.scene
    # instead crashes bpy 4.2 in background mode now and then.)
    with bpy.context.temp_override(scene=other, view_layer=other.view_layers[0]):
        assert bpy.context.scene == other
        blender_dff.worker.session.pump()
    assert asking.dff.mesh_object is not None and other.dff.mesh_object is None
    assert asking.objects.get("DFF Mesh") and not other.objects


def test_a_reply_waits_while_the_user_transforms_something(worker, tmp_path, monkeypatch):
    from blender_dff.worker import session

    assert not session.user_busy()  # no modal operator runs here
    bpy.context.scene.dff.workspace_path = str(tmp_path)
    assert bpy.ops.dff.load_mesh() == {'FINISHED'}
    worker.reply(worker.sent[0], mesh_reply(*cube_arrays(cuts=1)))
    monkeypatch.setattr(session, "user_busy", lambda: True)  # a grab (G) is running
    session._tick()
    session._tick()
    assert bpy.context.scene.dff.mesh_object is None
    monkeypatch.setattr(session, "user_busy", lambda: False)  # the grab ended
    session._tick()
    assert bpy.context.scene.dff.mesh_object is not None

    bpy.context.scene.dff.mesh_object = None
    assert bpy.ops.dff.load_mesh() == {'FINISHED'}
    worker.reply(worker.sent[1], mesh_reply(*cube_arrays(cuts=1)))
    monkeypatch.setattr(session, "user_busy", lambda: True)
    monkeypatch.setattr(session, "_deferred_since", time.monotonic() - session.MAX_DEFER)
    session._tick()  # a modal operator that never ends does not hold replies back for good
    assert bpy.context.scene.dff.mesh_object is not None


def test_sam_teacher_sends_its_checkpoint_and_queries_name_the_teacher(worker, tmp_path):
    props = bpy.context.scene.dff
    props.workspace_path = str(tmp_path)
    props.teacher = 'sam'
    props.sam_checkpoint = str(tmp_path / "sam_vit_b.pth")
    bpy.ops.dff.train()
    sent = worker.sent[-1]
    assert sent.params["teacher"] == "sam" and sent.params["sam_checkpoint"] == str(tmp_path / "sam_vit_b.pth")
    jobs.clear()
    make_mesh(bpy.context)
    props.workspace_path = str(tmp_path)
    bpy.ops.dff.select_text(text="mug")
    assert worker.sent[-1].method == "query_text" and worker.sent[-1].params["teacher"] == "sam"


def test_train_sends_the_quality_preset_and_custom_numbers_only_when_asked(worker, tmp_path):
    props = bpy.context.scene.dff
    props.workspace_path = str(tmp_path)
    props.preset = 'high'
    props.nerf_steps = 123  # set, but Custom Settings is off: the preset decides
    layout = RecordingLayout()
    blender_dff.ui.panels.DFF_PT_train.draw(SimpleNamespace(layout=layout), bpy.context)
    blender_dff.ui.panels.DFF_PT_train_advanced.draw(SimpleNamespace(layout=layout), bpy.context)
    assert "preset" in layout.props() and "nerf_steps" not in layout.props()
    assert bpy.ops.dff.train() == {'FINISHED'}
    sent = worker.sent[-1]
    assert sent.params["preset"] == "high" and "nerf_steps" not in sent.params
    jobs.clear()

    props.custom_settings = True
    layout = RecordingLayout()
    blender_dff.ui.panels.DFF_PT_train_advanced.draw(SimpleNamespace(layout=layout), bpy.context)
    assert {"nerf_steps", "feature_steps", "mesh_resolution"} <= set(layout.props())
    assert bpy.ops.dff.train() == {'FINISHED'}
    sent = worker.sent[-1]
    assert sent.params["preset"] == "high" and sent.params["nerf_steps"] == 123
    assert sent.params["mesh_resolution"] == props.mesh_resolution


def test_train_operator_progress_reply_and_cancel(worker, tmp_path):
    props = bpy.context.scene.dff
    props.workspace_path = str(tmp_path)
    props.max_faces = 50_000
    assert bpy.ops.dff.train() == {'FINISHED'}
    (sent,) = worker.sent
    assert sent.method == "train" and sent.params["teacher"] == "labels" and sent.params["max_faces"] == 50_000
    assert jobs.running(bpy.context.scene) and not bpy.ops.dff.train.poll()

    worker.progress(sent, {"stage": "nerf", "step": 50, "total": 200,
                           "metrics": {"loss": 0.02, "psnr": 21.5}, "eta": 12.0})
    blender_dff.worker.session.pump()
    job = jobs.of(bpy.context.scene)
    assert (job.stage, job.step, job.total) == ("nerf", 50, 200)
    assert job.fraction == pytest.approx(0.25) and job.psnr == pytest.approx(21.5)

    worker.reply(sent, mesh_reply(*cube_arrays(cuts=1)))
    blender_dff.worker.session.pump()
    assert not jobs.running(bpy.context.scene) and props.mesh_object is not None
    assert "PSNR 31.50" in props.message

    assert bpy.ops.dff.train() == {'FINISHED'}
    assert bpy.ops.dff.cancel() == {'FINISHED'}
    assert worker.cancelled == [worker.sent[-1].id]
    worker.reply(worker.sent[-1], Reply.failure("cancelled", "cancelled by the user",
                                                "Run the same stage again to resume."))
    blender_dff.worker.session.pump()
    assert not jobs.running(bpy.context.scene) and props.error_code == "cancelled"


def test_undo_right_after_train_leaves_the_job_visible_and_cancellable(worker, tmp_path):
    bpy.context.scene.dff.workspace_path = str(tmp_path)
    bpy.ops.ed.undo_push(message="Original")
    bpy.ops.mesh.primitive_cube_add()  # the user's last change before Train
    bpy.ops.ed.undo_push(message="Add Cube")
    assert bpy.ops.dff.train() == {'FINISHED'}
    sent = worker.sent[-1]
    bpy.ops.ed.undo()  # Ctrl+Z: takes the cube away, not the training
    scene = bpy.context.scene  # undo reloads the data: earlier references are stale
    assert "Cube" not in scene.objects
    assert jobs.running(scene) and not bpy.ops.dff.train.poll()
    layout = RecordingLayout()
    blender_dff.ui.panels.DFF_PT_train.draw(SimpleNamespace(layout=layout), bpy.context)
    assert [entry for entry in layout.log if entry[0] == "progress"] and "dff.cancel" in layout.operators()

    worker.progress(sent, {"stage": "nerf", "step": 5, "total": 10, "metrics": {"psnr": 20.0}})
    blender_dff.worker.session.pump()
    assert jobs.of(scene).step == 5
    assert bpy.ops.dff.cancel() == {'FINISHED'} and worker.cancelled == [sent.id]
    worker.reply(sent, Reply.failure("cancelled", "cancelled by the user", ""))
    blender_dff.worker.session.pump()
    assert not jobs.running(scene) and bpy.context.scene.dff.error_code == "cancelled"


def test_the_training_pictures_survive_saving_and_reopening_the_file(worker, tmp_path):
    from blender_dff.scene import images

    props = bpy.context.scene.dff
    bpy.context.scene.dff.workspace_path = str(tmp_path)
    assert bpy.ops.dff.train() == {'FINISHED'}
    images.show_training_preview(props, np.full((4, 8, 3), 200, np.uint8))
    for step, psnr in ((10, 12.0), (20, 15.0)):
        props.record_curve(step, psnr)
    images.show_training_curve(props)
    bpy.ops.wm.save_as_mainfile(filepath=str(tmp_path / "scene.blend"))
    bpy.ops.wm.open_mainfile(filepath=str(tmp_path / "scene.blend"))

    props = bpy.context.scene.dff
    assert not jobs.running(bpy.context.scene)  # nothing trains in a file just opened
    assert [(p.step, p.psnr) for p in props.training_curve] == [(10, 12.0), (20, 15.0)]
    for image in (props.preview_image, props.curve_image):
        assert image is not None and image.packed_file is not None and image.has_data
        assert image.preview is not None and tuple(image.preview.image_size) == tuple(image.size)
    assert props.preview_image.pixels[0] == pytest.approx(200 / 255)


def test_status_bar_shows_every_scene_s_job_and_cancels_the_one_asked(worker, tmp_path):
    first = bpy.context.scene
    first.dff.workspace_path = str(tmp_path)
    assert bpy.ops.dff.train() == {'FINISHED'}
    training = worker.sent[-1]
    worker.progress(training, {"stage": "nerf", "step": 50, "total": 200})
    blender_dff.worker.session.pump()
    other = bpy.data.scenes.new("Other")
    with bpy.context.temp_override(scene=other, view_layer=other.view_layers[0]):
        layout = RecordingLayout()
        blender_dff.ui.panels.draw_status_bar(SimpleNamespace(layout=layout), bpy.context)
        (bar,) = [entry for entry in layout.log if entry[0] == "progress"]
        assert bar[1] == pytest.approx(0.25) and first.name in bar[2] and "NeRF 50/200" in bar[2]
        assert "dff.cancel" in layout.operators()
        assert bpy.ops.dff.train.poll()  # the other scene is free to train
        assert bpy.ops.dff.cancel(scene=first.name) == {'FINISHED'}
    assert worker.cancelled == [training.id]
    assert jobs.of(first).cancelling and "cancelling" in jobs.of(first).title()


def test_training_curve_is_kept_thinned_and_drawn(worker, tmp_path):
    props = bpy.context.scene.dff
    props.workspace_path = str(tmp_path)
    bpy.ops.dff.train()
    sent = worker.sent[-1]
    for step in range(1, 601):  # PSNR rising from 10 to 30 dB
        worker.progress(sent, {"stage": "nerf", "step": step, "total": 600,
                               "metrics": {"loss": 0.01, "psnr": 10 + 20 * step / 600}})
    worker.progress(sent, {"stage": "features", "step": 1, "total": 10, "metrics": {"psnr": 99.0}})
    blender_dff.worker.session.pump()
    steps = [p.step for p in props.training_curve]
    assert 128 <= len(steps) <= 256 and steps[0] == 1 and steps[-1] == 600 and np.all(np.diff(steps) > 0)
    assert props.training_curve[-1].psnr == pytest.approx(30.0)

    image = bpy.data.images["DFF Training Curve"]
    width, height = image.size
    pixels = np.array(image.pixels[:]).reshape(height, width, 4)  # bottom row first
    line = np.all(np.abs(pixels[..., :3] - np.array([255, 170, 40]) / 255) < 0.01, axis=-1)
    assert line.any(axis=0).all()  # the line crosses every column, without gaps
    assert line[:, 0].nonzero()[0].max() < height // 4 and line[:, -1].nonzero()[0].min() > 3 * height // 4
    assert image.preview is not None and tuple(image.preview.image_size) == (width, height)

    worker.reply(sent, mesh_reply(*cube_arrays(cuts=1)))
    blender_dff.worker.session.pump()
    bpy.ops.dff.train()  # a new run from step 1 starts a new curve
    worker.progress(worker.sent[-1], {"stage": "nerf", "step": 1, "total": 10, "metrics": {"psnr": 12.0}})
    blender_dff.worker.session.pump()
    assert [(p.step, p.psnr) for p in props.training_curve] == [(1, 12.0)]


def test_worker_error_reply_is_shown(worker):
    make_mesh(worker)
    assert bpy.ops.dff.select_text(text="unicorn") == {'FINISHED'}
    worker.reply(worker.sent[0], Reply.failure("unknown_label", "no label 'unicorn'",
                                               "Known labels: mug, table"))
    blender_dff.worker.session.pump()
    props = bpy.context.scene.dff
    assert (props.error_code, props.error, props.error_hint) == (
        "unknown_label", "no label 'unicorn'", "Known labels: mug, table")


def test_worker_that_fails_to_start_reports_why(addon, tmp_path):
    from blender_dff.worker import session as worker_session

    failing = [sys.executable, "-c", "import sys; sys.exit('no torch in this Python')"]
    worker_session.session().use_client(WorkerClient(command=failing))
    props = bpy.context.scene.dff
    props.dataset_path = str(tmp_path)
    assert bpy.ops.dff.import_dataset() == {'FINISHED'}
    pump_until(lambda: bool(props.error), seconds=30)
    assert props.error_code == "worker_start_failed"
    assert "no torch in this Python" in props.error_hint


def test_missing_interpreter_is_reported_before_starting(addon):
    from blender_dff.preferences import WorkerSettings
    from blender_dff.worker.session import WorkerUnavailable, make_client

    with pytest.raises(WorkerUnavailable, match="worker Python not found: '/nowhere/py'"):
        make_client(WorkerSettings(python="/nowhere/py"))
    with pytest.raises(WorkerUnavailable, match="no worker Python yet: create the worker environment"):
        make_client(WorkerSettings(python=""))  # never Blender's own interpreter
    with pytest.raises(WorkerUnavailable, match="needs a port and a token"):
        make_client(WorkerSettings(python=sys.executable, host="gpu.example"))


def test_clip_teacher_sends_its_model_and_queries_their_comparison(worker, tmp_path):
    props = bpy.context.scene.dff
    props.workspace_path = str(tmp_path)
    props.teacher = 'clip'
    props.clip_model, props.clip_pretrained = "ViT-L-14", str(tmp_path / "clip.bin")
    bpy.ops.dff.train()
    sent = worker.sent[-1]
    assert (sent.params["teacher"], sent.params["clip_model"]) == ("clip", "ViT-L-14")
    assert sent.params["clip_pretrained"] == str(tmp_path / "clip.bin")
    props.clip_pretrained = "laion2b_s34b_b88k"  # a tag goes as it is
    jobs.clear()
    bpy.ops.dff.train()
    assert worker.sent[-1].params["clip_pretrained"] == "laion2b_s34b_b88k"
    jobs.clear()
    make_mesh(bpy.context)
    props.workspace_path = str(tmp_path)
    bpy.ops.dff.select_text(text="mug")
    params = worker.sent[-1].params
    assert params["negatives"] == "object, things, stuff, texture" and "label_set" not in params
    props.text_mode = 'LABEL_SET'
    with pytest.raises(RuntimeError, match="label set is empty"):
        bpy.ops.dff.select_text(text="mug")
    props.label_set = "mug, table, floor"
    bpy.ops.dff.select_text(text="mug")
    params = worker.sent[-1].params
    assert params["label_set"] == "mug, table, floor" and "negatives" not in params


def heat_map(obj) -> np.ndarray:
    """The heat map's colour of each face (its first corner), object mode."""
    from blender_dff.scene.heat_map import HEAT_ATTR

    colours = read(obj.data.color_attributes[HEAT_ATTR].data, "color", np.float32, 4)
    first_loop = read(obj.data.polygons, "loop_start", np.int32)
    return colours[first_loop]


def test_heat_map_shows_relevancy_and_follows_the_threshold(worker):
    obj, (_, faces, _) = make_mesh(worker)
    probability = np.linspace(0.0, 1.0, len(faces), dtype=np.float32)
    bpy.ops.dff.select_text(text="mug")
    worker.reply(worker.sent[-1], query_reply(probability))
    blender_dff.worker.session.pump()
    bpy.ops.object.mode_set(mode='OBJECT')
    before = heat_map(obj)
    brightness = before[:, :3].sum(1)
    assert brightness[probability > 0.5].min() > brightness[probability <= 0.5].max()  # dimmed below
    assert not np.allclose(before[probability > 0.5][0], before[probability > 0.5][-1])  # a ramp, not a flat colour

    slide(0.2)  # object mode
    after = heat_map(obj)
    newly = (probability > 0.2) & (probability <= 0.5)
    assert (after[newly, :3].sum(1) > before[newly, :3].sum(1)).all()
    assert np.allclose(after[probability > 0.5], before[probability > 0.5])
    bpy.ops.object.mode_set(mode='EDIT')
    slide(0.9)  # edit mode
    bpy.ops.object.mode_set(mode='OBJECT')
    dimmed = (probability > 0.2) & (probability <= 0.9)
    assert (heat_map(obj)[dimmed, :3].sum(1) < after[dimmed, :3].sum(1)).all()
    assert len(worker.sent) == 1


def test_long_queries_are_sent_whole_and_name_things_within_blenders_limit(worker):
    from blender_dff.scene.selection import MASK_PREFIX

    obj, (_, faces, _) = make_mesh(worker)
    query = "the small red ceramic mug with a chipped handle on the kitchen table " * 2
    bpy.ops.dff.select_text(text=query)
    assert worker.sent[-1].params["text"] == query.strip()
    worker.reply(worker.sent[-1], query_reply(np.ones(len(faces), np.float32)))
    blender_dff.worker.session.pump()
    (group,) = obj.vertex_groups
    assert query.startswith(group.name) and len(group.name.encode()) <= 63 - len(MASK_PREFIX)
    bpy.ops.dff.select_text(text="chair " * 80)
    worker.reply(worker.sent[-1], Reply.failure("query_too_long", "the query is longer than the 77 tokens",
                                                "Use a shorter phrase."))
    blender_dff.worker.session.pump()
    assert bpy.context.scene.dff.error_code == "query_too_long"


# --- bad input ------------------------------------------------------------------------


@pytest.mark.parametrize("call, expected", [
    (lambda: bpy.ops.dff.select_text(text="mug"), "no DFF mesh yet"),
    (lambda: bpy.ops.dff.separate(), "no DFF mesh yet"),
    (lambda: bpy.ops.dff.import_dataset(), "set the dataset folder"),
    (lambda: bpy.ops.dff.train(), "set the workspace folder"),
])
def test_operators_report_bad_input(worker, call, expected):
    with pytest.raises(RuntimeError, match=expected):
        call()
    assert not worker.sent


def test_operators_report_empty_query_and_missing_dataset(worker, tmp_path):
    from blender_dff.scene.selection import apply_query

    obj, (_, faces, _) = make_mesh(worker)
    props = bpy.context.scene.dff
    props.query_text = "   "
    with pytest.raises(RuntimeError, match="query is empty"):
        bpy.ops.dff.select_text()
    props.dataset_path = str(tmp_path / "missing")
    with pytest.raises(RuntimeError, match="dataset folder not found"):
        bpy.ops.dff.import_dataset()
    with pytest.raises(RuntimeError, match="no query yet"):
        bpy.ops.dff.separate()
    apply_query(bpy.context, "mug", query_reply(np.zeros(len(faces), dtype=np.float32)), obj.name)
    with pytest.raises(RuntimeError, match="no faces of 'DFF Mesh' are selected"):
        bpy.ops.dff.separate()
    assert not worker.sent
