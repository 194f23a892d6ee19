"""A `split` reply -> the DFF mesh cut into one object per part, named after the parts, in a new
collection "<mesh> parts" beside the mesh, each with the mesh's transform (Separate All).

Every face lands in exactly one object: the part the worker gave its face index; a face of index
-1 (one that closed a part before) goes with the background, the last part. The faces that close
a part or fill the background's holes are appended to their part: index -1, the patch's colour in
the mesh's render colour attribute. They refer to the worker's vertices, which the mesh records
(`VERTEX_INDEX_ATTR`); those whose vertices it lacks (a linked mesh, parts cut apart since) are
left out (as all of them on a mesh loaded by an older version, which does not record them), and
the summary says so. Parts without faces here make no object.

The mesh itself is hidden (in the viewport and in renders), not removed: it stays the scene's DFF
mesh, which queries, Bake and Separate All can use again; unhide it to go back, or press Ctrl+Z
(the reply's changes are one undo step).
"""

from __future__ import annotations

from dataclasses import dataclass

import bpy
import numpy as np

from ..worker.client import Reply
from . import submesh
from .mesh_import import FACE_INDEX_ATTR, VERTEX_INDEX_ATTR, WORKER_FACES_PROP, WORKER_VERTICES_PROP
from .modes import set_mode
from .selection import check_dff_mesh, object_name, settle

PARTS_SUFFIX = " parts"
# The value of the worker's indices on what the worker's mesh does not have.
NOT_THE_WORKERS = {FACE_INDEX_ATTR: -1, VERTEX_INDEX_ATTR: -1}


@dataclass
class Split:
    """A checked `split` reply."""

    names: list[str]
    closed: int              # how many parts the worker closed
    face_part: np.ndarray    # (worker faces,) the part of each worker face
    patch_vertices: np.ndarray  # (P, 3)
    patch_colors: np.ndarray    # (P, 3) sRGB in [0, 255]
    patch_faces: np.ndarray     # (Q, 3) into the worker's vertices, then the patch's
    patch_part: np.ndarray      # (Q,)

    @classmethod
    def of(cls, reply: Reply) -> Split:
        names = [str(name) for name in reply.result.get("names") or ()]
        if not names:
            raise ValueError("the worker's split reply names no parts")
        arrays = reply.arrays
        if "face_part" not in arrays:
            raise ValueError("the worker's split reply lacks the array 'face_part'")
        face_part = _indices("face_part", arrays["face_part"], 1, len(names))
        vertices = np.asarray(arrays.get("patch_vertices", np.zeros((0, 3))), np.float32)
        colors = np.asarray(arrays.get("patch_colors", np.zeros((0, 3), np.uint8)))
        if vertices.ndim != 2 or vertices.shape[1] != 3 or not np.isfinite(vertices).all():
            raise ValueError(f"the split's 'patch_vertices' must be finite, of shape (N, 3), got {vertices.shape}")
        if colors.shape != vertices.shape or colors.dtype != np.uint8:
            raise ValueError(f"the split's 'patch_colors' must be uint8 of its vertices' shape {vertices.shape}, "
                             f"got {colors.dtype} {colors.shape}")
        faces = _indices("patch_faces", arrays.get("patch_faces", np.zeros((0, 3), np.int64)), 2)
        part = _indices("patch_part", arrays.get("patch_part", np.zeros(0, np.int64)), 1, len(names))
        if faces.shape[1:] != (3,) or len(part) != len(faces):
            raise ValueError(f"the split's 'patch_faces' must be (N, 3) with one 'patch_part' each, got "
                             f"{faces.shape} and {part.shape}")
        return cls(names, sum(bool(c) for c in reply.result.get("closed") or ()), face_part, vertices,
                   colors.astype(np.float32) / 255.0, faces, part)


def _indices(name: str, value: object, ndim: int, bound: int | None = None) -> np.ndarray:
    array = np.asarray(value)
    if array.ndim != ndim or (array.size and array.dtype.kind not in "iu"):
        raise ValueError(f"the split's '{name}' must be {ndim}-D integers, got {array.dtype} {array.shape}")
    array = array.astype(np.int64)
    if array.size and (array.min() < 0 or (bound is not None and array.max() >= bound)):
        expected = f"0 to {bound - 1}" if bound is not None else "0 or more"
        raise ValueError(f"the split's '{name}' holds {int(array.min())} to {int(array.max())}, "
                         f"where {expected} are expected")
    return array


def _linear(srgb: np.ndarray) -> np.ndarray:
    """sRGB in [0, 1] -> linear, what float colour attributes store."""
    return np.where(srgb <= 0.04045, srgb / 12.92, np.power((srgb + 0.055) / 1.055, 2.4))


