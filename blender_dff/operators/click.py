"""The Click tool: clicks and box drags in the 3D viewport become a prompt for the worker.

Click selects what is under the cursor; Shift+click adds a point on the object, Ctrl+click a
point on what to leave out; a drag draws a box (with Shift, added to the clicks). Each click is
cast into the world as it is made, so the view can be orbited between clicks. Each change sends
the whole prompt, as world-frame rays in the DFF mesh's frame, and the reply selects faces.
Enter keeps the selection, Esc (or right click) takes back what the tool selected.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, NamedTuple

import bpy
import gpu
from bpy.props import BoolProperty, CollectionProperty, FloatVectorProperty
from bpy_extras import view3d_utils
from gpu_extras.batch import batch_for_shader
from mathutils import Vector

from ..folders import UserError
from ..scene import selection
from ..ui import click_tool
from ..wire import api
from ..worker import session as worker_session
from ..worker.client import Reply
from .base import WorkerOperator, dff_mesh_poll, mesh_params, reply_handler

DRAG_PIXELS = 6  # a press and release farther apart than this is a box, not a click
DOT_PIXELS = 10.0
OBJECT_COLOUR, BACKGROUND_COLOUR, BOX_COLOUR = (0.2, 0.9, 0.3, 1.0), (0.95, 0.2, 0.2, 1.0), (1.0, 0.8, 0.1, 1.0)

# The status bar while the prompt is open: what each key or button does, with Blender's icons.
STATUS = (("Select", ('MOUSE_LMB',)), ("Add Point", ('EVENT_SHIFT', 'MOUSE_LMB')),
          ("Leave Out", ('EVENT_CTRL', 'MOUSE_LMB')), ("Box", ('MOUSE_LMB_DRAG',)),
          ("Keep", ('EVENT_RETURN',)), ("Cancel", ('EVENT_ESC',)))

# Events that still reach Blender while the prompt is open, so the view can be orbited, panned
# and zoomed with a mouse, a trackpad or the numpad (and a 3D mouse's NDOF_* events). Other keys
# and buttons are held back: Tab, X or Ctrl+Z would act on the mesh mid-prompt.
NAVIGATION = frozenset({'MIDDLEMOUSE', 'WHEELUPMOUSE', 'WHEELDOWNMOUSE', 'WHEELINMOUSE', 'WHEELOUTMOUSE',
                        'TRACKPADPAN', 'TRACKPADZOOM', 'MOUSEROTATE', 'MOUSESMARTZOOM', 'HOME',
                        'NUMPAD_PERIOD', 'NUMPAD_SLASH', 'NUMPAD_PLUS', 'NUMPAD_MINUS',
                        *(f'NUMPAD_{digit}' for digit in range(10))})
# The values of a key or button event; mouse moves, timers and window events have none of these.
KEY_VALUES = frozenset({'PRESS', 'RELEASE', 'CLICK', 'DOUBLE_CLICK', 'CLICK_DRAG'})

Coord = tuple[float, float]


def click_ray(region: bpy.types.Region, rv3d: bpy.types.RegionView3D, coord: Coord) -> tuple[Vector, Vector]:
    """The world-frame ray (origin, unit direction) under `coord`, in pixels from the
    region's lower-left corner, for perspective, orthographic and camera views alike."""
    return (view3d_utils.region_2d_to_origin_3d(region, rv3d, coord),
            view3d_utils.region_2d_to_vector_3d(region, rv3d, coord))


class Ray(NamedTuple):
    """A point of the prompt as the view showed it when it was clicked: the world-frame ray, and
    where its dot is drawn (on what the ray hit, else at the depth of the view's pivot)."""

    origin: Vector
    direction: Vector
    anchor: Vector


def cast_ray(context: bpy.types.Context, region: bpy.types.Region, rv3d: bpy.types.RegionView3D,
             coord: Coord) -> Ray:
    """The Ray under `coord` in the view as it is now."""
    origin, direction = click_ray(region, rv3d, coord)
    hit, location, *_ = context.scene.ray_cast(context.evaluated_depsgraph_get(), origin, direction)
    if not hit:
        location = view3d_utils.region_2d_to_location_3d(region, rv3d, coord, rv3d.view_location)
    return Ray(origin, direction, location)


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


def rectangle(start: Coord, end: Coord) -> list[Coord]:
    """The corners of the box dragged from `start` to `end`, in order around it."""
    (x0, y0), (x1, y1) = start, end
    return [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]


