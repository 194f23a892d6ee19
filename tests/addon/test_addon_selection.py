"""The threshold slider, the heat map and its toggle in real Blender (the bpy module, headless),
on a mesh loaded and queried through the operators from a scripted worker. Everything is read
back from Blender's arrays and checked against `probability > threshold`."""

from __future__ import annotations

import bpy
import numpy as np
import pytest

import blender_dff
from addon_helpers import ScriptedClient, cube_arrays, edit_mode_selection, mesh_reply, query_reply, read, slide

QUERY = "mug"


def queried_mesh(worker: ScriptedClient, colors: bool = True) -> tuple[bpy.types.Object, np.ndarray]:
    """"DFF Mesh" loaded (with or without vertex colours) and queried, with random probabilities
    all above 0; left in edit mode as the reply leaves it. Returns it and the probabilities."""
    vertices, faces, vertex_colors = cube_arrays()
    reply = mesh_reply(vertices, faces, vertex_colors)
    if not colors:
        del reply.arrays["vertex_colors"]
    bpy.context.scene.dff.workspace_path = "/tmp/dff_workspace"  # never touched here
    assert bpy.ops.dff.load_mesh() == {'FINISHED'}
    worker.reply(worker.sent[-1], reply)
    blender_dff.worker.session.pump()
    probability = np.random.default_rng(3).uniform(0.01, 1.0, len(faces)).astype(np.float32)
    assert bpy.ops.dff.select_text(text=QUERY) == {'FINISHED'}
    worker.reply(worker.sent[-1], query_reply(probability))
    blender_dff.worker.session.pump()
    obj = bpy.context.scene.dff.mesh_object
    assert obj.mode == 'EDIT' and bpy.context.scene.dff.active_query == QUERY
    return obj, probability


def linear_heat_map(obj: bpy.types.Object) -> np.ndarray:
    """The heat map's linear RGB at every corner (object mode)."""
    from blender_dff.scene.heat_map import HEAT_ATTR

    return read(obj.data.color_attributes[HEAT_ATTR].data, "color", np.float32, 4)[:, :3]


def corner_faces(mesh: bpy.types.Mesh) -> np.ndarray:
    return np.repeat(np.arange(len(mesh.polygons)), read(mesh.polygons, "loop_total", np.int32))


def assert_threshold_shown(obj: bpy.types.Object, threshold: float, bright: np.ndarray) -> None:
    """In object mode: the mask attribute, the selection of faces, vertices and edges, and the
    heat map all say `probability > threshold`. `bright` is the heat map with every face
    selected (one colour per corner)."""
    from blender_dff.scene.heat_map import UNSELECTED_DIMMING
    from blender_dff.scene.selection import PROBABILITY_ATTR

    mesh = obj.data
    selected = read(mesh.attributes[PROBABILITY_ATTR].data, "value", np.float32) > threshold
    assert 0 < selected.sum() < len(selected)
    assert np.array_equal(read(mesh.attributes["dff_" + QUERY].data, "value", bool), selected)
    assert np.array_equal(read(mesh.polygons, "select", bool), selected)
    faces = corner_faces(mesh)
    for elements, corner_prop in ((mesh.vertices, "vertex_index"), (mesh.edges, "edge_index")):
        expected = np.zeros(len(elements), dtype=bool)
        expected[read(mesh.loops, corner_prop, np.int32)[selected[faces]]] = True
        assert np.array_equal(read(elements, "select", bool), expected)
    heat = linear_heat_map(obj)
    on_selected = selected[faces]
    np.testing.assert_allclose(heat[on_selected], bright[on_selected], atol=1e-6)
    np.testing.assert_allclose(heat[~on_selected], bright[~on_selected] * UNSELECTED_DIMMING,
                               atol=0.01, rtol=0.03)  # one step of a byte


@pytest.mark.parametrize("mode", ['OBJECT', 'EDIT'])
def test_threshold_moves_the_mask_the_selection_and_the_heat_map_together(worker, mode):
    obj, probability = queried_mesh(worker)
    bpy.ops.object.mode_set(mode='OBJECT')
    slide(0.0)  # every face above it: the heat map undimmed
    bright = linear_heat_map(obj)
    assert np.ptp(bright.sum(1)) > 0.5  # a ramp of colours, not one
    for threshold in (0.3, 0.8, 0.55):
        bpy.ops.object.mode_set(mode=mode)
        slide(threshold)
        assert obj.mode == mode
        if mode == 'EDIT':
            assert np.array_equal(edit_mode_selection(obj), probability > threshold)
        bpy.ops.object.mode_set(mode='OBJECT')
        assert_threshold_shown(obj, threshold, bright)
    assert len(worker.sent) == 2  # the mesh and the query: the slider never asks the worker


def test_threshold_on_a_mesh_the_user_made_quads_of(worker):
    obj, _ = queried_mesh(worker)
    bpy.ops.mesh.select_all(action='SELECT')
    bpy.ops.mesh.tris_convert_to_quads()
    bpy.ops.object.mode_set(mode='OBJECT')
    assert len(obj.data.loops) > 3 * len(obj.data.polygons)
    slide(0.0)
    bright = linear_heat_map(obj)
    slide(0.4)
    assert_threshold_shown(obj, 0.4, bright)


