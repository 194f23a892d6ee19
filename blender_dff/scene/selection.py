"""Per-face probabilities of a query -> attributes, a vertex group and the face selection;
and separating the selected faces into their own object.

What a query leaves on the mesh:
- float face attribute `dff_probability`: the latest query's probabilities;
- colour attribute `dff_heat` (face corners, the active colour: Solid mode > Attribute shows
  it): the probabilities as a heat map, dimmed below the threshold;
- boolean face attribute `dff_<name>`: probability > threshold;
- vertex group `<name>`: per vertex, the largest probability of its faces;
- the edit-mode face selection, equal to the boolean attribute.
<name> is the query, cut to fit Blender's 63-byte names.
"""

from __future__ import annotations

import bmesh
import bpy
import numpy as np

from ..worker.client import Reply
from .mesh_import import FACE_INDEX_ATTR
from .modes import set_mode

PROBABILITY_ATTR = "dff_probability"
HEAT_ATTR = "dff_heat"
MASK_PREFIX = "dff_"
MAX_NAME_BYTES = 63 - len(MASK_PREFIX)  # Blender names hold 63 bytes
MAX_QUERY_LENGTH = 1000  # characters sent to the worker (which checks the text encoder's limit)
# Heat map: probability -> colour (dark blue, blue, green, yellow, red); dimmed where unselected.
HEAT_STOPS = np.array([0.0, 0.25, 0.5, 0.75, 1.0])
HEAT_COLOURS = np.array([[0.05, 0.03, 0.25], [0.05, 0.3, 0.9], [0.1, 0.75, 0.3], [0.95, 0.8, 0.1],
                         [0.85, 0.08, 0.03]])
UNSELECTED_DIMMING = 0.3


def object_name(query: str) -> str:
    """`query` as it names vertex groups and objects: cut (on a character boundary) to fit."""
    return query.encode("utf-8")[:MAX_NAME_BYTES].decode("utf-8", errors="ignore").strip()


def mask_name(query: str) -> str:
    """Name of the boolean face attribute holding the selection of `query`."""
    return MASK_PREFIX + object_name(query)


def check_query(text: str) -> str:
    """The query, stripped; ValueError when unusable."""
    query = text.strip()
    if not query:
        raise ValueError("the query is empty: type what to select, e.g. a label name")
    if len(query) > MAX_QUERY_LENGTH:
        raise ValueError(f"the query is {len(query)} characters long, more than {MAX_QUERY_LENGTH}")
    if mask_name(query) in (PROBABILITY_ATTR, HEAT_ATTR, FACE_INDEX_ATTR):
        raise ValueError(f"'{query}' cannot be a query: it would overwrite the attribute "
                         f"'{mask_name(query)}'")
    return query


def heat_colours(probability: np.ndarray, threshold: float) -> np.ndarray:
    """(F, 4) RGBA heat-map colours of face probabilities."""
    rgb = np.stack([np.interp(probability, HEAT_STOPS, HEAT_COLOURS[:, c]) for c in range(3)], axis=1)
    rgb[probability <= threshold] *= UNSELECTED_DIMMING
    return np.concatenate([rgb, np.ones((len(rgb), 1))], axis=1).astype(np.float32)


def _write_heat_map(mesh: bpy.types.Mesh, probability: np.ndarray, threshold: float) -> None:
    """Object mode: the heat map as the mesh's active colour attribute."""
    attribute = mesh.color_attributes.get(HEAT_ATTR)
    if attribute is not None and (attribute.data_type, attribute.domain) != ('FLOAT_COLOR', 'CORNER'):
        mesh.color_attributes.remove(attribute)
        attribute = None
    attribute = attribute or mesh.color_attributes.new(HEAT_ATTR, 'FLOAT_COLOR', 'CORNER')
    attribute.data.foreach_set("color", heat_colours(probability, threshold)[_loop_faces(mesh)].ravel())
    mesh.color_attributes.active_color_name = HEAT_ATTR