@dataclass
class PromptBuilder:
    """Presses and releases of the mouse (region pixels) -> clicks with labels and a box. Each
    point is kept as `cast` makes it from its pixel at the release (the tool casts a Ray through
    the view of that moment), so moving the view later leaves it where it was clicked."""

    cast: Callable[[Coord], Any] = lambda coord: coord  # by default a point stays a pixel
    clicks: list[tuple[Any, bool]] = field(default_factory=list)  # (point, on the object)
    box: list[Any] | None = None  # its four corners in order around it
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
            self.box = [self.cast(corner) for corner in rectangle(start, coord)]
            return True
        if not keep:
            self.clicks, self.box = [], None
        self.clicks.append((self.cast(coord), not leave_out))
        return True

    def has_object(self) -> bool:
        return self.box is not None or any(on_object for _, on_object in self.clicks)


def prompt_on_screen(prompt: PromptBuilder, region: bpy.types.Region,
                     rv3d: bpy.types.RegionView3D) -> tuple[list[tuple[Coord, bool]], list[Coord]]:
    """Where the prompt's Rays are in the view as it is now: each click's dot (with its label)
    and the box's outline; points behind the viewer are left out, and so is a box with one."""
    def project(ray: Ray) -> Coord | None:
        coord = view3d_utils.location_3d_to_region_2d(region, rv3d, ray.anchor)
        return None if coord is None else (coord.x, coord.y)

    dots = []
    for ray, on_object in prompt.clicks:
        coord = project(ray)
        if coord is not None:
            dots.append((coord, on_object))
    outline = [project(ray) for ray in prompt.box or ()]
    return dots, [] if None in outline else outline


def draw_status(header: bpy.types.Header, context: bpy.types.Context) -> None:
    """The status bar while the prompt is open (drawn in place of Blender's)."""
    layout = header.layout
    for text, icons in STATUS:
        for icon in icons[:-1]:
            layout.label(text="", icon=icon)
        layout.label(text=text, icon=icons[-1])


