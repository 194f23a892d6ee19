"""Every draw function of the add-on's UI (the sidebar's panels, the preferences, what it adds to
Blender's menus and status bar, its operators' dialogs), run in real Blender (headless) against a
layout that checks each call as Blender would: the method and its keywords exist in this Blender's
UILayout, a property drawn exists on its data, an operator drawn is registered and only its own
properties are set, icons are real icon names. Headless Blender draws no UI, so without this a
renamed property or a mistyped icon shows only when an artist opens the panel.

Each state (fresh scene, imported dataset, DFF mesh, teachers, custom settings, training, errors,
the worker's environment) is drawn, and what must be on screen in it is checked."""

from __future__ import annotations

import sys
import threading
import types
from dataclasses import dataclass, field
from types import SimpleNamespace

import bpy
import numpy as np
import pytest

import blender_dff
from addon_helpers import cube_arrays, mesh_reply, query_reply
from blender_dff.worker.client import Reply

_UI = bpy.types.UILayout.bl_rna
PACKAGE = blender_dff.__name__

# What a fresh layout reads back for the attributes it was not given (RNA's defaults are not
# what Blender gives a new row or column).
_LAYOUT_DEFAULTS = {"enabled": True, "active": True, "alert": False, "scale_x": 1.0, "scale_y": 1.0,
                    "alignment": 'EXPAND', "use_property_split": False, "use_property_decorate": False}


# --- checking values against Blender's RNA -----------------------------------------------


def _blender() -> str:
    return f"Blender {bpy.app.version_string}"


def check_value(where: str, rna_prop: bpy.types.Property, value: object) -> None:
    """`value` is what Blender accepts for `rna_prop` (a function parameter or a property)."""
    kind = rna_prop.type
    if getattr(rna_prop, "is_array", False) and getattr(rna_prop, "array_length", 0):
        assert len(value) == rna_prop.array_length, f"{where}: expected {rna_prop.array_length} values, got {value!r}"
        return
    if kind == 'STRING':
        assert isinstance(value, str), f"{where}: expected a str, got {type(value).__name__} {value!r}"
    elif kind == 'BOOLEAN':
        assert isinstance(value, bool), f"{where}: expected a bool, got {type(value).__name__} {value!r}"
    elif kind == 'INT':
        assert isinstance(value, int) and not isinstance(value, bool), (
            f"{where}: expected an int, got {type(value).__name__} {value!r}")
    elif kind == 'FLOAT':
        assert isinstance(value, (int, float)) and not isinstance(value, bool), (
            f"{where}: expected a number, got {type(value).__name__} {value!r}")
    elif kind == 'ENUM':
        items = set(rna_prop.enum_items.keys())
        if not items:  # items made by a callback: nothing to check against
            return
        values = value if rna_prop.is_enum_flag else {value}
        assert isinstance(values, (set, frozenset)), f"{where}: expected a set of names, got {value!r}"
        bad = sorted(str(v) for v in values if v not in items)
        what = "icon" if rna_prop.identifier == "icon" else "value"
        assert not bad, f"{where}: no {what} {', '.join(bad)} in {_blender()}"


def bind(method: str, args: tuple, kwargs: dict) -> dict:
    """The arguments of a call of UILayout.`method` by parameter name, each checked against the
    parameter's type in this Blender (a keyword this version lacks fails)."""
    function = _UI.functions.get(method)
    assert function is not None, f"UILayout.{method}() does not exist in {_blender()}"
    inputs = [p for p in function.parameters if not p.is_output]
    assert len(args) <= len(inputs), f"UILayout.{method}() takes {len(inputs)} arguments, got {len(args)}"
    bound = dict(zip((p.identifier for p in inputs), args))
    for key, value in kwargs.items():
        assert key not in bound, f"UILayout.{method}(): '{key}' given twice"
        bound[key] = value
    params = {p.identifier: p for p in inputs}
    for key, value in bound.items():
        assert key in params, f"UILayout.{method}() has no parameter '{key}' in {_blender()}"
        if params[key].type != 'POINTER':
            check_value(f"UILayout.{method}({key}=)", params[key], value)
    missing = [p.identifier for p in inputs if p.is_required and p.identifier not in bound]
    assert not missing, f"UILayout.{method}() needs {', '.join(missing)}"
    return bound


def operator_type(idname: str) -> bpy.types.Struct:
    """The RNA type of the registered operator `idname` ("mod.name")."""
    module, _, name = idname.partition(".")
    assert module and name and "." not in name, f"'{idname}' is not an operator idname (module.name)"
    try:
        return getattr(getattr(bpy.ops, module), name).get_rna_type()
    except (AttributeError, KeyError) as exc:
        raise AssertionError(f"operator '{idname}' is not registered") from exc


