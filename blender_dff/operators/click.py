"""The Click tool: clicks and box drags in the 3D viewport become a prompt for the worker.

Click selects what is under the cursor; Shift+click adds a point on the object, Ctrl+click a
point on what to leave out; a drag draws a box (with Shift, added to the clicks). Each change
sends the whole prompt, as world-frame rays in the DFF mesh's frame, and the reply selects
faces. Enter keeps the selection, Esc (or right click) takes back what the tool selected.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import bpy
import gpu
from bpy.props import BoolProperty, CollectionProperty, FloatVectorProperty
from bpy_extras import view3d_utils
from gpu_extras.batch import batch_for_shader
from mathutils import Vector

from ..folders import UserError
from ..scene import selection
from ..wire import api
from ..worker import session as worker_session
from ..worker.client import Reply
from .base import WorkerOperator, dff_mesh_poll, reply_handler, workspace

CLICK_STATUS = ("Click: select  |  Shift+click: add  |  Ctrl+click: leave out  |  Drag: box  |  "
                "Enter: keep  |  Esc: cancel")
DRAG_PIXELS = 6  # a press and release farther apart than this is a box, not a click
OBJECT_COLOUR, BACKGROUND_COLOUR, BOX_COLOUR = (0.2, 0.9, 0.3, 1.0), (0.95, 0.2, 0.2, 1.0), (1.0, 0.8, 0.1, 1.0)

Coord = tuple[float, float]


def click_ray(region: bpy.types.Region, rv3d: bpy.types.RegionView3D, coord: Coord) -> tuple[Vector, Vector]:
    """The world-frame ray (origin, unit direction) under `coord`, in pixels from the
    region's lower-left corner, for perspective, orthographic and camera views alike."""
    return (view3d_utils.region_2d_to_origin_3d(region, rv3d, coord),
            view3d_utils.region_2d_to_vector_3d(region, rv3d, coord))


def _contains(rect: bpy.types.Area | bpy.types.Region, x: int, y: int) -> bool:
    return rect.x <= x < rect.x + rect.width and rect.y <= y < rect.y + rect.height


def viewport_at(screen: bpy.types.Screen, x: int, y: int) -> tuple[bpy.types.Region, Coord] | None:
    """The 3D viewport region at window coordinates (x, y) and the point in the region's
    coordinates; None elsewhere, including on the toolbar, sidebar and headers drawn over
    a viewport."""
    for area in screen.areas:
        if area.type != 'VIEW_3D' or not _contains(area, x, y):
            continue
        regions = [region for region in area.regions if _contains(region, x, y)]
        if not regions or any(region.type != 'WINDOW' for region in regions):
            return None
        # Quad view splits the area into four WINDOW regions, each with its own view.
        region = regions[0]
        return region, (x - region.x, y - region.y)
    return None


@dataclass
class PromptBuilder:
    """Presses and releases of the mouse (region pixels) -> clicks with labels and a box."""

    clicks: list[tuple[Coord, bool]] = field(default_factory=list)  # (where, on the object)
    box: tuple[Coord, Coord] | None = None
    pressed_at: Coord | None = None

    def press(self, coord: Coord) -> None:
        self.pressed_at = coord

    def release(self, coord: Coord, add: bool, leave_out: bool) -> bool:
        """End a click or a drag; True when the prompt changed."""
        if self.pressed_at is None:
            return False
        start, self.pressed_at = self.pressed_at, None
        keep = add or leave_out
        if max(abs(coord[0] - start[0]), abs(coord[1] - start[1])) > DRAG_PIXELS:
            if not keep:
                self.clicks = []
            self.box = (start, coord)
            return True
        if not keep:
            self.clicks, self.box = [], None
        self.clicks.append((coord, not leave_out))
        return True

    def box_corners(self) -> list[Coord]:
        """The box's corners in order around it."""
        (x0, y0), (x1, y1) = self.box
        return [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]

    def has_object(self) -> bool:
        return self.box is not None or any(on_object for _, on_object in self.clicks)