def check_dff_mesh(obj: bpy.types.Object | None) -> bpy.types.Object:
    """`obj` if it is a mesh made by the worker; ValueError saying what to do otherwise."""
    if obj is None:
        raise ValueError("no DFF mesh yet: train first, or Load Mesh from a trained workspace")
    if obj.type != 'MESH' or FACE_INDEX_ATTR not in obj.data.attributes:
        raise ValueError(f"'{obj.name}' was not made by DFF (it has no '{FACE_INDEX_ATTR}' "
                         "attribute): train again or Load Mesh")
    return obj


def _face_attribute(mesh: bpy.types.Mesh, name: str, data_type: str) -> bpy.types.Attribute:
    attribute = mesh.attributes.get(name)
    if attribute is not None and (attribute.data_type, attribute.domain) != (data_type, 'FACE'):
        mesh.attributes.remove(attribute)
        attribute = None
    return attribute or mesh.attributes.new(name, data_type, 'FACE')


def _read(collection: bpy.types.bpy_prop_collection, prop: str, dtype: type) -> np.ndarray:
    values = np.empty(len(collection), dtype=dtype)
    collection.foreach_get(prop, values)
    return values


def _loop_faces(mesh: bpy.types.Mesh) -> np.ndarray:
    """The face of each loop."""
    totals = _read(mesh.polygons, "loop_total", np.int32)
    return np.repeat(np.arange(len(mesh.polygons)), totals)


def vertex_weights(mesh: bpy.types.Mesh, face_probability: np.ndarray) -> np.ndarray:
    """Per vertex, the largest probability among its faces (0 for loose vertices)."""
    weights = np.zeros(len(mesh.vertices), dtype=np.float32)
    loop_vertices = _read(mesh.loops, "vertex_index", np.int32)
    np.maximum.at(weights, loop_vertices, face_probability[_loop_faces(mesh)])
    return weights