# --- the recording layout ------------------------------------------------------------------


@dataclass
class Drawn:
    """One item a draw function put on screen, with the state of the layout it went into."""

    kind: str          # the UILayout method: "prop", "operator", "label", "progress", ...
    name: str          # the property, operator idname, label text, menu or panel idname
    args: dict         # every argument, by parameter name
    enabled: bool      # False: greyed out by this layout or one above it
    active: bool
    alert: bool
    data: object = None                                # prop(): the data drawn
    assigned: dict = field(default_factory=dict)       # operator(): the properties set on it


class Drawing(list):
    """Everything drawn into one layout and its sub-layouts, in order."""

    def of(self, kind: str) -> list[Drawn]:
        return [item for item in self if item.kind == kind]

    def names(self, kind: str) -> list[str]:
        return [item.name for item in self.of(kind)]

    def props(self) -> list[str]:
        return self.names("prop")

    def operators(self) -> list[str]:
        return self.names("operator")

    def labels(self) -> list[str]:
        return self.names("label")

    def operator(self, idname: str) -> Drawn:
        found = [item for item in self.of("operator") if item.name == idname]
        assert found, f"no {idname} among {self.operators()}"
        return found[0]

    def prop(self, name: str) -> Drawn:
        found = [item for item in self.of("prop") if item.name == name]
        assert found, f"no property {name} among {self.props()}"
        return found[0]


class OperatorProperties:
    """Stands in for what UILayout.operator() returns: setting a property the operator does not
    have, or a value of the wrong type, fails as it does in Blender."""

    def __init__(self, idname: str, rna_type: bpy.types.Struct, assigned: dict) -> None:
        object.__setattr__(self, "_idname", idname)
        object.__setattr__(self, "_rna_type", rna_type)
        object.__setattr__(self, "_assigned", assigned)

    def _property(self, name: str) -> bpy.types.Property:
        prop = self._rna_type.properties.get(name)
        if prop is None or name == "rna_type":
            raise AttributeError(f"operator '{self._idname}' has no property '{name}'")
        return prop

    def __setattr__(self, name: str, value: object) -> None:
        prop = self._property(name)
        if prop.is_readonly:
            raise AttributeError(f"property '{name}' of operator '{self._idname}' is read-only")
        check_value(f"{self._idname}.{name}", prop, value)
        self._assigned[name] = value

    def __getattr__(self, name: str) -> object:
        prop = self._property(name)
        return self._assigned.get(name, getattr(prop, "default", None))