def _patch_triangles(split: Split, source: submesh.Source) -> tuple[np.ndarray, np.ndarray]:
    """The patch faces as triangles over the mesh's vertices then the patch's, and which patch
    faces they are: those whose worker vertices the mesh has (each a distinct vertex)."""
    mesh = source.mesh
    n_worker, vertex_index = mesh.get(WORKER_VERTICES_PROP), source.attribute(VERTEX_INDEX_ATTR)
    if n_worker is None or vertex_index is None or not len(split.patch_faces):
        return np.zeros((0, 3), np.int64), np.zeros(len(split.patch_faces), bool)
    if split.patch_faces.max() >= n_worker + len(split.patch_vertices):
        raise ValueError(f"the split's 'patch_faces' refers to vertex {int(split.patch_faces.max())}, but the "
                         f"worker's mesh has {n_worker} and the patch {len(split.patch_vertices)}: Load Mesh again")
    vertex = np.full(n_worker + len(split.patch_vertices), -1, np.int64)  # the mesh's vertex of each
    worker = vertex_index.values
    known = (worker >= 0) & (worker < n_worker)
    vertex[worker[known]] = np.flatnonzero(known)
    vertex[n_worker:] = len(source.positions) + np.arange(len(split.patch_vertices))
    triangles = vertex[split.patch_faces]
    kept = ((triangles >= 0).all(axis=1) & (triangles[:, 0] != triangles[:, 1])
            & (triangles[:, 1] != triangles[:, 2]) & (triangles[:, 0] != triangles[:, 2]))
    return triangles[kept], kept


def _patch_colours(split: Split, source: submesh.Source) -> dict[str, np.ndarray]:
    """The patch vertices' colours for the mesh's render colour attribute, as it stores them."""
    name = source.mesh.color_attributes.default_color_name
    attribute = source.attribute(name) if name else None
    if attribute is None:
        return {}
    rgba = np.ones((len(split.patch_colors), 4), np.float32)
    rgba[:, :3] = _linear(split.patch_colors) if attribute.data_type == 'FLOAT_COLOR' else split.patch_colors
    return {name: rgba}


def _parts_collection(obj: bpy.types.Object, scene: bpy.types.Scene) -> bpy.types.Collection:
    collection = bpy.data.collections.new(obj.name + PARTS_SUFFIX)
    parent = obj.users_collection[0] if obj.users_collection else scene.collection
    parent.children.link(collection)
    return collection


def _part_object(obj: bpy.types.Object, mesh: bpy.types.Mesh, collection: bpy.types.Collection) -> bpy.types.Object:
    part = bpy.data.objects.new(mesh.name, mesh)
    collection.objects.link(part)
    part.parent = obj.parent
    part.matrix_parent_inverse = obj.matrix_parent_inverse.copy()
    part.matrix_world = obj.matrix_world.copy()
    return part


def apply_split(context: bpy.types.Context, reply: Reply, target: str) -> str:
    """Cut the object named `target` (the request's; by name, which survives undo) into the
    reply's parts. Returns a summary for the user."""
    split = Split.of(reply)
    obj = bpy.data.objects.get(target)
    if obj is None or context.scene.objects.get(target) != obj:
        raise ValueError(f"'{target}', which Separate All was for, is not in the scene any more")
    if not len(check_dff_mesh(obj).data.polygons):
        raise ValueError(f"'{obj.name}' has no faces to separate")
    settle()  # a threshold the slider left pending lands before the faces are cut
    set_mode(context, obj, 'OBJECT')
    source = submesh.Source.read(obj.data)
    face_index = source.attribute(FACE_INDEX_ATTR).values
    n_faces = obj.data.get(WORKER_FACES_PROP, len(split.face_part))
    if n_faces != len(split.face_part) or (face_index.size and face_index.max() >= len(split.face_part)):
        raise ValueError(f"the worker split a mesh of {len(split.face_part)} faces, but '{obj.name}' comes from "
                         f"one of {n_faces}: the mesh is not the workspace's current mesh; use Load Mesh")
    background = len(split.names) - 1
    face_part = np.where(face_index >= 0, split.face_part[np.maximum(face_index, 0)], background)
    triangles, kept = _patch_triangles(split, source)
    triangle_part = split.patch_part[kept]
    colours = _patch_colours(split, source)

    collection = _parts_collection(obj, context.scene)
    order = np.argsort(face_part, kind="stable")
    starts = np.searchsorted(face_part[order], np.arange(len(split.names) + 1))
    parts = []
    for k, name in enumerate(split.names):
        faces, patch = order[starts[k]:starts[k + 1]], triangles[triangle_part == k]
        if len(faces) or len(patch):
            mesh = submesh.cut(source, object_name(name) or f"part {k}", faces, split.patch_vertices, patch,
                               colours, NOT_THE_WORKERS)
            parts.append(_part_object(obj, mesh, collection))
    set_mode(context, parts[0], 'OBJECT')
    for part in parts[1:]:
        part.select_set(True)
    obj.hide_set(True)
    obj.hide_render = True
    summary = (f"Separated '{obj.name}' into {len(parts)} objects in '{collection.name}' ({split.closed} of "
               f"{len(split.names)} parts closed, {len(triangles)} faces added)")
    skipped = len(kept) - len(triangles)
    if skipped:
        summary += (f"; {skipped} closing faces left out: '{obj.name}' does not hold their vertices (a linked "
                    "mesh, a part cut from the mesh, or a mesh loaded by an older DFF: Load Mesh again)")
    return summary