def _write_vertex_group(obj: bpy.types.Object, name: str, weights: np.ndarray) -> None:
    group = obj.vertex_groups.get(name) or obj.vertex_groups.new(name=name)
    # One call per distinct weight: the API has no bulk setter for weights.
    values, inverse = np.unique(weights, return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    for value, indices in zip(values, np.split(order, np.cumsum(np.bincount(inverse))[:-1])):
        group.add(indices.tolist(), float(value), 'REPLACE')


def _select_faces(mesh: bpy.types.Mesh, query: str, mask: np.ndarray) -> int:
    """Object mode: write the mask attribute and the face, edge and vertex selection."""
    _face_attribute(mesh, mask_name(query), 'BOOLEAN').data.foreach_set("value", mask)
    mesh.polygons.foreach_set("select", mask)
    loop_selected = mask[_loop_faces(mesh)]
    for elements, loop_prop in ((mesh.vertices, "vertex_index"), (mesh.edges, "edge_index")):
        selected = np.zeros(len(elements), dtype=bool)
        selected[_read(mesh.loops, loop_prop, np.int32)[loop_selected]] = True
        elements.foreach_set("select", selected)
    mesh.update()
    return int(mask.sum())


def apply_threshold(context: bpy.types.Context, obj: bpy.types.Object, query: str,
                    threshold: float) -> int:
    """Select the faces whose stored probability exceeds `threshold`, without the worker.
    Returns the number of selected faces."""
    mesh = obj.data
    if PROBABILITY_ATTR not in mesh.attributes:
        raise ValueError(f"'{obj.name}' has no '{PROBABILITY_ATTR}' attribute: run a query")
    # In edit mode the mesh data is stale and bmesh cannot write boolean layers on every
    # Blender we support, so the write happens in object mode, in bulk, and edit mode returns.
    mode = obj.mode
    set_mode(context, obj, 'OBJECT')
    probability = _read(mesh.attributes[PROBABILITY_ATTR].data, "value", np.float32)
    _write_heat_map(mesh, probability, threshold)
    count = _select_faces(mesh, query, probability > threshold)
    set_mode(context, obj, mode)
    return count


def write_query(context: bpy.types.Context, obj: bpy.types.Object, query: str,
                worker_probability: np.ndarray, threshold: float) -> int:
    """Write a query's probabilities (in the worker's face order) onto `obj` and leave it in
    edit mode with the faces above `threshold` selected. Returns their number."""
    set_mode(context, obj, 'OBJECT')
    mesh = obj.data
    worker_probability = np.asarray(worker_probability, dtype=np.float32).ravel()
    face_index = _read(mesh.attributes[FACE_INDEX_ATTR].data, "value", np.int32)
    if face_index.size and face_index.max() >= worker_probability.size:
        raise ValueError(
            f"the worker sent {worker_probability.size} face probabilities but '{obj.name}' "
            f"has faces up to index {int(face_index.max())}: the mesh is not the workspace's "
            "current mesh; use Load Mesh")
    if not np.isfinite(worker_probability).all():
        raise ValueError("the worker sent NaN or infinite face probabilities")
    probability = np.clip(worker_probability[face_index], 0.0, 1.0)

    _face_attribute(mesh, PROBABILITY_ATTR, 'FLOAT').data.foreach_set("value", probability)
    _write_heat_map(mesh, probability, threshold)
    _write_vertex_group(obj, object_name(query), vertex_weights(mesh, probability))
    count = _select_faces(mesh, query, probability > threshold)
    context.tool_settings.mesh_select_mode = (False, False, True)  # faces, not vertices
    set_mode(context, obj, 'EDIT')
    return count


def apply_query(context: bpy.types.Context, query: str, reply: Reply) -> str:
    """Apply a `query_text` reply to the scene's DFF mesh. Returns a summary for the user."""
    if "face_probability" not in reply.arrays:
        raise ValueError("the worker's query reply lacks the array 'face_probability'")
    props = context.scene.dff
    obj = check_dff_mesh(props.mesh_object)
    count = write_query(context, obj, query, reply.arrays["face_probability"], props.threshold)
    props.active_query = query
    return f"'{query}': selected {count} of {len(obj.data.polygons)} faces"


def clear_query(context: bpy.types.Context, obj: bpy.types.Object, query: str) -> None:
    """Take back what `query` left on `obj`: its mask attribute, its vertex group and the
    face selection (other queries' attributes and groups stay)."""
    set_mode(context, obj, 'OBJECT')
    mesh = obj.data
    for name in (mask_name(query), PROBABILITY_ATTR, HEAT_ATTR):
        if name in mesh.attributes:
            mesh.attributes.remove(mesh.attributes[name])
    group = obj.vertex_groups.get(object_name(query))
    if group is not None:
        obj.vertex_groups.remove(group)
    for elements in (mesh.polygons, mesh.edges, mesh.vertices):
        elements.foreach_set("select", np.zeros(len(elements), dtype=bool))
    mesh.update()
    if context.scene.dff.active_query == query:
        context.scene.dff.active_query = ""


def separate_selection(context: bpy.types.Context, obj: bpy.types.Object,
                       name: str) -> bpy.types.Object:
    """Move the selected faces of `obj` into a new object called `name` (attributes, colours,
    UVs, materials and vertex groups come along); the rest stays in `obj`. The new object
    ends up selected and active, in object mode."""
    set_mode(context, obj, 'EDIT')
    selected = sum(face.select for face in bmesh.from_edit_mesh(obj.data).faces)
    if not selected:
        raise ValueError(f"no faces of '{obj.name}' are selected: run a query or lower the "
                         "threshold")
    before = set(bpy.data.objects)
    with context.temp_override(active_object=obj, object=obj, edit_object=obj):
        bpy.ops.mesh.separate(type='SELECTED')
    set_mode(context, obj, 'OBJECT')
    part = next(o for o in bpy.data.objects if o not in before)
    part.name = part.data.name = object_name(name)
    set_mode(context, part, 'OBJECT')
    return part