class RecordingLayout:
    """Stands in for bpy.types.UILayout: records what a draw function puts in it and checks each
    call. A UILayout method it does not implement raises AttributeError naming it, so a new kind
    of drawing call is noticed (and implemented here, with its checks)."""

    def __init__(self, drawing: Drawing | None = None, parent: RecordingLayout | None = None) -> None:
        object.__setattr__(self, "_drawing", Drawing() if drawing is None else drawing)
        object.__setattr__(self, "_parent", parent)
        object.__setattr__(self, "_values", {})

    @property
    def drawing(self) -> Drawing:
        return self._drawing

    # Attributes: only UILayout's, with values of their type.

    def __setattr__(self, name: str, value: object) -> None:
        prop = _UI.properties.get(name)
        if prop is None or name == "rna_type":
            raise AttributeError(f"UILayout has no attribute '{name}'")
        if prop.is_readonly:
            raise AttributeError(f"UILayout.{name} is read-only")
        check_value(f"UILayout.{name}", prop, value)
        self._values[name] = value

    def __getattr__(self, name: str) -> object:
        if name.startswith("__"):
            raise AttributeError(name)
        prop = _UI.properties.get(name)
        if prop is not None and name != "rna_type":
            return self._values.get(name, _LAYOUT_DEFAULTS.get(name, getattr(prop, "default", None)))
        if name in _UI.functions:
            raise AttributeError(f"RecordingLayout does not implement UILayout.{name}(): add it to the test "
                                 f"with its checks")
        raise AttributeError(f"UILayout has no attribute '{name}'")

    def _inherited(self, name: str) -> bool:
        layout, values = self, []
        while layout is not None:
            values.append(layout._values.get(name, _LAYOUT_DEFAULTS[name]))
            layout = layout._parent
        return any(values) if name == "alert" else all(values)

    def _record(self, kind: str, name: str, args: dict, **extra) -> Drawn:
        item = Drawn(kind, name, args, self._inherited("enabled"), self._inherited("active"),
                     self._inherited("alert"), **extra)
        self._drawing.append(item)
        return item

    def _sub(self, method: str, args: tuple, kwargs: dict) -> RecordingLayout:
        bind(method, args, kwargs)
        return RecordingLayout(self._drawing, self)

    # Sub-layouts.

    def row(self, *args, **kwargs) -> RecordingLayout:
        return self._sub("row", args, kwargs)

    def column(self, *args, **kwargs) -> RecordingLayout:
        return self._sub("column", args, kwargs)

    def box(self, *args, **kwargs) -> RecordingLayout:
        return self._sub("box", args, kwargs)

    def split(self, *args, **kwargs) -> RecordingLayout:
        return self._sub("split", args, kwargs)

    def grid_flow(self, *args, **kwargs) -> RecordingLayout:
        return self._sub("grid_flow", args, kwargs)

    def column_flow(self, *args, **kwargs) -> RecordingLayout:
        return self._sub("column_flow", args, kwargs)

    def panel(self, *args, **kwargs) -> tuple[RecordingLayout, RecordingLayout]:
        """A sub-panel, drawn open: its header and its body."""
        bound = bind("panel", args, kwargs)
        self._record("panel", bound["idname"], bound)
        return RecordingLayout(self._drawing, self), RecordingLayout(self._drawing, self)

    # Items.

    def separator(self, *args, **kwargs) -> None:
        self._record("separator", "", bind("separator", args, kwargs))

    def label(self, *args, **kwargs) -> None:
        bound = bind("label", args, kwargs)
        self._record("label", bound.get("text", ""), bound)

    def prop(self, *args, **kwargs) -> None:
        bound = bind("prop", args, kwargs)
        data, name = bound["data"], bound["property"]
        rna = getattr(data, "bl_rna", None)
        assert rna is not None, f"prop(): {data!r} is not Blender data (drawing '{name}')"
        assert name in rna.properties, f"{rna.identifier} has no property '{name}'"
        self._record("prop", name, bound, data=data)

    def operator(self, *args, **kwargs) -> OperatorProperties:
        bound = bind("operator", args, kwargs)
        idname = bound["operator"]
        rna_type = operator_type(idname)
        item = self._record("operator", idname, bound)
        return OperatorProperties(idname, rna_type, item.assigned)

    def menu(self, *args, **kwargs) -> None:
        bound = bind("menu", args, kwargs)
        menu = getattr(bpy.types, bound["menu"], None)
        assert isinstance(menu, type) and issubclass(menu, bpy.types.Menu), f"no menu '{bound['menu']}'"
        self._record("menu", bound["menu"], bound)

    def popover(self, *args, **kwargs) -> None:
        bound = bind("popover", args, kwargs)
        panel = getattr(bpy.types, bound["panel"], None)
        assert isinstance(panel, type) and issubclass(panel, bpy.types.Panel), f"no panel '{bound['panel']}'"
        self._record("popover", bound["panel"], bound)

    def progress(self, *args, **kwargs) -> None:
        bound = bind("progress", args, kwargs)
        factor = bound.get("factor", 0.0)
        assert 0.0 <= factor <= 1.0, f"progress(factor={factor}) is outside 0..1"
        self._record("progress", bound.get("text", ""), bound)

    def template_icon(self, *args, **kwargs) -> None:
        bound = bind("template_icon", args, kwargs)  # icon_id is 0 in background mode: not checked
        self._record("template_icon", "", bound)

    def template_list(self, *args, **kwargs) -> None:
        bound = bind("template_list", args, kwargs)
        ui_list = getattr(bpy.types, bound["listtype_name"], None)
        assert isinstance(ui_list, type) and issubclass(ui_list, bpy.types.UIList), (
            f"no UI list '{bound['listtype_name']}'")
        for data, name in ((bound["dataptr"], bound["propname"]), (bound["active_dataptr"], bound["active_propname"])):
            assert name in data.bl_rna.properties, f"{data.bl_rna.identifier} has no property '{name}'"
        self._record("template_list", bound["propname"], bound)


# --- drawing the add-on's UI ------------------------------------------------------------


