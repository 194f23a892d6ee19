"""Per-face probabilities of a query -> attributes, a vertex group, the face selection and a
heat map (`heat_map`); the threshold slider; separating the selected faces into their own object.

What a query leaves on the mesh:
- float face attribute `dff_probability`: the latest query's probabilities;
- byte colour attribute `dff_heat` (face corners): the probabilities as a heat map, dimmed below
  the threshold;
- boolean face attribute `dff_<name>`: probability > threshold;
- vertex group `<name>`: per vertex, the largest probability of its faces;
- the face selection, equal to the boolean attribute (with the vertices and edges of the
  selected faces).
<name> is the query, cut to fit Blender's 63-byte names.

Moving the threshold rewrites all of these but the vertex group (see `apply_threshold`).
"""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass

import bmesh
import bpy
import numpy as np

from ..worker.client import Reply
from . import heat_map
from .heat_map import HEAT_ATTR
from .mesh_import import FACE_INDEX_ATTR, VERTEX_INDEX_ATTR, corners_per_face, read_array
from .modes import mesh_data_writable, set_mode

PROBABILITY_ATTR = "dff_probability"
MASK_PREFIX = "dff_"
MAX_NAME_BYTES = 63 - len(MASK_PREFIX)  # Blender names hold 63 bytes
MAX_QUERY_LENGTH = 1000  # characters sent to the worker (which checks the text encoder's limit)
# Blender's own attributes behind `MeshVertex.select` & co. and the corners' vertices and
# edges: as attributes they are read and written as whole arrays, where `foreach_set` on
# `mesh.polygons` goes element by element (75 ms for 1M faces; 0.9 s in Blender 5.0).
SELECT_ATTRS = {'POINT': ".select_vert", 'EDGE': ".select_edge", 'FACE': ".select_poly"}
CORNER_ATTRS = {'POINT': ".corner_vert", 'EDGE': ".corner_edge"}


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
    if mask_name(query) in (PROBABILITY_ATTR, HEAT_ATTR, FACE_INDEX_ATTR, VERTEX_INDEX_ATTR):
        raise ValueError(f"'{query}' cannot be a query: it would overwrite the attribute "
                         f"'{mask_name(query)}'")
    return query


def check_dff_mesh(obj: bpy.types.Object | None, scene: bpy.types.Scene | None = None) -> bpy.types.Object:
    """`obj` if it is a mesh made by the worker (and in `scene`, when given); ValueError saying
    what to do otherwise."""
    if obj is None:
        raise ValueError("no DFF mesh yet: train first, or Load Mesh from a trained workspace")
    if scene is not None and scene.objects.get(obj.name) != obj:
        raise ValueError(f"'{obj.name}' is not in the scene any more: Load Mesh to bring the mesh back")
    if obj.type != 'MESH' or FACE_INDEX_ATTR not in obj.data.attributes:
        raise ValueError(f"'{obj.name}' was not made by DFF (it has no '{FACE_INDEX_ATTR}' "
                         "attribute): train again or Load Mesh")
    return obj


def ensure_attribute(mesh: bpy.types.Mesh, name: str, data_type: str,
                     domain: str = 'FACE') -> bpy.types.Attribute:
    """The attribute `name` of `mesh`, made (or made again, when it holds another type or
    domain) if need be."""
    attribute = mesh.attributes.get(name)
    if attribute is not None and (attribute.data_type, attribute.domain) != (data_type, domain):
        mesh.attributes.remove(attribute)
        attribute = None
    return attribute or mesh.attributes.new(name, data_type, domain)


def vertex_weights(mesh: bpy.types.Mesh, face_probability: np.ndarray) -> np.ndarray:
    """Per vertex, the largest probability among its faces (0 for loose vertices)."""
    weights = np.zeros(len(mesh.vertices), dtype=np.float32)
    corner_vertices = read_array(mesh.attributes[CORNER_ATTRS['POINT']].data, "value", np.int32)
    np.maximum.at(weights, corner_vertices, np.repeat(face_probability, corners_per_face(mesh)))
    return weights


