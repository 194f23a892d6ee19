"""numpy arrays from the worker -> the "DFF Mesh" object (bulk `foreach_set`, no Python loops)."""

from __future__ import annotations

import bpy
import numpy as np
from mathutils import Matrix

from ..worker.client import Reply
from .modes import set_mode

MESH_NAME = "DFF Mesh"
COLOR_ATTR = "Col"
# The worker's index of each face: queries answer in the worker's face order, and this
# keeps the mapping valid after Blender drops degenerate faces or the user separates parts.
FACE_INDEX_ATTR = "dff_face_index"
# The worker's face count: selections sent back to it need one value per worker face, and
# Blender may hold fewer (degenerate faces dropped, parts separated).
WORKER_FACES_PROP = "dff_worker_faces"
# Where the mesh came from, kept on the mesh data (separated parts share it): requests about
# its faces go to that workspace with that mesh's id, which the worker checks.
MESH_ID_PROP = "dff_mesh_id"
WORKSPACE_PROP = "dff_workspace"
MATERIAL_NAME = "DFF Vertex Colour"
OWN_MATERIAL_TAG = "dff_material"


def read_array(collection: bpy.types.bpy_prop_collection, prop: str, dtype: type, width: int = 1) -> np.ndarray:
    """One value per element of `collection` as a numpy array (bulk `foreach_get`); with
    `width`, a row of that many per element."""
    values = np.empty(len(collection) * width, dtype=dtype)
    collection.foreach_get(prop, values)
    return values.reshape(-1, width) if width > 1 else values


def corners_per_face(mesh: bpy.types.Mesh) -> int | np.ndarray:
    """How many corners each face has: 3 on a triangle mesh (a face has 3 or more, so 3 per
    face on average means all of them), read face by face otherwise (the user edited it)."""
    if len(mesh.loops) == 3 * len(mesh.polygons):
        return 3
    return read_array(mesh.polygons, "loop_total", np.int32)


def _checked(name: str, value: object, dtype: type, width: int) -> np.ndarray:
    array = np.asarray(value)
    if array.ndim != 2 or array.shape[1] != width:
        raise ValueError(f"mesh array '{name}' must have shape (N, {width}), got {array.shape}")
    return np.ascontiguousarray(array, dtype=dtype)