class DrawSelf:
    """The `self` Blender passes to a draw function: a layout, and the rest from `owner` (the
    panel's class, the preferences, an operator's properties)."""

    def __init__(self, layout: RecordingLayout, owner: object = None, **values) -> None:
        self.layout = layout
        self._owner = owner
        self.__dict__.update(values)

    def __getattr__(self, name: str) -> object:
        if name.startswith("__"):
            raise AttributeError(name)
        value = getattr(self._owner, name)
        return types.MethodType(value, self) if isinstance(value, types.FunctionType) else value


def addon_classes(base: type) -> list[type]:
    """The add-on's registered classes of one kind (panels, operators), by their names."""
    prefix = {bpy.types.Panel: "DFF_PT_", bpy.types.Operator: "DFF_OT_"}[base]
    found = [getattr(bpy.types, name) for name in dir(bpy.types) if name.startswith(prefix)]
    return [cls for cls in found if isinstance(cls, type) and issubclass(cls, base)]


def defined_panels() -> set[type]:
    """Every Panel class defined in the add-on's modules."""
    return {value for name, module in list(sys.modules.items())
            if name == PACKAGE or name.startswith(PACKAGE + ".")
            for value in vars(module).values()
            if isinstance(value, type) and issubclass(value, bpy.types.Panel) and value.__module__ == name}


def appended_draw_functions() -> list[tuple[type, types.FunctionType]]:
    """The add-on's functions appended (or prepended) to Blender's menus, headers and panels."""
    found = []
    for name in dir(bpy.types):
        owner = getattr(bpy.types, name, None)
        if not (isinstance(owner, type) and issubclass(owner, (bpy.types.Menu, bpy.types.Header, bpy.types.Panel))):
            continue
        for func in getattr(getattr(owner, "draw", None), "_draw_funcs", ()):
            # The add-on's module-level functions (not the owner's own draw method).
            if getattr(func, "__module__", "").split(".")[0] == PACKAGE and "." not in func.__qualname__:
                found.append((owner, func))
    return found


def draw_panel(panel: type, context: bpy.types.Context) -> Drawing | None:
    """What Blender draws of `panel`: nothing when its poll says no."""
    if hasattr(panel, "poll") and not panel.poll(context):
        return None
    layout = RecordingLayout()
    if hasattr(panel, "draw_header"):
        panel.draw_header(DrawSelf(RecordingLayout(layout.drawing), panel), context)
    if hasattr(panel, "draw_header_preset"):
        panel.draw_header_preset(DrawSelf(RecordingLayout(layout.drawing), panel), context)
    panel.draw(DrawSelf(layout, panel), context)
    return layout.drawing


def draw_function(func: types.FunctionType, owner: object, context: bpy.types.Context) -> Drawing:
    layout = RecordingLayout()
    func(DrawSelf(layout, owner), context)
    return layout.drawing


def operator_dialogs() -> list[type]:
    """The add-on's operators that draw a dialog (a `draw` using self.layout)."""
    return [cls for cls in addon_classes(bpy.types.Operator)
            if "draw" in vars(cls) and "layout" in cls.draw.__code__.co_names]


def draw_operator(cls: type, context: bpy.types.Context) -> Drawing:
    """An operator's dialog, its properties at their defaults (`layout.prop(self, ...)` finds
    them in the operator's RNA type, as on a running operator)."""
    rna_type = operator_type(cls.bl_idname)
    values = {prop.identifier: prop.default for prop in rna_type.properties
              if prop.identifier != "rna_type" and hasattr(prop, "default") and not getattr(prop, "is_array", False)}
    layout = RecordingLayout()
    cls.draw(DrawSelf(layout, cls, bl_rna=rna_type, **values), context)
    return layout.drawing


@dataclass
class UI:
    """One drawing of all the add-on draws in a state: its panels by class name (None when the
    panel's poll hides it), everything it adds to the status bar together, each menu entry."""

    panels: dict[str, Drawing | None]
    status_bar: Drawing
    menus: dict[str, Drawing]
    dialogs: dict[str, Drawing]

    def __getitem__(self, panel: str) -> Drawing:
        drawing = self.panels[panel]
        assert drawing is not None, f"{panel} is hidden"
        return drawing


def draw_ui(context: bpy.types.Context | None = None) -> UI:
    context = context or bpy.context
    panels = {panel.__name__: draw_panel(panel, context) for panel in addon_classes(bpy.types.Panel)}
    for name, drawing in panels.items():
        assert drawing is None or drawing, f"{name} is shown but draws nothing"
    status_bar = Drawing()
    menus = {}
    for owner, func in appended_draw_functions():
        drawing = draw_function(func, owner, context)
        if owner is bpy.types.STATUSBAR_HT_header:
            status_bar.extend(drawing)
        else:
            assert drawing, f"{func.__module__}.{func.__name__} adds nothing to {owner.__name__}"
            menus[f"{owner.__name__}:{func.__name__}"] = drawing
    dialogs = {cls.__name__: draw_operator(cls, context) for cls in operator_dialogs()
               if not hasattr(cls, "poll") or cls.poll(context)}
    return UI(panels, status_bar, menus, dialogs)