def navigates(context: bpy.types.Context, event: bpy.types.Event) -> bool:
    """Whether `event` orbits, pans or zooms the view: Blender gets it while the prompt is open."""
    if event.type == 'LEFTMOUSE':  # Alt+left mouse orbits where the preferences emulate a middle button
        return event.alt and context.preferences.inputs.use_mouse_emulate_3_button
    return event.type in NAVIGATION or event.type.startswith('NDOF_')


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
    """Click the DFF mesh to select the object under the cursor (Shift adds, Ctrl leaves out, a drag draws a box)"""

    bl_idname = "dff.click_select"
    bl_label = "Click Select (DFF)"
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
        self.begin(context)
        context.window_manager.modal_handler_add(self)
        if event.type == 'LEFTMOUSE' and event.value == 'PRESS':
            self.press(context, event)  # the toolbar's tool starts the prompt with this press
        return {'RUNNING_MODAL'}

    def modal(self, context: bpy.types.Context, event: bpy.types.Event) -> set[str]:
        if event.value == 'PRESS' and event.type in {'ESC', 'RIGHTMOUSE'}:
            self.finish(context, keep=False)
            return {'CANCELLED'}
        if event.value == 'PRESS' and event.type in {'RET', 'NUMPAD_ENTER'}:
            self.finish(context, keep=True)
            return {'FINISHED'}
        if navigates(context, event):
            return {'PASS_THROUGH'}
        if event.type == 'LEFTMOUSE':
            return self.left_mouse(context, event)
        if event.type == 'MOUSEMOVE' and self.prompt.pressed_at is not None:
            self.dragged_to = (event.mouse_x - self.region.x, event.mouse_y - self.region.y)
            self.region.tag_redraw()
            return {'RUNNING_MODAL'}
        # Mouse moves, timers and window events pass; other keys and buttons would act mid-prompt.
        return {'PASS_THROUGH'} if event.value not in KEY_VALUES else {'RUNNING_MODAL'}

    def left_mouse(self, context: bpy.types.Context, event: bpy.types.Event) -> set[str]:
        """Presses and releases in the viewport make the prompt; other left clicks pass."""
        # A second click in quick succession comes as a double click.
        if event.value in {'PRESS', 'DOUBLE_CLICK'} and self.press(context, event):
            return {'RUNNING_MODAL'}
        if event.value == 'RELEASE' and self.prompt.pressed_at is not None:
            self.release(context, event)
            return {'RUNNING_MODAL'}
        return {'PASS_THROUGH'}  # a click on a panel or another editor does its job

    def press(self, context: bpy.types.Context, event: bpy.types.Event) -> bool:
        """Start a click or a drag in the 3D viewport under the mouse; False elsewhere."""
        under_mouse = viewport_at(context.window.screen, event.mouse_x, event.mouse_y)
        if under_mouse is None:
            return False
        region, coord = under_mouse
        if region != self.region:  # a prompt lives in one view
            self.region = region
            self.prompt = PromptBuilder(cast=lambda pixel: cast_ray(context, region, region.data, pixel))
        self.prompt.press(coord)
        return True

    def release(self, context: bpy.types.Context, event: bpy.types.Event) -> None:
        coord = (event.mouse_x - self.region.x, event.mouse_y - self.region.y)
        self.dragged_to = None
        if self.prompt.release(coord, add=event.shift, leave_out=event.ctrl) and self.prompt.has_object():
            self.store_prompt()
            self.execute(context)
        self.region.tag_redraw()

    def store_prompt(self) -> None:
        """The prompt's rays, as cast when each was clicked, into `clicks` and `box` for `send`."""
        self.clicks.clear()
        self.box.clear()
        for ray, on_object in self.prompt.clicks:
            item = self.clicks.add()
            item.origin, item.direction, item.on_object = ray.origin, ray.direction, on_object
        for ray in self.prompt.box or ():
            item = self.box.add()
            item.origin, item.direction = ray.origin, ray.direction

    def begin(self, context: bpy.types.Context) -> None:
        """Open an empty prompt, drawn over the viewport, with the tool's cursor and its keys in
        the status bar."""
        self.prompt = PromptBuilder()
        self.region: bpy.types.Region | None = None
        self.dragged_to: Coord | None = None
        self.selected: list[str] = []       # queries this tool applied, taken back by Esc
        self.state = {"cancelled": False}   # read by replies still on their way after Esc
        self.draw_handle = bpy.types.SpaceView3D.draw_handler_add(self.draw_prompt, (context,), 'WINDOW',
                                                                  'POST_PIXEL')
        context.window.cursor_modal_set('EYEDROPPER')
        context.workspace.status_text_set(draw_status)

    def end(self, context: bpy.types.Context) -> None:
        """Take back what `begin` set up."""
        if self.draw_handle is not None:
            bpy.types.SpaceView3D.draw_handler_remove(self.draw_handle, 'WINDOW')
            self.draw_handle = None
        if context.window is not None:
            context.window.cursor_modal_restore()
        if context.workspace is not None:
            context.workspace.status_text_set(None)

    def cancel(self, context: bpy.types.Context) -> None:
        """Blender ends the prompt (another file loaded, the window closed): replies still on
        their way select nothing, and nothing of the tool stays on screen."""
        self.state["cancelled"] = True
        self.end(context)

    def finish(self, context: bpy.types.Context, keep: bool) -> None:
        self.end(context)
        if not keep:
            self.state["cancelled"] = True
            obj = context.scene.dff.query_object or context.scene.dff.mesh_object
            if obj is not None:
                for query in self.selected:
                    selection.clear_query(context, obj, query)
                if self.selected:
                    context.scene.dff.show_message("Click selection cancelled")
        if self.region is not None:
            self.region.tag_redraw()

    def draw_prompt(self, context: bpy.types.Context) -> None:
        if context.region != self.region:
            return
        dots, outline = prompt_on_screen(self.prompt, self.region, context.region_data)
        if self.dragged_to is not None and self.prompt.pressed_at is not None:
            outline = rectangle(self.prompt.pressed_at, self.dragged_to)
        points = gpu.shader.from_builtin('POINT_UNIFORM_COLOR')
        gpu.state.point_size_set(DOT_PIXELS)
        for on_object, colour in ((True, OBJECT_COLOUR), (False, BACKGROUND_COLOUR)):
            coords = [coord for coord, flag in dots if flag == on_object]
            if coords:
                points.uniform_float("color", colour)
                batch_for_shader(points, 'POINTS', {"pos": coords}).draw(points)
        gpu.state.point_size_set(1.0)  # Blender's default, which whatever draws next expects
        if outline:
            lines = gpu.shader.from_builtin('UNIFORM_COLOR')
            lines.uniform_float("color", BOX_COLOUR)
            batch_for_shader(lines, 'LINE_LOOP', {"pos": outline}).draw(lines)

    def send(self, context: bpy.types.Context) -> set[str]:
        props = context.scene.dff
        obj = selection.query_target(context)
        if not self.clicks and not self.box:
            raise UserError("no click to send: give 'clicks' or a 'box'")
        params = {**mesh_params(context, obj), "teacher": props.teacher,
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
            message = selection.apply_query(ctx, query, reply, obj.name)
            views = reply.result.get("views", 1)
            return f"{message} ({views} views)" if views > 1 else message

        worker_session.session().submit(context, api.QUERY_CLICK.name, api.QUERY_CLICK.request(**params),
                                        on_done=reply_handler(context.scene, apply, notices={"no_hit"}))
        props.show_message("Finding what was clicked...")
        return {'FINISHED'}


_CLASSES = (DFF_PG_prompt_ray, DFF_OT_click_select)

_register_classes, _unregister_classes = bpy.utils.register_classes_factory(_CLASSES)


def register() -> None:
    _register_classes()
    click_tool.register()


def unregister() -> None:
    click_tool.unregister()
    _unregister_classes()
