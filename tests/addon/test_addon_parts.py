"""Separate All and Link Mesh in real Blender (the bpy module, headless), through the operators,
with the worker's `split` replies scripted in the shape `wire.api.SPLIT` describes. Everything is
read back from Blender's arrays."""

from __future__ import annotations

import bpy
import bmesh  # noqa: E402 -- importable only once bpy is
import numpy as np
import pytest
from mathutils import Matrix

import blender_dff
from addon_helpers import ScriptedClient, cube_arrays, edit_mode_selection, mesh_reply, query_reply, read, slide
from blender_dff import jobs
from blender_dff.worker.client import Reply

FACE_INDEX, VERTEX_INDEX = "dff_face_index", "dff_vertex_index"
PATCH_RGB = (255, 0, 0)


def open_box_on_a_floor() -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """The worker's mesh: a triangulated box without its bottom, above a floor (two triangles
    after the box's). Returns vertices, faces, colours and the box's face count."""
    bm = bmesh.new()
    bmesh.ops.create_cube(bm, size=2.0)
    bmesh.ops.subdivide_edges(bm, edges=bm.edges[:], cuts=1, use_grid_fill=True)
    bmesh.ops.delete(bm, geom=[f for f in bm.faces if f.calc_center_median().z < -0.99], context='FACES')
    bmesh.ops.triangulate(bm, faces=bm.faces[:])
    bm.verts.ensure_lookup_table()
    bm.verts.index_update()
    box_vertices = np.array([v.co for v in bm.verts], np.float32)
    box = np.array([[v.index for v in f.verts] for f in bm.faces], np.int32)
    bm.free()
    n = len(box_vertices)
    floor_vertices = np.array([[-3, -3, -1.5], [3, -3, -1.5], [3, 3, -1.5], [-3, 3, -1.5]], np.float32)
    floor = np.array([[n, n + 1, n + 2], [n, n + 2, n + 3]], np.int32)
    vertices = np.concatenate([box_vertices, floor_vertices])
    return vertices, np.concatenate([box, floor]), (vertices + 3.0) / 6.0, len(box)


def boundary_fan(faces: np.ndarray, centre: int) -> np.ndarray:
    """Triangles from each open edge of `faces` to the vertex `centre`, turned to match."""
    edges = np.stack([faces.ravel(), np.roll(faces, -1, axis=1).ravel()], axis=1)
    keys = {tuple(edge) for edge in edges.tolist()}
    open_edges = [(a, b) for a, b in keys if (b, a) not in keys]
    return np.array([[b, a, centre] for a, b in open_edges], np.int64).reshape(-1, 3)


def split_reply(vertices: np.ndarray, faces: np.ndarray, n_box: int) -> Reply:
    """The worker's answer: "box" (closed by a fan under it to a new vertex) and the background
    (with one triangle filling a hole, to another new vertex)."""
    n = len(vertices)
    box_patch = boundary_fan(faces[:n_box], n)  # index n: the first patch vertex
    floor_patch = np.array([[faces[n_box][0], faces[n_box][1], n + 1]], np.int64)
    patch_faces = np.concatenate([box_patch, floor_patch])
    return Reply(ok=True, result={"names": ["box", "background"], "closed": [True, False]}, arrays={
        "face_part": np.r_[np.zeros(n_box), np.ones(len(faces) - n_box)].astype(np.int32),
        "patch_vertices": np.array([[0, 0, -1], [0, 0, -1.5]], np.float32),
        "patch_colors": np.array([PATCH_RGB, (0, 0, 255)], np.uint8),
        "patch_faces": patch_faces,
        "patch_part": np.r_[np.zeros(len(box_patch)), 1].astype(np.int64)})


def load(worker: ScriptedClient, arrays: tuple) -> bpy.types.Object:
    bpy.context.scene.dff.workspace_path = "/tmp/dff_workspace"  # never touched here
    assert bpy.ops.dff.load_mesh() == {'FINISHED'}
    worker.reply(worker.sent[-1], mesh_reply(*arrays))
    blender_dff.worker.session.pump()
    return bpy.context.scene.dff.mesh_object


def query(worker: ScriptedClient, text: str, probability: np.ndarray) -> None:
    assert bpy.ops.dff.select_text(text=text) == {'FINISHED'}
    worker.reply(worker.sent[-1], query_reply(probability.astype(np.float32)))
    blender_dff.worker.session.pump()
    assert not bpy.context.scene.dff.error, bpy.context.scene.dff.error