# --- states -----------------------------------------------------------------------------


@pytest.fixture
def ui_worker(worker, monkeypatch):
    """The add-on with a scripted worker and a worker Python that exists (this one)."""
    monkeypatch.setenv("DFF_WORKER_PYTHON", sys.executable)
    return worker


def pump() -> None:
    blender_dff.worker.session.pump()


def import_reply(n: int = 2) -> Reply:
    c2w = np.tile(np.eye(4, dtype=np.float32), (n, 1, 1))
    c2w[:, 2, 3] = np.arange(n) + 3.0
    intrinsics = np.tile(np.array([[500.0, 500.0, 320.0, 240.0]], np.float32), (n, 1))
    return Reply(ok=True, result={"n_images": n, "width": 640, "height": 480, "names": [f"r_{i}" for i in range(n)],
                                  "split": ["train"] * n, "labels": {"1": "mug", "2": "table"}},
                 arrays={"c2w": c2w, "intrinsics": intrinsics})


def import_dataset(worker, path) -> None:
    bpy.context.scene.dff.dataset_path = str(path)
    assert bpy.ops.dff.import_dataset() == {'FINISHED'}
    worker.reply(worker.sent[-1], import_reply())
    pump()


def load_mesh(worker, path) -> None:
    bpy.context.scene.dff.workspace_path = str(path)
    assert bpy.ops.dff.load_mesh() == {'FINISHED'}
    worker.reply(worker.sent[-1], mesh_reply(*cube_arrays(cuts=1)))
    pump()
    assert bpy.context.scene.dff.mesh_object is not None


def assert_idle_train(ui: UI) -> None:
    train = ui["DFF_PT_train"]
    assert {"dff.train", "dff.load_mesh"} <= set(train.operators())
    assert not train.of("progress") and "dff.cancel" not in train.operators()
    assert train.prop("teacher").enabled
    assert not ui.status_bar


# --- the tests --------------------------------------------------------------------------


def test_every_panel_of_the_add_on_is_registered_and_drawn(ui_worker):
    registered = addon_classes(bpy.types.Panel)
    assert registered and set(registered) == defined_panels()
    assert {"DFF_PT_scene", "DFF_PT_train", "DFF_PT_select"} <= {panel.__name__ for panel in registered}
    # The status-bar functions are found: the training jobs' and the worker environment's.
    assert [func for owner, func in appended_draw_functions() if owner is bpy.types.STATUSBAR_HT_header]


def test_a_fresh_scene(ui_worker):
    ui = draw_ui()
    assert ui.panels["DFF_PT_status"] is None  # nothing to say yet
    scene = ui["DFF_PT_scene"]
    assert {"dataset_path", "workspace_path"} <= set(scene.props()) and "dff.import_dataset" in scene.operators()
    assert {"image_scale", "test_every", "bounds", "set_render_size"} <= set(ui["DFF_PT_import_options"].props())
    assert {"capture_source", "capture_path"} <= set(ui["DFF_PT_capture"].props())
    assert "dff.capture_scene" in ui["DFF_PT_capture"].operators()
    assert not any("images," in label for label in scene.labels())
    train = ui["DFF_PT_train"]
    assert {"teacher", "preset", "mesh_object"} <= set(train.props())
    assert {"custom_settings", "max_faces"} <= set(ui["DFF_PT_train_advanced"].props())
    assert not {"sam_checkpoint", "clip_model", "clip_pretrained", "nerf_steps"} & set(train.props())
    assert not train.of("template_icon")
    assert_idle_train(ui)
    select = ui["DFF_PT_select"]
    assert {"query_text", "threshold"} <= set(select.props())
    assert {"dff.select_text", "dff.click_select", "dff.select_similar", "dff.show_heat_map",
            "dff.separate", "dff.separate_all", "dff.link_mesh"} <= set(select.operators())
    assert "texture_size" in ui["DFF_PT_texture"].props() and "dff.bake_texture" in ui["DFF_PT_texture"].operators()
    assert "text_mode" not in select.props() and not select.operator("dff.select_text").assigned
    for name, drawing in ui.menus.items():
        assert all(item.name.startswith("dff.") for item in drawing.of("operator")), name


