"""Click select and Select Similar in real Blender (the bpy module, headless), against a
scripted worker. The modal part of the click needs real mouse events, so its pieces (finding
the viewport under the mouse, the ray through a pixel, presses and releases becoming clicks
and boxes) are tested on their own."""

from __future__ import annotations

import math
from types import SimpleNamespace

import bpy
import bmesh  # noqa: E402 -- importable only once bpy is
import numpy as np
import pytest
from bpy_extras import view3d_utils
from mathutils import Euler, Matrix, Vector

import blender_dff
from addon_helpers import ScriptedClient, cube_arrays, edit_mode_selection, mesh_reply, query_reply, read
from blender_dff.worker.client import Reply

WORKSPACE = "/tmp/dff_workspace"  # sent to the worker, never touched here


def load_mesh(worker: ScriptedClient) -> tuple[bpy.types.Object, int]:
    """"DFF Mesh" as Load Mesh brings it in; the worker's last face is degenerate, so
    Blender drops it. Returns the object and the worker's face count."""
    vertices, faces, colors = cube_arrays()
    faces = np.vstack([faces, [[0, 0, 1]]]).astype(np.int32)
    bpy.context.scene.dff.workspace_path = WORKSPACE
    assert bpy.ops.dff.load_mesh() == {'FINISHED'}
    worker.reply(worker.sent[-1], mesh_reply(vertices, faces, colors))
    blender_dff.worker.session.pump()
    obj = bpy.context.scene.dff.mesh_object
    assert len(obj.data.polygons) == len(faces) - 1
    return obj, len(faces)


def face_index(obj: bpy.types.Object) -> np.ndarray:
    """The worker's index of each face (object mode only: edit mode hides attribute data)."""
    return read(obj.data.attributes["dff_face_index"].data, "value", np.int32)


def deliver(worker: ScriptedClient, reply: Reply) -> None:
    worker.reply(worker.sent[-1], reply)
    blender_dff.worker.session.pump()


# --- click ------------------------------------------------------------------------------


def ray(origin, direction, on_object=True) -> dict:
    """A click as the operator's `clicks` and `box` take it (Blender wants every key)."""
    return {"name": "", "origin": origin, "direction": direction, "on_object": on_object}


def test_click_sends_the_ray_and_selects_the_label_under_it(worker):
    obj, n_faces = load_mesh(worker)
    index = face_index(obj)
    assert bpy.ops.dff.click_select(clicks=[ray((0.1, 0.2, 5.0), (0.0, 0.0, -2.0))]) == {'FINISHED'}
    sent = worker.sent[-1]
    assert sent.method == "query_click"
    assert sent.params == {"workspace": WORKSPACE, "teacher": "labels", "clicks": [
        {"origin": pytest.approx([0.1, 0.2, 5.0]), "direction": [0.0, 0.0, -1.0], "object": True}]}
    click = sent.params["clicks"][0]
    assert all(type(value) is float for value in click["origin"] + click["direction"])

    probability = np.random.default_rng(3).uniform(0.0, 1.0, n_faces)
    deliver(worker, query_reply(probability, query="mug", hit_face=4))
    props = bpy.context.scene.dff
    assert np.array_equal(edit_mode_selection(obj), probability[index] > 0.5)
    assert "mug" in obj.vertex_groups
    assert props.active_query == "mug" and "'mug': selected" in props.message


def test_clicks_to_leave_out_and_a_box_are_sent_together(worker):
    load_mesh(worker)
    corners = [ray((x, y, 5.0), (0.0, 0.0, -1.0)) for x, y in ((-1, -1), (1, -1), (1, 1), (-1, 1))]
    assert bpy.ops.dff.click_select(clicks=[ray((0, 0, 5), (0, 0, -1)), ray((0.5, 0, 5), (0, 0, -1), False)],
                                    box=corners) == {'FINISHED'}
    params = worker.sent[-1].params
    assert [click["object"] for click in params["clicks"]] == [True, False]
    assert [corner["origin"] for corner in params["box"]] == [
        pytest.approx([x, y, 5.0]) for x, y in ((-1, -1), (1, -1), (1, 1), (-1, 1))]
    with pytest.raises(RuntimeError, match="4 corner rays"):
        bpy.ops.dff.click_select(box=corners[:2])


def test_multi_view_reply_says_how_many_views_voted(worker):
    obj, n_faces = load_mesh(worker)
    bpy.ops.dff.click_select(clicks=[ray((0, 0, 5), (0, 0, -1))])
    deliver(worker, query_reply(np.ones(n_faces), query="click", hit_face=0, views=7))
    assert bpy.context.scene.dff.message.endswith("(7 views)")


