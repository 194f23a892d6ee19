"""Click select and Select Similar in real Blender (the bpy module, headless), against a
scripted worker. Headless Blender sends no events to a modal operator, so the Click tool's
operator is driven here through its own methods, with mouse events and a 3D viewport whose view
the test sets; the pieces (the viewport under the mouse, the ray through a pixel, presses and
releases becoming clicks and boxes) are tested on their own too."""

from __future__ import annotations

import math
from types import FunctionType, SimpleNamespace

import bpy
import bmesh  # noqa: E402 -- importable only once bpy is
import numpy as np
import pytest
from bpy_extras import view3d_utils
from mathutils import Euler, Matrix, Vector

import blender_dff
from addon_helpers import (RecordingLayout, ScriptedClient, cube_arrays, edit_mode_selection, mesh_reply, query_reply,
                            read)
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
    assert sent.params == {"workspace": WORKSPACE, "teacher": "labels", "mesh_id": obj.data["dff_mesh_id"], "clicks": [
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


BOX = [(5, 5), (60, 5), (60, 40), (5, 40)]  # the corners of a drag from (5, 5) to (60, 40)


@pytest.mark.parametrize("events, clicks, box", [
    ([((10, 10), (11, 12), {})], [((11, 12), True)], None),  # a click (a little jitter is no drag)
    ([((10, 10), (10, 10), {}), ((30, 30), (30, 30), {"add": True})], [((10, 10), True), ((30, 30), True)], None),
    ([((10, 10), (10, 10), {}), ((30, 30), (30, 30), {"leave_out": True})],
     [((10, 10), True), ((30, 30), False)], None),
    ([((10, 10), (10, 10), {}), ((30, 30), (30, 30), {})], [((30, 30), True)], None),  # a new click starts over
    ([((10, 10), (10, 10), {}), ((5, 5), (60, 40), {})], [], BOX),  # a drag replaces the clicks
    ([((10, 10), (10, 10), {}), ((5, 5), (60, 40), {"add": True})], [((10, 10), True)], BOX),
])
def test_presses_and_releases_become_clicks_and_boxes(addon, events, clicks, box):
    from blender_dff.operators.click import PromptBuilder

    prompt = PromptBuilder()  # points stay pixels: the tool casts them into rays instead
    for start, end, modifiers in events:
        prompt.press(start)
        assert prompt.release(end, add=modifiers.get("add", False), leave_out=modifiers.get("leave_out", False))
    assert prompt.clicks == clicks and prompt.box == box
    assert not prompt.release((0, 0), add=False, leave_out=False)  # a release without a press


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
    assert (sent.method, sent.params) == ("query_similar", {"workspace": WORKSPACE, "teacher": "labels",
                                                            "mesh_id": mesh["dff_mesh_id"]})
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


# --- the Click tool ----------------------------------------------------------------------


class Collection(list):
    """Stands in for an operator's CollectionProperty of DFF_PG_prompt_ray."""

    def add(self) -> SimpleNamespace:
        self.append(SimpleNamespace(origin=None, direction=None, on_object=True))
        return self[-1]


def click_tool():
    """The Click tool's operator, its own methods on a plain object: Blender makes an operator
    instance only to run it, and headless Blender never runs a modal operator."""
    from blender_dff.operators.base import WorkerOperator
    from blender_dff.operators.click import DFF_OT_click_select

    methods = {name: value for name, value in vars(DFF_OT_click_select).items() if isinstance(value, FunctionType)}
    tool = type("ClickTool", (WorkerOperator,), methods)()
    tool.clicks, tool.box, tool.reports = Collection(), Collection(), []
    tool.report = lambda kind, message: tool.reports.append(message)
    return tool


def perspective_view(region: SimpleNamespace, rotation: Euler) -> SimpleNamespace:
    """RegionView3D's matrices of a perspective view orbiting the origin at 10 units, turned by
    `rotation` (as orthographic_view: headless Blender never updates a real view's)."""
    view = Matrix.Translation((0.0, 0.0, -10.0)) @ rotation.to_matrix().to_4x4()
    near, far, focal = 0.1, 100.0, 2.0
    window = Matrix(((focal * region.height / region.width, 0, 0, 0), (0, focal, 0, 0),
                     (0, 0, (far + near) / (near - far), 2 * far * near / (near - far)), (0, 0, -1, 0)))
    return SimpleNamespace(is_perspective=True, view_perspective='PERSP', view_matrix=view, window_matrix=window,
                           perspective_matrix=window @ view, view_location=Vector((0.0, 0.0, 0.0)))


class ViewContext:
    """bpy.context in a window whose only editor is a 3D viewport of 800 x 600 pixels; the test
    orbits it by giving `region.data` another view. Modal operators started in it are listed in
    `modal_handlers`, and run by the test."""

    def __init__(self, rotation: Euler = Euler((0.0, 0.0, 0.0))) -> None:
        self.modal_handlers = []
        self.window_manager = SimpleNamespace(modal_handler_add=self.modal_handlers.append)
        self.region = SimpleNamespace(type='WINDOW', x=0, y=0, width=800, height=600, tag_redraw=lambda: None)
        self.region.data = perspective_view(self.region, rotation)
        area = SimpleNamespace(type='VIEW_3D', x=0, y=0, width=800, height=600, regions=[self.region])
        window = bpy.context.window
        self.window = SimpleNamespace(screen=SimpleNamespace(areas=[area]), cursor_modal_set=window.cursor_modal_set,
                                      cursor_modal_restore=window.cursor_modal_restore)

    def orbit(self, rotation: Euler) -> None:
        self.region.data = perspective_view(self.region, rotation)

    def __getattr__(self, name: str) -> object:
        return getattr(bpy.context, name)


def event(type: str, value: str = 'PRESS', at=(0, 0), shift=False, ctrl=False, alt=False) -> SimpleNamespace:
    return SimpleNamespace(type=type, value=value, mouse_x=at[0], mouse_y=at[1], shift=shift, ctrl=ctrl, alt=alt)


def drag(tool, context, start, end=None, **modifiers) -> None:
    """A press at `start` and a release at `end` (a click when there is no `end`)."""
    assert tool.modal(context, event('LEFTMOUSE', 'PRESS', start, **modifiers)) == {'RUNNING_MODAL'}
    assert tool.modal(context, event('LEFTMOUSE', 'RELEASE', end or start, **modifiers)) == {'RUNNING_MODAL'}


def sent_ray(ray: dict) -> tuple[list[float], list[float]]:
    return ray["origin"], ray["direction"]


def expected_ray(context: ViewContext, coord) -> tuple:
    """The ray under `coord` in the view as it is now (the mesh lies at the identity)."""
    from blender_dff.operators.click import click_ray

    origin, direction = click_ray(context.region, context.region.data, coord)
    return pytest.approx(list(origin), abs=1e-4), pytest.approx(list(direction), abs=1e-4)


def test_clicks_keep_the_rays_of_the_view_they_were_made_in(worker):
    from blender_dff.operators.click import prompt_on_screen

    load_mesh(worker)
    context, tool = ViewContext(), click_tool()
    tool.begin(context)
    try:
        drag(tool, context, (400, 300))
        first = expected_ray(context, (400, 300))
        assert sent_ray(worker.sent[-1].params["clicks"][0]) == first

        context.orbit(Euler((0.5, 0.0, 0.8)))
        drag(tool, context, (300, 200), (500, 420), shift=True)  # a box, kept with the click
        box = [expected_ray(context, corner) for corner in ((300, 200), (500, 200), (500, 420), (300, 420))]
        context.orbit(Euler((-0.4, 0.3, 2.0)))
        drag(tool, context, (420, 310), ctrl=True)
        last = expected_ray(context, (420, 310))

        params = worker.sent[-1].params
        assert [sent_ray(click) for click in params["clicks"]] == [first, last]
        assert [click["object"] for click in params["clicks"]] == [True, False]
        assert [sent_ray(corner) for corner in params["box"]] == box
        assert sent_ray(params["clicks"][0]) != expected_ray(context, (400, 300))  # the pixel moved on

        # The first click hit the top of the cube; its dot is drawn there in the view of now.
        anchor = tool.prompt.clicks[0][0].anchor
        assert tuple(anchor) == pytest.approx((0.0, 0.0, 1.0), abs=1e-4)
        dots, outline = prompt_on_screen(tool.prompt, context.region, context.region.data)
        now = view3d_utils.location_3d_to_region_2d(context.region, context.region.data, anchor)
        assert dots[0] == (pytest.approx((now.x, now.y)), True)
        assert (now - Vector((400, 300))).length > 20
        assert len(dots) == 2 and len(outline) == 4
    finally:
        tool.cancel(context)


def test_the_tool_s_first_press_is_the_first_click(worker):
    load_mesh(worker)
    context, tool = ViewContext(), click_tool()
    assert tool.invoke(context, event('LEFTMOUSE', 'PRESS', (400, 300))) == {'RUNNING_MODAL'}
    try:
        assert context.modal_handlers == [tool]
        assert tool.modal(context, event('LEFTMOUSE', 'RELEASE', (400, 300))) == {'RUNNING_MODAL'}
        assert sent_ray(worker.sent[-1].params["clicks"][0]) == expected_ray(context, (400, 300))
    finally:
        tool.cancel(context)


@pytest.mark.parametrize("type, value, modifiers, passes", [
    ('TAB', 'PRESS', {}, False),
    ('X', 'PRESS', {}, False),
    ('Z', 'PRESS', {"ctrl": True}, False),
    ('A', 'RELEASE', {}, False),
    ('BUTTON4MOUSE', 'PRESS', {}, False),
    ('MIDDLEMOUSE', 'PRESS', {}, True),
    ('MIDDLEMOUSE', 'PRESS', {"shift": True}, True),
    ('WHEELUPMOUSE', 'PRESS', {}, True),
    ('TRACKPADPAN', 'NOTHING', {}, True),
    ('NUMPAD_1', 'PRESS', {"ctrl": True}, True),
    ('NUMPAD_PERIOD', 'PRESS', {}, True),
    ('NDOF_MOTION', 'NOTHING', {}, True),
    ('MOUSEMOVE', 'NOTHING', {}, True),
    ('TIMER', 'NOTHING', {}, True),
    ('LEFTMOUSE', 'PRESS', {}, False),
])
def test_other_keys_are_held_back_while_the_view_can_still_move(addon, type, value, modifiers, passes):
    context, tool = ViewContext(), click_tool()
    tool.begin(context)
    try:
        result = tool.modal(context, event(type, value, (400, 300), **modifiers))
        assert result == ({'PASS_THROUGH'} if passes else {'RUNNING_MODAL'})
    finally:
        tool.cancel(context)


def test_left_clicks_outside_the_viewport_and_emulated_middle_clicks_pass(addon, monkeypatch):
    context, tool = ViewContext(), click_tool()
    tool.begin(context)
    try:
        assert tool.modal(context, event('LEFTMOUSE', 'PRESS', (900, 300))) == {'PASS_THROUGH'}
        assert tool.modal(context, event('LEFTMOUSE', 'RELEASE', (900, 300))) == {'PASS_THROUGH'}
        monkeypatch.setattr(bpy.context.preferences.inputs, "use_mouse_emulate_3_button", True)
        assert tool.modal(context, event('LEFTMOUSE', 'PRESS', (400, 300), alt=True)) == {'PASS_THROUGH'}
        assert tool.prompt.pressed_at is None
    finally:
        tool.cancel(context)


def test_navigation_and_key_events_are_blender_s(addon):
    from blender_dff.operators.click import KEY_VALUES, NAVIGATION

    properties = bpy.types.Event.bl_rna.properties
    assert NAVIGATION <= set(properties["type"].enum_items.keys())
    assert KEY_VALUES <= set(properties["value"].enum_items.keys())


def test_the_status_bar_shows_the_tool_s_keys_with_blender_s_icons(addon):
    from bl_ui.space_statusbar import STATUSBAR_HT_header
    from blender_dff.operators.click import draw_status

    layout = RecordingLayout()
    draw_status(SimpleNamespace(layout=layout), bpy.context)
    labels = [entry[1:] for entry in layout.log if entry[0] == "label"]  # (text, icon)
    assert [text for text, _ in labels if text] == ["Select", "Add Point", "Leave Out", "Box", "Keep", "Cancel"]
    assert ("", 'EVENT_SHIFT') in labels and ("Select", 'MOUSE_LMB') in labels
    icons = bpy.types.UILayout.bl_rna.functions["label"].parameters["icon"].enum_items.keys()
    assert {icon for _, icon in labels} <= set(icons)

    blender_s = STATUSBAR_HT_header.draw
    for key, result in (('RET', {'FINISHED'}), ('ESC', {'CANCELLED'})):
        context, tool = ViewContext(), click_tool()
        tool.begin(context)
        assert STATUSBAR_HT_header.draw is draw_status
        assert tool.modal(context, event(key)) == result
        assert STATUSBAR_HT_header.draw is blender_s


def test_cancel_leaves_nothing_of_the_prompt_behind(worker):
    from bl_ui.space_statusbar import STATUSBAR_HT_header

    obj, n_faces = load_mesh(worker)
    blender_s = STATUSBAR_HT_header.draw
    context, tool = ViewContext(), click_tool()
    tool.begin(context)
    handle = tool.draw_handle
    assert handle is not None and STATUSBAR_HT_header.draw is not blender_s
    drag(tool, context, (400, 300))

    tool.cancel(context)  # as Blender does when another file is loaded or the window closes
    assert tool.draw_handle is None
    with pytest.raises(ValueError, match="already removed"):
        bpy.types.SpaceView3D.draw_handler_remove(handle, 'WINDOW')
    assert STATUSBAR_HT_header.draw is blender_s
    obj.data.polygons.foreach_set("select", np.zeros(len(obj.data.polygons), dtype=bool))
    deliver(worker, query_reply(np.ones(n_faces), query="mug", hit_face=0))  # the click's late reply
    assert not any(face.select for face in obj.data.polygons) and "mug" not in obj.vertex_groups


def test_the_operator_reads_well_in_menus_and_tooltips(addon):
    rna = bpy.ops.dff.click_select.get_rna_type()
    assert rna.name == "Click Select (DFF)"
    assert rna.description and "\n" not in rna.description


def toolbar_tools(mode: str) -> list[str]:
    """The idnames of the 3D viewport's toolbar in `mode`, in order."""
    from bl_ui.space_toolsystem_common import ToolSelectPanelHelper

    toolbar = ToolSelectPanelHelper._tool_class_from_space_type('VIEW_3D')
    return [tool.idname for tool in ToolSelectPanelHelper._tools_flatten(toolbar._tools[mode]) if tool is not None]


@pytest.mark.parametrize("mode", ['OBJECT', 'EDIT_MESH'])
def test_the_click_tool_is_in_the_viewport_s_toolbar(addon, mode):
    from blender_dff.ui import click_tool as tool_module

    tools = toolbar_tools(mode)
    assert tools.count("dff.click_select_tool") == 1
    assert tools.index("dff.click_select_tool") > tools.index("builtin.select_lasso")  # after the select tools
    tool = next(cls for cls in tool_module._TOOLS if cls.bl_context_mode == mode)
    assert tool.bl_space_type == 'VIEW_3D' and tool.bl_label == "Click Select (DFF)"
    keymap = bpy.context.window_manager.keyconfigs.addon.keymaps[tool._bl_tool.keymap[0]]
    assert [(item.idname, item.type, item.value, item.shift == 1, item.ctrl == 1) for item in keymap.keymap_items] == [
        ("dff.click_select", 'LEFTMOUSE', 'PRESS', False, False),
        ("dff.click_select", 'LEFTMOUSE', 'PRESS', True, False),
        ("dff.click_select", 'LEFTMOUSE', 'PRESS', False, True)]

    blender_dff.unregister()
    try:
        assert toolbar_tools(mode) == [name for name in tools if name != "dff.click_select_tool"]
    finally:
        blender_dff.register()
    assert toolbar_tools(mode) == tools


def test_the_click_tool_can_be_picked(addon):
    window = bpy.context.window
    area, region = viewport(window.screen)
    with bpy.context.temp_override(window=window, area=area, region=region):
        assert bpy.ops.wm.tool_set_by_id(name="dff.click_select_tool", space_type='VIEW_3D') == {'FINISHED'}
        assert bpy.context.workspace.tools.from_space_view3d_mode('OBJECT').idname == "dff.click_select_tool"
        bpy.ops.wm.tool_set_by_id(name="builtin.select_box", space_type='VIEW_3D')