def test_heat_map_is_bytes_and_leaves_the_users_colours_active(worker):
    from blender_dff.scene.mesh_import import COLOR_ATTR
    from blender_dff.scene.heat_map import HEAT_ATTR

    obj, _ = queried_mesh(worker)
    bpy.ops.object.mode_set(mode='OBJECT')
    colours = obj.data.color_attributes
    heat = colours[HEAT_ATTR]
    assert (heat.data_type, heat.domain) == ('BYTE_COLOR', 'CORNER')
    assert (colours.active_color_name, colours.default_color_name) == (COLOR_ATTR, COLOR_ATTR)
    slide(0.7)
    assert (colours.active_color_name, colours.default_color_name) == (COLOR_ATTR, COLOR_ATTR)


def test_heat_map_of_a_mesh_without_colours_is_not_made_its_colour(worker):
    from blender_dff.scene.heat_map import HEAT_ATTR

    obj, _ = queried_mesh(worker, colors=False)
    colours = obj.data.color_attributes
    assert HEAT_ATTR in colours
    assert (colours.active_color_name, colours.default_color_name) == ("", "")


def test_threshold_leaves_copies_of_the_mesh_alone(worker):
    # Arrays a mesh shares with a copy (as with undo steps) are copied before a write.
    obj, _ = queried_mesh(worker)
    bpy.ops.object.mode_set(mode='OBJECT')
    copy = obj.data.copy()
    before = linear_heat_map(obj)
    slide(0.9)
    assert not np.allclose(linear_heat_map(obj), before)
    copy_heat = read(copy.color_attributes["dff_heat"].data, "color", np.float32, 4)[:, :3]
    np.testing.assert_array_equal(copy_heat, before)


def view_3d() -> bpy.types.Area:
    return next(area for area in bpy.context.window.screen.areas if area.type == 'VIEW_3D')


def toggle_heat_map(area: bpy.types.Area) -> set[str]:
    with bpy.context.temp_override(area=area, space_data=area.spaces.active):
        return bpy.ops.dff.show_heat_map()


def test_heat_map_toggle_puts_back_the_shading_and_the_active_colour(worker):
    from blender_dff.scene.mesh_import import COLOR_ATTR
    from blender_dff.scene.heat_map import HEAT_ATTR, HEAT_VIEW_PROP

    area = view_3d()
    shading = area.spaces.active.shading
    shading.type, shading.color_type = 'WIREFRAME', 'RANDOM'
    with pytest.raises(RuntimeError, match="no DFF mesh"):
        toggle_heat_map(area)
    assert (shading.type, shading.color_type) == ('WIREFRAME', 'RANDOM')
    obj, _ = queried_mesh(worker)
    colours = obj.data.color_attributes

    assert toggle_heat_map(area) == {'FINISHED'}
    assert (shading.type, shading.color_type) == ('SOLID', 'VERTEX')  # 'VERTEX' is "Attribute"
    assert colours.active_color_name == HEAT_ATTR  # what Solid mode's Attribute shows
    assert HEAT_VIEW_PROP in obj  # remembered on the object, which undo keeps in step
    slide(0.2)  # moving the slider keeps it shown
    assert colours.active_color_name == HEAT_ATTR

    assert toggle_heat_map(area) == {'FINISHED'}
    assert (shading.type, shading.color_type) == ('WIREFRAME', 'RANDOM')
    assert colours.active_color_name == COLOR_ATTR
    assert HEAT_VIEW_PROP not in obj

    # Solid mode already showing the user's colours: only the active colour comes and goes.
    shading.type, shading.color_type = 'SOLID', 'VERTEX'
    toggle_heat_map(area)
    assert colours.active_color_name == HEAT_ATTR
    toggle_heat_map(area)
    assert (shading.type, shading.color_type, colours.active_color_name) == ('SOLID', 'VERTEX', COLOR_ATTR)


def test_a_moving_slider_selects_at_once_and_recolours_when_it_stops(worker):
    from blender_dff.scene import selection

    obj, probability = queried_mesh(worker)
    bpy.ops.object.mode_set(mode='OBJECT')
    slide(0.0)
    bright = linear_heat_map(obj)
    for threshold in (0.9, 0.6, 0.4):  # a drag: each move selects, none recolours
        bpy.context.scene.dff.threshold = threshold
        mesh = obj.data
        assert np.array_equal(read(mesh.polygons, "select", bool), probability > threshold)
        np.testing.assert_array_equal(linear_heat_map(obj), bright)
    assert bpy.app.timers.is_registered(selection._settle_tick)  # the recolour waits for the slider to stop
    selection.settle()
    assert_threshold_shown(obj, 0.4, bright)

    bpy.ops.object.mode_set(mode='EDIT')
    bpy.context.scene.dff.threshold = 0.7  # edit mode: all of it waits
    assert np.array_equal(edit_mode_selection(obj), probability > 0.4)
    bpy.ops.object.mode_set(mode='OBJECT')  # leaving edit mode meanwhile: the pending write still lands
    selection.settle()
    assert_threshold_shown(obj, 0.7, bright)