def test_click_ray_is_sent_in_the_frame_of_a_moved_mesh(worker):
    obj, _ = load_mesh(worker)
    obj.location = (1.0, -2.0, 0.5)
    obj.rotation_euler = Euler((0.3, 0.0, math.pi / 2))
    obj.scale = (2.0, 2.0, 2.0)
    bpy.context.view_layer.update()
    origin, direction = Vector((4.0, 1.0, 3.0)), Vector((-1.0, 0.5, -1.0))
    assert bpy.ops.dff.click_select(clicks=[ray(origin, direction)]) == {'FINISHED'}

    # Two world points of the ray, taken to the mesh's frame, lie on the ray sent.
    to_local = obj.matrix_world.inverted()
    start, further = to_local @ origin, to_local @ (origin + direction)
    click = worker.sent[-1].params["clicks"][0]
    assert click["origin"] == pytest.approx(list(start), abs=1e-5)
    assert click["direction"] == pytest.approx(list((further - start).normalized()), abs=1e-5)


def test_click_beside_the_mesh_leaves_the_selection(worker):
    obj, n_faces = load_mesh(worker)
    probability = np.linspace(0.0, 1.0, n_faces)
    assert bpy.ops.dff.click_select(clicks=[ray((0, 0, 5), (0, 0, -1))]) == {'FINISHED'}
    deliver(worker, query_reply(probability, query="mug", hit_face=0))
    before = edit_mode_selection(obj)

    assert bpy.ops.dff.click_select(clicks=[ray((0, 0, 5), (0, 0, 1))]) == {'FINISHED'}
    deliver(worker, Reply.failure("no_hit", "nothing of the mesh under the cursor",
                                  "Click on the mesh."))
    props = bpy.context.scene.dff
    assert np.array_equal(edit_mode_selection(obj), before)
    assert props.active_query == "mug"
    assert props.message == "nothing of the mesh under the cursor" and not props.error


def test_click_reply_without_a_label_is_an_error(worker):
    obj, n_faces = load_mesh(worker)
    assert bpy.ops.dff.click_select(clicks=[ray((0, 0, 5), (0, 0, -1))]) == {'FINISHED'}
    deliver(worker, query_reply(np.ones(n_faces), query="  ", hit_face=0))
    props = bpy.context.scene.dff
    assert props.error_code == "apply_failed" and "query is empty" in props.error
    assert not props.active_query and not obj.vertex_groups


def test_cancelling_takes_back_what_the_click_selected(worker):
    from blender_dff.scene.selection import clear_query

    obj, n_faces = load_mesh(worker)
    bpy.ops.dff.click_select(clicks=[ray((0, 0, 5), (0, 0, -1))])
    deliver(worker, query_reply(np.ones(n_faces), query="mug", hit_face=0))
    assert edit_mode_selection(obj).all()
    clear_query(bpy.context, obj, "mug")
    props = bpy.context.scene.dff
    assert not any(p.select for p in obj.data.polygons)
    assert "mug" not in obj.vertex_groups and "dff_mug" not in obj.data.attributes
    assert props.active_query == ""


@pytest.mark.parametrize("events, clicks, box", [
    ([((10, 10), (11, 12), {})], [((11, 12), True)], None),  # a click (a little jitter is no drag)
    ([((10, 10), (10, 10), {}), ((30, 30), (30, 30), {"add": True})], [((10, 10), True), ((30, 30), True)], None),
    ([((10, 10), (10, 10), {}), ((30, 30), (30, 30), {"leave_out": True})],
     [((10, 10), True), ((30, 30), False)], None),
    ([((10, 10), (10, 10), {}), ((30, 30), (30, 30), {})], [((30, 30), True)], None),  # a new click starts over
    ([((10, 10), (10, 10), {}), ((5, 5), (60, 40), {})], [], ((5, 5), (60, 40))),  # a drag replaces the clicks
    ([((10, 10), (10, 10), {}), ((5, 5), (60, 40), {"add": True})], [((10, 10), True)], ((5, 5), (60, 40))),
])
def test_presses_and_releases_become_clicks_and_boxes(addon, events, clicks, box):
    from blender_dff.operators.click import PromptBuilder

    prompt = PromptBuilder()
    for start, end, modifiers in events:
        prompt.press(start)
        assert prompt.release(end, add=modifiers.get("add", False), leave_out=modifiers.get("leave_out", False))
    assert prompt.clicks == clicks and prompt.box == box
    assert not prompt.release((0, 0), add=False, leave_out=False)  # a release without a press
    if box:
        assert prompt.box_corners() == [(5, 5), (60, 5), (60, 40), (5, 40)]


def test_only_clicks_to_leave_out_are_no_prompt(addon):
    from blender_dff.operators.click import PromptBuilder

    prompt = PromptBuilder(clicks=[((3, 3), False)])
    assert not prompt.has_object()
    prompt.press((4, 4))
    prompt.release((4, 4), add=True, leave_out=False)
    assert prompt.has_object()


# --- select similar ---------------------------------------------------------------------