def test_capture_options(ui_worker, tmp_path):
    props = bpy.context.scene.dff
    for source in props.bl_rna.properties["capture_source"].enum_items.keys():
        props.capture_source = source
        assert ("capture_views" in draw_ui()["DFF_PT_capture"].props()) == (source == 'ORBIT')
    unsaved = len(draw_ui()["DFF_PT_capture"].labels())  # and where an unsaved file's capture goes
    bpy.ops.wm.save_as_mainfile(filepath=str(tmp_path / "scene.blend"))
    saved = len(draw_ui()["DFF_PT_capture"].labels())
    props.capture_path = str(tmp_path / "capture")
    assert unsaved >= 1 and saved >= 1 and len(draw_ui()["DFF_PT_capture"].labels()) < saved


def test_after_importing_a_dataset_with_labels(ui_worker, tmp_path):
    import_dataset(ui_worker, tmp_path)
    ui = draw_ui()
    status = ui["DFF_PT_status"]
    assert status.labels() and status.of("label")[0].args.get("icon") == 'INFO'
    assert any("2 images" in label for label in ui["DFF_PT_scene"].labels())
    buttons = [item.assigned for item in ui["DFF_PT_select"].of("operator") if item.name == "dff.select_text"]
    assert {"text": "mug"} in buttons and {"text": "table"} in buttons
    assert_idle_train(ui)


def test_with_a_dff_mesh_and_a_query(ui_worker, tmp_path):
    load_mesh(ui_worker, tmp_path)
    ui = draw_ui()
    assert ui["DFF_PT_status"].labels()
    assert_idle_train(ui)
    assert bpy.ops.dff.select_text(text="mug") == {'FINISHED'}
    n_faces = len(bpy.context.scene.dff.mesh_object.data.polygons)
    ui_worker.reply(ui_worker.sent[-1], query_reply(np.linspace(0, 1, n_faces), query="mug"))
    pump()
    ui = draw_ui()
    assert not bpy.context.scene.dff.error, bpy.context.scene.dff.error
    assert ui["DFF_PT_status"].labels() and ui["DFF_PT_select"].prop("threshold").args.get("slider")
    assert set(ui.dialogs["DFF_OT_separate_all"].props()) == {"close", "fill_holes"}
    bpy.context.scene.dff.teacher = 'clip'  # the parts to cut into: the label set
    assert set(draw_ui().dialogs["DFF_OT_separate_all"].props()) == {"close", "fill_holes", "label_set"}


@pytest.mark.parametrize("teacher, shown, hidden", [
    ('labels', set(), {"sam_checkpoint", "clip_model", "clip_pretrained", "text_mode"}),
    ('sam', {"sam_checkpoint"}, {"clip_model", "clip_pretrained", "text_mode"}),
    ('clip', {"clip_model", "clip_pretrained", "text_mode", "negatives"}, {"sam_checkpoint", "label_set"}),
])
def test_each_teacher_shows_its_settings(ui_worker, teacher, shown, hidden):
    props = bpy.context.scene.dff
    props.teacher = teacher
    ui = draw_ui()
    drawn = set(ui["DFF_PT_train"].props()) | set(ui["DFF_PT_select"].props())
    assert shown <= drawn and not hidden & drawn
    if teacher == 'clip':
        assert ui["DFF_PT_select"].prop("text_mode").args.get("expand")
        props.text_mode = 'LABEL_SET'
        select = draw_ui()["DFF_PT_select"].props()
        assert "label_set" in select and "negatives" not in select


def test_custom_settings(ui_worker):
    custom = {"nerf_steps", "feature_steps", "mesh_resolution"}
    assert not custom & set(draw_ui()["DFF_PT_train_advanced"].props())
    bpy.context.scene.dff.custom_settings = True
    assert custom <= set(draw_ui()["DFF_PT_train_advanced"].props())


