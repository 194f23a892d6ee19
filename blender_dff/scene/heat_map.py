"""The heat map of a query: the probabilities of the faces as a colour attribute, and showing it
in a 3D view.

`dff_heat` is a byte colour on face corners (4 bytes a corner, not a float colour's 16: it is
saved and kept in every undo step). The mesh's active and render colours stay the user's
(Vertex Paint paints the active one): Show Heat Map makes it the active colour while it is shown,
and hiding it puts back the view's shading and the active colour it replaced.
"""

from __future__ import annotations

import bpy
import numpy as np

from .mesh_import import corners_per_face

HEAT_ATTR = "dff_heat"
# Heat map: probability -> colour (dark blue, blue, green, yellow, red); dimmed where unselected.
HEAT_STOPS = np.array([0.0, 0.25, 0.5, 0.75, 1.0])
HEAT_COLOURS = np.array([[0.05, 0.03, 0.25], [0.05, 0.3, 0.9], [0.1, 0.75, 0.3], [0.95, 0.8, 0.1],
                         [0.85, 0.08, 0.03]])  # linear RGB
UNSELECTED_DIMMING = 0.3
HEAT_LEVELS = 256  # the heat map is stored in bytes: finer steps of probability would not show
# On the object: the view shading and active colour that Show Heat Map replaced, to put back.
HEAT_VIEW_PROP = "dff_heat_map_view"


def _srgb(linear: np.ndarray) -> np.ndarray:
    """Linear colour in [0, 1] -> sRGB, the encoding byte colour attributes store."""
    return np.where(linear <= 0.0031308, 12.92 * linear, 1.055 * np.power(linear, 1 / 2.4) - 0.055)


def _heat_table() -> np.ndarray:
    """The heat map's sRGBA colour of each probability level, dimmed (the first HEAT_LEVELS)
    and selected (the next): (2 HEAT_LEVELS, 4) float32."""
    levels = np.linspace(0.0, 1.0, HEAT_LEVELS)
    rgb = np.stack([np.interp(levels, HEAT_STOPS, HEAT_COLOURS[:, c]) for c in range(3)], axis=1)
    rgba = np.ones((2, HEAT_LEVELS, 4), dtype=np.float32)
    rgba[0, :, :3] = _srgb(rgb * UNSELECTED_DIMMING)
    rgba[1, :, :3] = _srgb(rgb)
    return rgba.reshape(-1, 4)


_HEAT_TABLE = _heat_table()


def heat_colours(probability: np.ndarray, selected: np.ndarray) -> np.ndarray:
    """(F, 4) heat-map colours of faces, sRGBA floats."""
    level = np.rint(np.clip(probability, 0.0, 1.0) * (HEAT_LEVELS - 1)).astype(np.intp)
    return _HEAT_TABLE[level + HEAT_LEVELS * selected]


def _heat_attribute(mesh: bpy.types.Mesh) -> bpy.types.Attribute:
    """The heat map's attribute, made if missing (or if an older version made it as floats).
    A new colour attribute becomes the active and render colour of a mesh that has none: both
    are put back, so that Vertex Paint does not paint on the heat map unasked."""
    colours = mesh.color_attributes
    attribute = mesh.attributes.get(HEAT_ATTR)
    if attribute is not None and (attribute.data_type, attribute.domain) == ('BYTE_COLOR', 'CORNER'):
        return attribute
    active, render = colours.active_color_name, colours.default_color_name
    if attribute is not None:
        mesh.attributes.remove(attribute)
    attribute = colours.new(HEAT_ATTR, 'BYTE_COLOR', 'CORNER')
    colours.active_color_name, colours.default_color_name = active, render
    return attribute


def write_heat_map(mesh: bpy.types.Mesh, probability: np.ndarray, selected: np.ndarray) -> None:
    """Object mode: the heat map of face `probability`, dimmed where not `selected`, on every
    corner. About 0.3 s for 1M faces (`foreach_set` converts colour by colour), so the
    threshold slider recolours once it stops (`selection.apply_threshold`)."""
    colours = np.repeat(heat_colours(probability, selected), corners_per_face(mesh), axis=0)
    _heat_attribute(mesh).data.foreach_set("color_srgb", colours.ravel())


def heat_map_shown(shading: bpy.types.View3DShading, mesh: bpy.types.Mesh) -> bool:
    """Whether a 3D view's `shading` shows the heat map of `mesh`: Solid mode coloured by the
    active colour attribute ('VERTEX', "Attribute" in the UI), and that is the heat map."""
    return ((shading.type, shading.color_type) == ('SOLID', 'VERTEX')
            and mesh.color_attributes.active_color_name == HEAT_ATTR)


def show_heat_map(shading: bpy.types.View3DShading, obj: bpy.types.Object) -> None:
    """Colour a 3D view's `shading` by the heat map of `obj`. Solid mode shows the active colour
    attribute only, so the heat map becomes it until hide_heat_map; what is replaced is kept on
    the object, which undo restores together with the mesh's active colour."""
    colours = obj.data.color_attributes
    if HEAT_ATTR not in colours:
        raise ValueError(f"'{obj.name}' has no heat map: run a query first")
    active = colours.active_color_name
    if active == HEAT_ATTR:  # already shown in another view
        active = obj.get(HEAT_VIEW_PROP, {}).get("active_color", colours.default_color_name)
    obj[HEAT_VIEW_PROP] = {"type": shading.type, "color_type": shading.color_type,
                           "active_color": active}
    shading.type, shading.color_type = 'SOLID', 'VERTEX'
    colours.active_color_name = HEAT_ATTR


def hide_heat_map(shading: bpy.types.View3DShading, obj: bpy.types.Object) -> None:
    """Put back the shading and the active colour that show_heat_map replaced. Without a record
    of them (undone since): Solid mode coloured by material, and the render colour active."""
    colours = obj.data.color_attributes
    remembered = obj.pop(HEAT_VIEW_PROP, {})
    shading.type = remembered.get("type", 'SOLID')
    shading.color_type = remembered.get("color_type", 'MATERIAL')
    active = remembered.get("active_color", colours.default_color_name)
    colours.active_color_name = active if active in colours and active != HEAT_ATTR else ""