def separate_all(worker: ScriptedClient, reply: Reply) -> None:
    assert bpy.ops.dff.separate_all() == {'FINISHED'}
    assert worker.sent[-1].method == "split" and jobs.running(bpy.context.scene)
    worker.reply(worker.sent[-1], reply)
    blender_dff.worker.session.pump()
    assert not jobs.running(bpy.context.scene)


def face_index(obj: bpy.types.Object) -> np.ndarray:
    return read(obj.data.attributes[FACE_INDEX].data, "value", np.int32)


def is_closed(mesh: bpy.types.Mesh) -> bool:
    """Every edge between exactly two faces."""
    return bool((np.bincount(read(mesh.loops, "edge_index", np.int32), minlength=len(mesh.edges)) == 2).all())


@pytest.mark.parametrize("cut_from", ["mesh", "part"])
def test_separate_all_gives_an_object_per_part_closed_by_its_patch(worker, cut_from):
    vertices, faces, colors, n_box = open_box_on_a_floor()
    obj = load(worker, (vertices, faces, colors))
    n_uv = len(obj.data.loops)
    uv = obj.data.uv_layers.new(name="UVMap")
    uv.data.foreach_set("uv", np.linspace(0, 1, 2 * n_uv, dtype=np.float32))
    corners = np.c_[np.repeat(face_index(obj), 3), np.tile(np.arange(3), len(obj.data.polygons))]
    worker_uv = dict(zip(map(tuple, corners), read(uv.data, "uv", np.float32, 2)))
    if cut_from == "part":  # Separate first, then Separate All on the part: the floor's patch is left out
        query(worker, "cube", np.r_[np.ones(n_box), np.zeros(len(faces) - n_box)])
        assert bpy.ops.dff.separate() == {'FINISHED'}
        obj = bpy.data.objects["cube"]
    obj.matrix_world = Matrix.Translation((1, 2, 3)) @ Matrix.Rotation(0.5, 4, 'Z')
    before = face_index(obj)
    separate_all(worker, split_reply(vertices, faces, n_box))
    props = bpy.context.scene.dff
    assert not props.error, props.error

    collection = bpy.data.collections[f"{obj.name} parts"]
    parts = {part.name: part for part in collection.objects}
    assert set(parts) == ({"box", "background"} if cut_from == "mesh" else {"box"})
    assert ("left out" in props.message) == (cut_from == "part")
    assert obj.hide_get() and obj.hide_render and props.mesh_object.name == "DFF Mesh"
    assert all(part.select_get() for part in parts.values())
    worker_faces = np.concatenate([face_index(part) for part in parts.values()])
    assert np.array_equal(np.sort(worker_faces[worker_faces >= 0]), np.sort(before))  # each face once

    box = parts["box"]
    box_index = face_index(box)
    assert np.array_equal(np.sort(box_index[box_index >= 0]), np.arange(n_box))
    assert (box_index < 0).sum() == 4 * 2 and is_closed(box.data)  # the fan closes the 4 x 2 open edges
    if cut_from == "mesh":
        assert (face_index(parts["background"]) < 0).sum() == 1
    for part in parts.values():
        assert not part.data.validate(verbose=False), part.name  # nothing for Blender to mend
        np.testing.assert_allclose(np.array(part.matrix_world), np.array(obj.matrix_world), atol=1e-6)
        assert part.data.materials[0] == obj.data.materials[0]
        assert part.data["dff_mesh_id"] == obj.data["dff_mesh_id"]
        part_vertices = read(part.data.vertices, "co", np.float32, 3)
        part_colors = read(part.data.color_attributes["Col"].data, "color_srgb", np.float32, 4)[:, :3]
        worker_vertex = read(part.data.attributes[VERTEX_INDEX].data, "value", np.int32)
        known = worker_vertex >= 0
        np.testing.assert_allclose(part_vertices[known], vertices[worker_vertex[known]], atol=1e-6)
        np.testing.assert_allclose(part_colors[known], colors[worker_vertex[known]], atol=1e-4)
        part_uv = read(part.data.uv_layers["UVMap"].data, "uv", np.float32, 2)
        corner = np.c_[np.repeat(face_index(part), 3), np.tile(np.arange(3), len(part.data.polygons))]
        for key, value in zip(map(tuple, corner), part_uv):
            if key[0] >= 0:
                np.testing.assert_array_equal(value, worker_uv[key])
    box_vertices = read(box.data.vertices, "co", np.float32, 3)
    patch_vertex = read(box.data.attributes[VERTEX_INDEX].data, "value", np.int32) < 0
    np.testing.assert_allclose(box_vertices[patch_vertex], [[0, 0, -1]])
    colour = read(box.data.color_attributes["Col"].data, "color_srgb", np.float32, 4)[patch_vertex][0]
    np.testing.assert_allclose(colour, [1, 0, 0, 1], atol=1e-4)