def triangle_edges(faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct edges (E, 2) of triangles `faces` (F, 3), and the edge of each corner (3F,):
    corner k of a face runs from its vertex k to vertex k+1, as Blender's loops do."""
    pairs = np.stack([faces.ravel(), np.roll(faces, -1, axis=1).ravel()], axis=1)
    edges, corner_edges = np.unique(np.sort(pairs, axis=1), axis=0, return_inverse=True)
    return edges.astype(np.int32), corner_edges.astype(np.int32).ravel()


def build_mesh(name: str, vertices: np.ndarray, faces: np.ndarray,
               colors: np.ndarray | None = None) -> bpy.types.Mesh:
    """A new triangle mesh. `vertices` (V,3), `faces` (F,3) indices into them, `colors`
    (V,3) sRGB in [0,1] become the point colour attribute "Col"."""
    vertices = _checked("vertices", vertices, np.float32, 3)
    faces = _checked("faces", faces, np.int32, 3)
    if not np.isfinite(vertices).all():
        raise ValueError("mesh array 'vertices' holds NaN or infinite coordinates")
    if faces.size and (faces.min() < 0 or faces.max() >= len(vertices)):
        raise ValueError(
            f"mesh array 'faces' refers to vertex {int(faces.max())} (or a negative one) "
            f"but there are {len(vertices)} vertices")
    if colors is not None:
        colors = _checked("vertex_colors", colors, np.float32, 3)
        if len(colors) != len(vertices):
            raise ValueError(f"mesh array 'vertex_colors' has {len(colors)} rows for "
                             f"{len(vertices)} vertices")

    # Faces that repeat a vertex have no area; dropping them here keeps their worker index
    # out of FACE_INDEX_ATTR (Blender's validate would drop them too, noisily).
    kept = np.flatnonzero((faces[:, 0] != faces[:, 1]) & (faces[:, 1] != faces[:, 2])
                          & (faces[:, 0] != faces[:, 2])).astype(np.int32)
    faces = faces[kept]

    mesh = bpy.data.meshes.new(name)
    mesh.vertices.add(len(vertices))
    mesh.vertices.foreach_set("co", vertices.ravel())
    # The edges are written here rather than by `update(calc_edges=True)`: in Blender 5.0 that
    # leaves the edge selection attribute at the wrong length, and writing the selection then
    # crashes Blender.
    edges, corner_edges = triangle_edges(faces)
    mesh.edges.add(len(edges))
    mesh.edges.foreach_set("vertices", edges.ravel())
    mesh.loops.add(faces.size)
    mesh.loops.foreach_set("vertex_index", faces.ravel())
    mesh.loops.foreach_set("edge_index", corner_edges)
    mesh.polygons.add(len(faces))
    mesh.polygons.foreach_set("loop_start", np.arange(0, faces.size, 3, dtype=np.int32))
    index = mesh.attributes.new(FACE_INDEX_ATTR, 'INT', 'FACE')
    index.data.foreach_set("value", kept)
    if colors is not None:
        rgba = np.ones((len(colors), 4), dtype=np.float32)
        rgba[:, :3] = np.clip(colors, 0.0, 1.0)
        color = mesh.color_attributes.new(COLOR_ATTR, 'FLOAT_COLOR', 'POINT')
        color.data.foreach_set("color_srgb", rgba.ravel())  # stored linear, converted here
        mesh.color_attributes.active_color = color
        mesh.color_attributes.render_color_index = mesh.color_attributes.active_color_index
        mesh.materials.append(_vertex_colour_material())
    mesh.update()
    mesh.validate(clean_customdata=False)  # e.g. duplicate faces, dropped with their attributes
    return mesh


def node_material(name: str) -> bpy.types.Material:
    """A new material with a node tree (Principled BSDF -> Material Output), tagged as made here
    (OWN_MATERIAL_TAG): a bake replaces only such materials."""
    material = bpy.data.materials.new(name)
    material[OWN_MATERIAL_TAG] = True
    if material.node_tree is None:  # Blender 4.x; from 5.0 every material has its nodes
        material.use_nodes = True
    return material


def _vertex_colour_material() -> bpy.types.Material:
    """A material that renders the "Col" attribute (shared by all DFF meshes)."""
    material = bpy.data.materials.get(MATERIAL_NAME)
    if material is not None:
        return material
    material = node_material(MATERIAL_NAME)
    nodes = material.node_tree.nodes
    shader = nodes.get("Principled BSDF")
    attribute = nodes.new("ShaderNodeVertexColor")
    attribute.layer_name = COLOR_ATTR
    attribute.location = (shader.location.x - 300, shader.location.y)
    material.node_tree.links.new(attribute.outputs["Color"], shader.inputs["Base Color"])
    return material


def apply_mesh(context: bpy.types.Context, reply: Reply, workspace: str = "") -> str:
    """Put the mesh of a `train` or `get_mesh` reply, from `workspace`, into the scene's DFF mesh:
    a new "DFF Mesh" at the world frame, or the existing one's data replaced (its transform,
    which the user may have set, is kept). Returns a summary for the user."""
    arrays = reply.arrays
    missing = {"vertices", "faces"} - set(arrays)
    if missing:
        raise ValueError(f"the worker's mesh reply lacks the arrays {sorted(missing)}")
    mesh = build_mesh(MESH_NAME, arrays["vertices"], arrays["faces"],
                      arrays.get("vertex_colors"))
    mesh[WORKER_FACES_PROP] = int(len(arrays["faces"]))
    mesh[MESH_ID_PROP] = str(reply.result.get("mesh_id") or "")
    mesh[WORKSPACE_PROP] = workspace
    props = context.scene.dff
    obj = props.mesh_object
    if obj is not None and context.scene.objects.get(obj.name) != obj:
        if not obj.users_collection:  # deleted by the user, kept in memory by this pointer: frees its name
            bpy.data.objects.remove(obj)
        obj = None
    if obj is None:
        obj = bpy.data.objects.new(MESH_NAME, mesh)
        context.scene.collection.objects.link(obj)
        obj.matrix_world = Matrix.Identity(4)
    else:
        if obj.mode != 'OBJECT':
            set_mode(context, obj, 'OBJECT')
        old = obj.data
        obj.data = mesh
        obj.vertex_groups.clear()  # they described the faces of the old mesh
        if old.users == 0:
            bpy.data.meshes.remove(old)
    props.mesh_object = obj
    props.active_query = ""
    return f"Mesh '{obj.name}': {len(mesh.vertices)} vertices, {len(mesh.polygons)} faces"