@pytest.mark.parametrize("mode", ['OBJECT', 'EDIT'])
def test_select_similar_sends_the_selection_in_worker_order(worker, mode):
    from blender_dff.scene.modes import set_mode

    obj, n_faces = load_mesh(worker)
    mesh = obj.data
    rng = np.random.default_rng(4)
    # Faces in another order than the worker's, as after a separate and a re-import.
    permutation = rng.permutation(len(mesh.polygons)).astype(np.int32)
    mesh.attributes["dff_face_index"].data.foreach_set("value", permutation)
    chosen = rng.uniform(size=len(mesh.polygons)) < 0.3
    if mode == 'OBJECT':
        mesh.polygons.foreach_set("select", chosen)
    else:
        set_mode(bpy.context, obj, 'EDIT')
        bm = bmesh.from_edit_mesh(mesh)
        for face, flag in zip(bm.faces, chosen):
            face.select_set(bool(flag))
        bmesh.update_edit_mesh(mesh)

    assert bpy.ops.dff.select_similar() == {'FINISHED'}
    sent = worker.sent[-1]
    assert (sent.method, sent.params) == ("query_similar", {"workspace": WORKSPACE, "teacher": "labels"})
    selected = sent.arrays["selected"]
    expected = np.zeros(n_faces, dtype=bool)
    expected[permutation[chosen]] = True
    assert selected.dtype == np.bool_ and np.array_equal(selected, expected)

    similarity = rng.uniform(0.0, 1.0, n_faces)
    deliver(worker, query_reply(similarity))
    props = bpy.context.scene.dff
    assert np.array_equal(edit_mode_selection(obj), similarity[permutation] > 0.5)
    assert props.active_query == "similar" and "similar" in obj.vertex_groups


def test_select_similar_needs_a_selection(worker):
    obj, _ = load_mesh(worker)
    obj.data.polygons.foreach_set("select", np.zeros(len(obj.data.polygons), dtype=bool))
    with pytest.raises(RuntimeError, match="select some faces first"):
        bpy.ops.dff.select_similar()
    assert [sent.method for sent in worker.sent] == ["get_mesh"]


@pytest.mark.parametrize("call, expected", [
    (lambda: bpy.ops.dff.click_select(clicks=[ray((0, 0, 1), (0, 0, -1))]), "no DFF mesh yet"),
    (lambda: bpy.ops.dff.select_similar(), "no DFF mesh yet"),
])
def test_operators_need_the_dff_mesh(worker, call, expected):
    with pytest.raises(RuntimeError, match=expected):
        call()
    assert not worker.sent


def test_click_without_direction_is_refused(worker):
    load_mesh(worker)
    with pytest.raises(RuntimeError, match="no direction"):
        bpy.ops.dff.click_select(clicks=[ray((0, 0, 1), (0, 0, 0))])
    assert [sent.method for sent in worker.sent] == ["get_mesh"]


# --- from the mouse to the ray -----------------------------------------------------------


def viewport(screen: bpy.types.Screen) -> tuple[bpy.types.Area, bpy.types.Region]:
    area = next(area for area in screen.areas if area.type == 'VIEW_3D')
    return area, next(region for region in area.regions if region.type == 'WINDOW')


def test_viewport_under_the_mouse(addon):
    from blender_dff.operators.click import viewport_at

    screen = bpy.context.window.screen
    area, window = viewport(screen)
    tools = next(region for region in area.regions if region.type == 'TOOLS')
    x, y = window.x + window.width // 2, window.y + window.height // 3
    assert viewport_at(screen, x, y) == (window, (x - window.x, y - window.y))
    assert viewport_at(screen, tools.x + tools.width // 2, y) is None
    other = next(area for area in screen.areas if area.type != 'VIEW_3D')
    assert viewport_at(screen, other.x + 5, other.y + 5) is None


def orthographic_view(region: bpy.types.Region) -> SimpleNamespace:
    """RegionView3D's matrices of an orthographic view: background Blender never draws,
    so it cannot compute them for a real view switched to orthographic."""
    view = (Matrix.Translation((0.0, 0.0, -10.0)) @ Euler((0.4, 0.2, 0.3)).to_matrix().to_4x4())
    half_width, near, far = 4.0, 0.1, 100.0
    half_height = half_width * region.height / region.width
    window = Matrix(((1 / half_width, 0, 0, 0), (0, 1 / half_height, 0, 0),
                     (0, 0, -2 / (far - near), -(far + near) / (far - near)), (0, 0, 0, 1)))
    return SimpleNamespace(is_perspective=False, view_perspective='ORTHO', view_matrix=view,
                           window_matrix=window, perspective_matrix=window @ view)


@pytest.mark.parametrize("projection", ["perspective", "orthographic"])
def test_click_ray_passes_through_the_clicked_point(addon, projection):
    from blender_dff.operators.click import click_ray

    area, region = viewport(bpy.context.window.screen)
    rv3d = area.spaces.active.region_3d  # the startup file's perspective view
    if projection == "orthographic":
        rv3d = orthographic_view(region)
    for point in (Vector((0.0, 0.0, 0.0)), Vector((0.7, -0.4, 0.9))):
        coord = view3d_utils.location_3d_to_region_2d(region, rv3d, point)
        assert 0 < coord.x < region.width and 0 < coord.y < region.height
        origin, direction = click_ray(region, rv3d, coord)
        assert direction.length == pytest.approx(1.0)
        along = (point - origin).dot(direction)
        assert along > 0.0  # in front of the viewer
        assert (origin + along * direction - point).length < 1e-3 * max(along, 1.0)