def test_one_undo_brings_back_the_mesh_before_separate_all(worker):
    vertices, faces, colors, n_box = open_box_on_a_floor()
    load(worker, (vertices, faces, colors))
    bpy.ops.ed.undo_push(message="Before")
    objects = {obj.name for obj in bpy.data.objects}
    separate_all(worker, split_reply(vertices, faces, n_box))
    assert "DFF Mesh parts" in bpy.data.collections
    bpy.ops.ed.undo()
    scene = bpy.context.scene  # undo reloads the data: earlier references are stale
    assert {obj.name for obj in bpy.data.objects} == objects and "DFF Mesh parts" not in bpy.data.collections
    obj = scene.dff.mesh_object
    assert not obj.hide_get() and not obj.hide_render and len(obj.data.polygons) == len(faces)


def test_separate_all_sends_the_options_and_the_clip_label_set(worker):
    obj = load(worker, cube_arrays(cuts=1))
    assert bpy.ops.dff.separate_all(close=False) == {'FINISHED'}
    sent = worker.sent[-1]
    assert sent.params == {"workspace": "/tmp/dff_workspace", "mesh_id": obj.data["dff_mesh_id"],
                           "teacher": "labels", "close": False, "fill_holes": True}
    assert not bpy.ops.dff.separate_all.poll() and not bpy.ops.dff.train.poll()  # one job at a time
    worker.reply(sent, Reply.failure("cancelled", "cancelled by the user", ""))
    blender_dff.worker.session.pump()
    props = bpy.context.scene.dff
    props.teacher = 'clip'
    with pytest.raises(RuntimeError, match="label set is empty"):
        bpy.ops.dff.separate_all()
    props.label_set = "chair, table"
    assert bpy.ops.dff.separate_all() == {'FINISHED'}
    assert worker.sent[-1].params["label_set"] == "chair, table"


@pytest.mark.parametrize("change, expected", [
    (lambda r: r.arrays.update(face_part=r.arrays["face_part"][:-1]), "Load Mesh"),
    (lambda r: r.arrays.update(face_part=r.arrays["face_part"] + 5), "face_part"),
    (lambda r: r.arrays.pop("face_part"), "face_part"),
    (lambda r: r.arrays.update(patch_faces=r.arrays["patch_faces"] + 1000), "patch_faces"),
    (lambda r: r.arrays.update(patch_colors=r.arrays["patch_colors"] / 255.0), "patch_colors"),
    (lambda r: r.result.update(names=[]), "names no parts"),
])
def test_a_bad_split_reply_is_refused_and_changes_nothing(worker, change, expected):
    vertices, faces, colors, n_box = open_box_on_a_floor()
    obj = load(worker, (vertices, faces, colors))
    objects = set(bpy.data.objects)
    reply = split_reply(vertices, faces, n_box)
    change(reply)
    separate_all(worker, reply)
    props = bpy.context.scene.dff
    assert props.error_code == "apply_failed" and expected in props.error, props.error
    assert set(bpy.data.objects) == objects and not obj.hide_get()