def test_while_training(ui_worker, tmp_path):
    scene = bpy.context.scene
    scene.dff.workspace_path = str(tmp_path)
    assert bpy.ops.dff.train() == {'FINISHED'}
    sent = ui_worker.sent[-1]
    train = draw_ui()["DFF_PT_train"]  # just sent: no progress yet
    assert train.of("progress") and "dff.cancel" in train.operators()

    preview = np.zeros((8, 16, 3), np.uint8)
    for step in (10, 20, 30):
        ui_worker.progress(sent, {"stage": "nerf", "step": step, "total": 200, "eta": 42.0,
                                  "metrics": {"loss": 0.05, "psnr": 15.0 + step / 10},
                                  "arrays": {"preview": preview}})
    pump()
    ui = draw_ui()
    train = ui["DFF_PT_train"]
    (bar,) = train.of("progress")
    assert 0.0 < bar.args["factor"] < 1.0 and bar.name
    assert "dff.cancel" in train.operators()
    assert len(train.of("template_icon")) == 2  # the training view's preview and the PSNR curve
    # The settings are greyed out, Train is not offered again.
    assert not train.prop("teacher").enabled and not ui["DFF_PT_train_advanced"].prop("max_faces").enabled
    assert not bpy.ops.dff.train.poll()
    assert ui.status_bar.of("progress") and "dff.cancel" in ui.status_bar.operators()

    # Seen from another scene, the status bar names the training scene and cancels its job.
    other = bpy.data.scenes.new("Other")
    with bpy.context.temp_override(scene=other, view_layer=other.view_layers[0]):
        ui = draw_ui()
        assert scene.name in ui.status_bar.of("progress")[0].name
        assert scene.name in ui.status_bar.operator("dff.cancel").assigned.values()
        other_train = ui["DFF_PT_train"]
        assert not other_train.of("progress") and other_train.prop("teacher").enabled

    assert bpy.ops.dff.cancel() == {'FINISHED'}
    assert draw_ui()["DFF_PT_train"].of("progress")  # cancelling: still shown until the reply
    ui_worker.reply(sent, Reply.failure("cancelled", "cancelled by the user", "Run the same stage again to resume."))
    pump()
    ui = draw_ui()
    assert_idle_train(ui)
    assert "dff.error_details" in ui["DFF_PT_status"].operators()


def test_an_error_shown(ui_worker, tmp_path):
    load_mesh(ui_worker, tmp_path)
    for hint in ("Known labels: mug, table", ""):
        assert bpy.ops.dff.select_text(text="unicorn") == {'FINISHED'}
        ui_worker.reply(ui_worker.sent[-1], Reply.failure("unknown_label", "no label 'unicorn'", hint))
        pump()
        ui = draw_ui()
        status = ui["DFF_PT_status"]
        assert "dff.error_details" in status.operators()
        icons = [item.args.get("icon", 'NONE') for item in status.of("label")]
        assert icons[0] == 'ERROR' and status.of("label")[0].alert
        assert any("unicorn" in label for label in status.labels())
        assert ('INFO' in icons) == bool(hint)
        details = "\n".join(ui.dialogs["DFF_OT_error_details"].labels())
        assert "unicorn" in details and hint in details


def test_a_worker_that_cannot_run(ui_worker, monkeypatch, tmp_path):
    monkeypatch.setenv("DFF_WORKER_PYTHON", str(tmp_path / "missing" / "python"))
    status = draw_ui()["DFF_PT_status"]
    assert status.of("label")[0].args.get("icon") == 'ERROR' and "Worker:" in status.labels()[0]
    assert status.operator("preferences.addon_show").assigned == {"module": blender_dff.ADDON_ID}


@pytest.fixture
def preferences(ui_worker, monkeypatch):
    """The add-on's preferences, as when it is enabled in Preferences > Add-ons (probes of the
    Python set there are not started)."""
    from blender_dff.worker import state as worker_state

    monkeypatch.setattr(worker_state, "start_probe", lambda *args, **kwargs: None)
    addons = bpy.context.preferences.addons
    addon = addons.new()
    addon.module = blender_dff.ADDON_ID
    assert addon.preferences is not None
    try:
        yield addon.preferences
    finally:
        addons.remove(addons[blender_dff.ADDON_ID])


def draw_preferences(prefs: bpy.types.AddonPreferences) -> Drawing:
    layout = RecordingLayout()
    type(prefs).draw(DrawSelf(layout, prefs), bpy.context)
    assert layout.drawing
    return layout.drawing