def _write_vertex_group(obj: bpy.types.Object, name: str, weights: np.ndarray) -> None:
    group = obj.vertex_groups.get(name) or obj.vertex_groups.new(name=name)
    # One call per distinct weight: the API has no bulk setter for weights.
    values, inverse = np.unique(weights, return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    for value, indices in zip(values, np.split(order, np.cumsum(np.bincount(inverse))[:-1])):
        group.add(indices.tolist(), float(value), 'REPLACE')


def _corners_of_selected(corner_values: np.ndarray, selected: np.ndarray, corners: int | np.ndarray) -> np.ndarray:
    """Of one value per corner, those of the corners of the `selected` faces."""
    if isinstance(corners, int):  # triangles: a face's corners are a row of three
        return corner_values.reshape(-1, 3).take(np.flatnonzero(selected), axis=0)
    return corner_values[np.repeat(selected, corners)]


def _select_faces(mesh: bpy.types.Mesh, selected: np.ndarray) -> None:
    """Object mode: select the faces `selected`, and the vertices and edges of those faces (as
    face select mode has them); nothing else."""
    corners = corners_per_face(mesh)
    ensure_attribute(mesh, SELECT_ATTRS['FACE'], 'BOOLEAN').data.foreach_set("value", selected)
    for domain, elements in (('POINT', mesh.vertices), ('EDGE', mesh.edges)):
        corner_values = read_array(mesh.attributes[CORNER_ATTRS[domain]].data, "value", np.int32)
        flags = np.zeros(len(elements), dtype=bool)
        # numpy scatters through its own index type faster than it converts on the way
        flags[_corners_of_selected(corner_values, selected, corners).astype(np.intp)] = True
        ensure_attribute(mesh, SELECT_ATTRS[domain], 'BOOLEAN', domain).data.foreach_set("value", flags)


def _write_threshold(mesh: bpy.types.Mesh, query: str, probability: np.ndarray, threshold: float,
                     heat: bool = True) -> None:
    """Object mode: the mask attribute, the selection and (with `heat`) the heat map of `threshold`."""
    selected = probability > threshold
    ensure_attribute(mesh, mask_name(query), 'BOOLEAN').data.foreach_set("value", selected)
    _select_faces(mesh, selected)
    if heat:
        heat_map.write_heat_map(mesh, probability, selected)
    mesh.update()


@dataclass
class _Pending:
    """What the threshold slider left to do once it stops moving."""

    obj: str        # the object's name (a reference would not survive undo)
    query: str
    threshold: float
    selection: bool  # the mask and the selection too (edit mode), not only the heat map


SETTLE = 0.2  # seconds without a slider move before the slow part of its update runs
_PENDING: dict[str, _Pending] = {}
_last_move = 0.0


def apply_threshold(context: bpy.types.Context, obj: bpy.types.Object, query: str,
                    threshold: float) -> int:
    """Select the faces whose stored probability exceeds `threshold`, without the worker, fast
    enough for a slider (scripts/bench_threshold.py: 25 to 40 ms for 1M faces). In object mode
    the mask and the selection are written at once, in bulk; what is slower waits until the
    slider has stood still for SETTLE seconds (`settle`): the heat map (about 0.3 s for 1M
    faces, `foreach_set` converting colour by colour) and, in edit mode, everything (leaving
    edit mode and coming back costs about 0.7 s: edit mode's BMesh has no bulk access, and face
    by face is no faster). Returns the number of faces above `threshold`."""
    global _last_move
    mesh = obj.data
    if PROBABILITY_ATTR not in mesh.attributes:
        raise ValueError(f"'{obj.name}' has no '{PROBABILITY_ATTR}' attribute: run a query")
    probability = read_array(mesh.attributes[PROBABILITY_ATTR].data, "value", np.float32)
    editing = obj.mode == 'EDIT'
    if not editing:
        _write_threshold(mesh, query, probability, threshold, heat=False)
    _PENDING[obj.name] = _Pending(obj.name, query, threshold, selection=editing)
    _last_move = time.monotonic()
    if not bpy.app.timers.is_registered(_settle_tick):
        bpy.app.timers.register(_settle_tick, first_interval=SETTLE)
    return int((probability > threshold).sum())


def settle() -> None:
    """Finish what the slider left pending, now (before anything reads the selection, and in
    tests and scripts, where timers do not run)."""
    for pending in list(_PENDING.values()):
        _PENDING.pop(pending.obj, None)
        obj = bpy.data.objects.get(pending.obj)
        if obj is None or obj.type != 'MESH' or PROBABILITY_ATTR not in obj.data.attributes:
            continue  # deleted or cleared meanwhile
        scene = obj.users_scene[0] if obj.users_scene else bpy.context.scene
        with bpy.context.temp_override(scene=scene, view_layer=scene.view_layers[0]):
            with mesh_data_writable(bpy.context, obj):
                probability = read_array(obj.data.attributes[PROBABILITY_ATTR].data, "value", np.float32)
                if pending.selection:
                    _write_threshold(obj.data, pending.query, probability, pending.threshold)
                else:
                    heat_map.write_heat_map(obj.data, probability, probability > pending.threshold)
                    obj.data.update()


def _settle_tick() -> float | None:
    wait = SETTLE - (time.monotonic() - _last_move)
    if wait > 0:
        return wait
    try:
        settle()
    except Exception:  # noqa: BLE001 -- a raising timer would be unregistered for good
        traceback.print_exc()
    return None


def write_query(context: bpy.types.Context, obj: bpy.types.Object, query: str,
                worker_probability: np.ndarray, threshold: float) -> int:
    """Write a query's probabilities (in the worker's face order) onto `obj` and leave it in
    edit mode with the faces above `threshold` selected. Returns their number."""
    set_mode(context, obj, 'OBJECT')
    mesh = obj.data
    worker_probability = np.asarray(worker_probability, dtype=np.float32).ravel()
    face_index = read_array(mesh.attributes[FACE_INDEX_ATTR].data, "value", np.int32)
    if face_index.size and face_index.max() >= worker_probability.size:
        raise ValueError(
            f"the worker sent {worker_probability.size} face probabilities but '{obj.name}' "
            f"has faces up to index {int(face_index.max())}: the mesh is not the workspace's "
            "current mesh; use Load Mesh")
    if not np.isfinite(worker_probability).all():
        raise ValueError("the worker sent NaN or infinite face probabilities")
    probability = np.zeros(len(face_index), dtype=np.float32)
    worker_faces = face_index >= 0  # -1: none of the worker's (a face closing a part), probability 0
    probability[worker_faces] = np.clip(worker_probability[face_index[worker_faces]], 0.0, 1.0)

    _PENDING.pop(obj.name, None)  # a new query replaces what the slider had left to do
    ensure_attribute(mesh, PROBABILITY_ATTR, 'FLOAT').data.foreach_set("value", probability)
    _write_vertex_group(obj, object_name(query), vertex_weights(mesh, probability))
    _write_threshold(mesh, query, probability, threshold)
    context.tool_settings.mesh_select_mode = (False, False, True)  # faces, not vertices
    set_mode(context, obj, 'EDIT')
    return int((probability > threshold).sum())


def query_target(context: bpy.types.Context) -> bpy.types.Object:
    """The DFF mesh a query is for: the active object when it carries the worker's face index
    (a part separated from the mesh, or another DFF mesh), else the scene's DFF mesh."""
    active = context.active_object
    if (active is not None and active.type == 'MESH' and FACE_INDEX_ATTR in active.data.attributes
            and context.scene.objects.get(active.name) == active):
        return active
    return check_dff_mesh(context.scene.dff.mesh_object, context.scene)


def queried_object(context: bpy.types.Context) -> bpy.types.Object:
    """The object the latest query landed on (what the threshold, the heat map and Separate act
    on), or the scene's DFF mesh."""
    props = context.scene.dff
    obj = props.query_object
    if obj is not None and context.scene.objects.get(obj.name) == obj:
        return check_dff_mesh(obj)
    return check_dff_mesh(props.mesh_object, context.scene)


def apply_query(context: bpy.types.Context, query: str, reply: Reply, target: str) -> str:
    """Apply a query's reply to the object named `target` (the query's target when it was
    sent; by name, which survives undo). Returns a summary for the user."""
    if "face_probability" not in reply.arrays:
        raise ValueError("the worker's query reply lacks the array 'face_probability'")
    props = context.scene.dff
    obj = bpy.data.objects.get(target)
    if obj is None or context.scene.objects.get(target) != obj:
        raise ValueError(f"'{target}', which the query was for, is not in the scene any more")
    count = write_query(context, check_dff_mesh(obj), query, reply.arrays["face_probability"], props.threshold)
    props.query_object = obj
    props.active_query = query
    return f"'{query}': selected {count} of {len(obj.data.polygons)} faces"


def clear_query(context: bpy.types.Context, obj: bpy.types.Object, query: str) -> None:
    """Take back what `query` left on `obj`: its mask attribute, its vertex group and the
    face selection (other queries' attributes and groups stay)."""
    _PENDING.pop(obj.name, None)
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