def test_faces_closing_a_part_are_none_of_the_workers_to_queries(worker):
    """Index -1 is no face of the worker's: probability 0 (not the worker's last face's), never
    selected, left out of Select Similar's selection, (0, 0) in a bake's UVs."""
    vertices, faces, colors, n_box = open_box_on_a_floor()
    load(worker, (vertices, faces, colors))
    separate_all(worker, split_reply(vertices, faces, n_box))
    box = bpy.data.objects["box"]
    bpy.context.view_layer.objects.active = box
    patch = face_index(box) < 0
    probability = np.full(len(faces), 0.2, np.float32)
    probability[-1] = 1.0  # the floor's: what face -1 would wrongly read
    query(worker, "lid", probability)
    assert bpy.context.scene.dff.query_object == box
    assert not edit_mode_selection(box).any()
    bpy.ops.object.mode_set(mode='OBJECT')
    stored = read(box.data.attributes["dff_probability"].data, "value", np.float32)
    np.testing.assert_array_equal(stored, np.where(patch, 0.0, 0.2).astype(np.float32))
    slide(0.1)
    assert np.array_equal(read(box.data.polygons, "select", bool), ~patch)

    bpy.ops.object.mode_set(mode='EDIT')
    bpy.ops.mesh.select_all(action='SELECT')
    assert bpy.ops.dff.select_similar() == {'FINISHED'}
    selected = worker.sent[-1].arrays["selected"]
    assert np.array_equal(np.flatnonzero(selected), np.arange(n_box))  # not the floor's last face

    bpy.ops.object.mode_set(mode='OBJECT')
    # The whole mesh's bake (its parts take their faces' share of it): the scene's mesh active.
    bpy.context.view_layer.objects.active = bpy.context.scene.dff.mesh_object
    uv = np.random.default_rng(0).uniform(0.1, 1.0, (len(faces), 3, 2)).astype(np.float32)
    assert bpy.ops.dff.bake_texture() == {'FINISHED'}
    assert "faces" not in worker.sent[-1].arrays
    texture = np.zeros((4, 4, 3), np.uint8)
    worker.reply(worker.sent[-1], Reply(ok=True, result={}, arrays={"uv": uv, "texture": texture}))
    blender_dff.worker.session.pump()
    assert not bpy.context.scene.dff.error, bpy.context.scene.dff.error
    box_uv = read(box.data.uv_layers["DFF UV"].data, "uv", np.float32, 2).reshape(-1, 3, 2)
    np.testing.assert_array_equal(box_uv[patch], 0.0)
    np.testing.assert_allclose(box_uv[~patch], uv[face_index(box)[~patch]])


def area_iou(mesh: bpy.types.Mesh, selected: np.ndarray, truth: np.ndarray) -> float:
    area = read(mesh.polygons, "area", np.float32)
    return float(area[selected & truth].sum() / area[selected | truth].sum())


def test_a_remeshed_copy_linked_selects_and_separates_as_the_dff_mesh(worker):
    vertices, faces, colors = cube_arrays(cuts=3)
    dff = load(worker, (vertices, faces, colors))
    on_right = vertices[faces].mean(axis=1)[:, 0] > 0.99  # the +x side of the worker's cube
    scan = bpy.data.objects.new("Scan", dff.data.copy())
    bpy.context.scene.collection.objects.link(scan)
    remesh = scan.modifiers.new("Remesh", 'REMESH')
    remesh.mode, remesh.voxel_size = 'VOXEL', 0.1
    bpy.context.view_layer.objects.active = scan
    bpy.ops.object.mode_set(mode='OBJECT')
    bpy.ops.object.modifier_apply(modifier="Remesh")
    scan.data.transform(Matrix.Translation((-0.5, 0, 0)))  # the same place in the world, another origin
    scan.location = (0.5, 0, 0)
    bpy.context.view_layer.update()
    assert FACE_INDEX not in scan.data.attributes and len(scan.data.polygons) != len(faces)

    assert bpy.ops.dff.link_mesh() == {'FINISHED'}
    assert FACE_INDEX in scan.data.attributes and VERTEX_INDEX not in scan.data.attributes
    assert scan.data["dff_mesh_id"] == dff.data["dff_mesh_id"]
    query(worker, "right", on_right.astype(np.float32))  # the active object: the scan
    assert bpy.context.scene.dff.query_object == scan
    bpy.ops.object.mode_set(mode='OBJECT')
    selected = read(scan.data.polygons, "select", bool)
    facing_right = read(scan.data.polygons, "normal", np.float32, 3)[:, 0] > 0.7
    assert area_iou(scan.data, selected, facing_right) >= 0.95

    reply = split_reply(vertices, faces, 0)
    reply.result["names"] = ["right", "background"]
    reply.arrays["face_part"] = np.where(on_right, 0, 1).astype(np.int32)
    reply.arrays["patch_part"][:] = 0
    separate_all(worker, reply)
    props = bpy.context.scene.dff
    assert not props.error and "left out" in props.message, props.error or props.message
    parts = {part.name: part for part in bpy.data.collections["Scan parts"].objects}
    assert sum(len(part.data.polygons) for part in parts.values()) == len(scan.data.polygons)
    assert len(parts["right"].data.polygons) == selected.sum()