def test_preferences(preferences, monkeypatch, tmp_path):
    from blender_dff.worker import state as worker_state
    from blender_dff.worker.environment import EnvironmentReport

    state = worker_state.STATE
    drawing = draw_preferences(preferences)  # no Python yet
    assert {"python", "torch_variant", "host", "port", "token"} <= set(drawing.props())
    assert {"dff.check_worker", "dff.stop_worker", "dff.create_worker_env"} <= set(drawing.operators())
    assert not drawing.operator("dff.test_connection").enabled and not drawing.prop("port").active
    assert "dff.cancel_worker_env" not in drawing.operators()
    # Without a Python, the status panel says where to make one; Create's dialog shows (it lists
    # the commands to run by hand when online access is off).
    ui = draw_ui()
    assert "preferences.addon_show" in ui["DFF_PT_status"].operators()
    assert ui.dialogs["DFF_OT_create_worker_env"].labels()

    python = str(tmp_path / "env" / "bin" / "python")
    preferences.python = python
    monkeypatch.setitem(state.probing, python, threading.Thread())
    icons = [item.args.get("icon") for item in draw_preferences(preferences).of("label")]
    assert 'TIME' in icons
    del state.probing[python]

    monkeypatch.setitem(state.reports, python, EnvironmentReport(python, python_version="3.11", torch_version="2.5",
                                                                 device="cpu"))
    icons = [item.args.get("icon") for item in draw_preferences(preferences).of("label")]
    assert 'CHECKMARK' in icons
    state.reports[python] = EnvironmentReport(python, python_version="3.11", missing=("torch",))
    failed = [item for item in draw_preferences(preferences).of("label") if item.args.get("icon") == 'ERROR']
    assert failed and failed[0].alert and "torch" in failed[0].name

    build = SimpleNamespace(done=False, fraction=0.4, message="Installing torch", cancel=lambda: None)
    monkeypatch.setattr(state, "build", build)
    drawing = draw_preferences(preferences)
    assert drawing.of("progress") and "dff.cancel_worker_env" in drawing.operators()
    assert "dff.create_worker_env" not in drawing.operators()
    ui = draw_ui()
    assert ui.status_bar.of("progress") and "dff.cancel_worker_env" in ui.status_bar.operators()
    monkeypatch.setattr(state, "build", None)
    assert not draw_ui().status_bar

    monkeypatch.setattr(state, "build_error", "pip failed: no space left on device")
    failed = [item for item in draw_preferences(preferences).of("label") if "no space left" in item.name]
    assert failed and failed[0].alert

    preferences.host = "gpu.example"
    monkeypatch.setattr(state, "connection", "Connected to gpu.example:5000")
    drawing = draw_preferences(preferences)
    assert drawing.operator("dff.test_connection").enabled and drawing.prop("port").active
    assert any("Connected" in label for label in drawing.labels())


# --- the checks themselves --------------------------------------------------------------


@pytest.mark.parametrize("call, error, words", [
    (lambda layout: layout.prop(bpy.context.scene.dff, "no_such_property"), AssertionError, "no_such_property"),
    (lambda layout: layout.prop(SimpleNamespace(teacher='sam'), "teacher"), AssertionError, "not Blender data"),
    (lambda layout: layout.operator("dff.no_such_operator"), AssertionError, "dff.no_such_operator"),
    (lambda layout: setattr(layout.operator("dff.cancel"), "no_such", ""), AttributeError, "no_such"),
    (lambda layout: setattr(layout.operator("dff.cancel"), "scene", 3), AssertionError, "expected a str"),
    (lambda layout: layout.label(text=3), AssertionError, "expected a str"),
    (lambda layout: layout.label(text="x", icon='NO_SUCH_ICON'), AssertionError, "NO_SUCH_ICON"),
    (lambda layout: layout.row(no_such_keyword=True), AssertionError, "no_such_keyword"),
    (lambda layout: layout.progress(factor=1.5), AssertionError, "outside"),
    (lambda layout: layout.template_ID(None, "image"), AttributeError, "template_ID"),
    (lambda layout: layout.no_such_method(), AttributeError, "no_such_method"),
    (lambda layout: setattr(layout, "no_such_attribute", True), AttributeError, "no_such_attribute"),
    (lambda layout: setattr(layout, "alignment", 'SIDEWAYS'), AssertionError, "SIDEWAYS"),
])
def test_the_recording_layout_rejects_what_blender_would(addon, call, error, words):
    with pytest.raises(error, match=words):
        call(RecordingLayout().column())


def test_the_recording_layout_accepts_and_records_good_calls(addon):
    layout = RecordingLayout()
    box = layout.box()
    box.enabled = False
    box.prop(bpy.context.scene.dff, "teacher", text="", icon='OUTLINER')
    box.operator("dff.cancel", text="", icon='CANCEL').scene = "Scene"
    layout.label(text="done")
    drawing = layout.drawing
    assert [(item.kind, item.name, item.enabled) for item in drawing] == [
        ("prop", "teacher", False), ("operator", "dff.cancel", False), ("label", "done", True)]
    assert drawing.operator("dff.cancel").assigned == {"scene": "Scene"}