class DFF_PG_prompt_ray(bpy.types.PropertyGroup):
    """One ray of a click prompt, in the world frame."""

    origin: FloatVectorProperty(name="Origin", size=3, subtype='TRANSLATION')
    direction: FloatVectorProperty(name="Direction", size=3, subtype='XYZ')
    on_object: BoolProperty(name="On Object", default=True,
                            description="A click on the object (off: on what to leave out)")


def _local_ray(obj: bpy.types.Object, origin: Vector, direction: Vector) -> dict:
    """A world-frame ray in `obj`'s frame, where the worker's mesh lies (the DFF mesh is
    imported at the identity; the user may have moved it since)."""
    if direction.length == 0.0:
        raise UserError("a click ray has no direction: give a non-zero 'direction'")
    try:
        to_local = obj.matrix_world.inverted()
    except ValueError:
        raise UserError(f"'{obj.name}' is scaled to zero: reset its scale (Object > Clear > Scale)") from None
    return {"origin": list(to_local @ origin), "direction": list((to_local.to_3x3() @ direction).normalized())}


class DFF_OT_click_select(WorkerOperator, bpy.types.Operator):
    """Click on the mesh in the 3D viewport to select the object under the cursor.
    Shift+click adds, Ctrl+click leaves out, drag draws a box; Enter keeps, Esc cancels"""

    bl_idname = "dff.click_select"
    bl_label = "Click Select"
    # No undo step here: the selection changes when the reply arrives, which pushes its own.
    bl_options = {'REGISTER'}

    clicks: CollectionProperty(type=DFF_PG_prompt_ray, options={'SKIP_SAVE'},
                               description="Clicks as world-frame rays (to script a click without the mouse)")
    box: CollectionProperty(type=DFF_PG_prompt_ray, options={'SKIP_SAVE'},
                            description="The rays through a box's four corners, in order around it")

    poll = classmethod(dff_mesh_poll)

    def invoke(self, context: bpy.types.Context, event: bpy.types.Event) -> set[str]:
        if self.clicks or self.box:
            return self.execute(context)
        if context.window is None:
            self.report({'ERROR'}, "clicking needs a 3D viewport: give 'clicks' instead")
            return {'CANCELLED'}
        self.prompt = PromptBuilder()
        self.region: bpy.types.Region | None = None
        self.dragged_to: Coord | None = None
        self.selected: list[str] = []       # queries this tool applied, taken back by Esc
        self.state = {"cancelled": False}   # read by replies still on their way after Esc
        self.draw_handle = bpy.types.SpaceView3D.draw_handler_add(self.draw, (context,), 'WINDOW', 'POST_PIXEL')
        context.window_manager.modal_handler_add(self)
        context.window.cursor_modal_set('EYEDROPPER')
        context.workspace.status_text_set(CLICK_STATUS)
        return {'RUNNING_MODAL'}

    def modal(self, context: bpy.types.Context, event: bpy.types.Event) -> set[str]:
        if event.value == 'PRESS' and event.type in {'ESC', 'RIGHTMOUSE'}:
            self.finish(context, keep=False)
            return {'CANCELLED'}
        if event.value == 'PRESS' and event.type in {'RET', 'NUMPAD_ENTER'}:
            self.finish(context, keep=True)
            return {'FINISHED'}
        if event.type == 'MOUSEMOVE' and self.prompt.pressed_at is not None:
            self.dragged_to = (event.mouse_x - self.region.x, event.mouse_y - self.region.y)
            self.region.tag_redraw()
            return {'RUNNING_MODAL'}
        if event.type != 'LEFTMOUSE':
            return {'PASS_THROUGH'}  # the view can still be orbited, panned and zoomed
        if event.value == 'PRESS':
            under_mouse = viewport_at(context.window.screen, event.mouse_x, event.mouse_y)
            if under_mouse is None:
                return {'PASS_THROUGH'}  # a click on a panel or another editor does its job
            if under_mouse[0] != self.region:  # a prompt lives in one view
                self.prompt = PromptBuilder()
                self.region = under_mouse[0]
            self.prompt.press(under_mouse[1])
            return {'RUNNING_MODAL'}
        if event.value == 'RELEASE' and self.region is not None:
            coord = (event.mouse_x - self.region.x, event.mouse_y - self.region.y)
            self.dragged_to = None
            if self.prompt.release(coord, add=event.shift, leave_out=event.ctrl) and self.prompt.has_object():
                self.set_rays(self.region)
                self.execute(context)
            self.region.tag_redraw()
            return {'RUNNING_MODAL'}
        return {'RUNNING_MODAL'}

    def set_rays(self, region: bpy.types.Region) -> None:
        """The prompt's clicks and box as world rays of `region`'s view."""
        self.clicks.clear()
        self.box.clear()
        for coord, on_object in self.prompt.clicks:
            item = self.clicks.add()
            item.origin, item.direction = click_ray(region, region.data, coord)
            item.on_object = on_object
        if self.prompt.box is not None:
            for coord in self.prompt.box_corners():
                item = self.box.add()
                item.origin, item.direction = click_ray(region, region.data, coord)

    def finish(self, context: bpy.types.Context, keep: bool) -> None:
        bpy.types.SpaceView3D.draw_handler_remove(self.draw_handle, 'WINDOW')
        context.window.cursor_modal_restore()
        context.workspace.status_text_set(None)
        if not keep:
            self.state["cancelled"] = True
            obj = context.scene.dff.mesh_object
            if obj is not None:
                for query in self.selected:
                    selection.clear_query(context, obj, query)
                if self.selected:
                    context.scene.dff.show_message("Click selection cancelled")
        if self.region is not None:
            self.region.tag_redraw()

    def draw(self, context: bpy.types.Context) -> None:
        if context.region != self.region:
            return
        points = gpu.shader.from_builtin('POINT_UNIFORM_COLOR')
        gpu.state.point_size_set(10.0)
        for on_object, colour in ((True, OBJECT_COLOUR), (False, BACKGROUND_COLOUR)):
            coords = [c for c, flag in self.prompt.clicks if flag == on_object]
            if coords:
                points.uniform_float("color", colour)
                batch_for_shader(points, 'POINTS', {"pos": coords}).draw(points)
        box = self.prompt.box
        if self.dragged_to is not None and self.prompt.pressed_at is not None:
            box = (self.prompt.pressed_at, self.dragged_to)
        if box is not None:
            (x0, y0), (x1, y1) = box
            lines = gpu.shader.from_builtin('UNIFORM_COLOR')
            lines.uniform_float("color", BOX_COLOUR)
            batch_for_shader(lines, 'LINE_LOOP', {"pos": [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]}).draw(lines)

    def send(self, context: bpy.types.Context) -> set[str]:
        props = context.scene.dff
        obj = selection.check_dff_mesh(props.mesh_object)
        if not self.clicks and not self.box:
            raise UserError("no click to send: give 'clicks' or a 'box'")
        params = {"workspace": workspace(context), "teacher": props.teacher,
                  "clicks": [{**_local_ray(obj, Vector(c.origin), Vector(c.direction)), "object": c.on_object}
                             for c in self.clicks]}
        if self.box:
            if len(self.box) != 4:
                raise UserError(f"a box needs its 4 corner rays, got {len(self.box)}")
            params["box"] = [_local_ray(obj, Vector(c.origin), Vector(c.direction)) for c in self.box]
        state = getattr(self, "state", {"cancelled": False})
        selected = getattr(self, "selected", [])

        def apply(ctx: bpy.types.Context, reply: Reply) -> str:
            if state["cancelled"]:  # Esc was pressed while this click was on its way
                return "Click selection cancelled"
            query = selection.check_query(str(reply.result.get("query", "")))
            selected.append(query)
            message = selection.apply_query(ctx, query, reply)
            views = reply.result.get("views", 1)
            return f"{message} ({views} views)" if views > 1 else message

        worker_session.session().submit(context, api.QUERY_CLICK.name, api.QUERY_CLICK.request(**params),
                                        on_done=reply_handler(context.scene, apply, notices={"no_hit"}))
        props.show_message("Finding what was clicked...")
        return {'FINISHED'}


_CLASSES = (DFF_PG_prompt_ray, DFF_OT_click_select)

register, unregister = bpy.utils.register_classes_factory(_CLASSES)
