"""Pieces of a mesh as new meshes, in bulk: some of its faces, with triangles added (faces that
close a piece), every attribute carried over by domain and type (colours, UVs, materials, the
worker's indices, the selection). numpy and `foreach_get/foreach_set` throughout: no bmesh, no
edit mode (scripts/bench_separate_all.py times a million faces).

Vertices and edges that no face uses are left out; vertex groups (kept outside the attributes)
are not carried.
"""

from __future__ import annotations

from dataclasses import dataclass

import bpy
import numpy as np

from .mesh_import import corners_per_face, read_array, write_topology
from .selection import ensure_attribute

# How each attribute type is read and written: its property, the numpy type and the numbers per
# element. Byte colours go through sRGB, which they store; STRING attributes are not carried.
VALUES = {
    'FLOAT': ("value", np.float32, 1), 'INT': ("value", np.int32, 1), 'INT8': ("value", np.int32, 1),
    'BOOLEAN': ("value", bool, 1), 'FLOAT2': ("vector", np.float32, 2), 'FLOAT_VECTOR': ("vector", np.float32, 3),
    'FLOAT4': ("vector", np.float32, 4), 'FLOAT_COLOR': ("color", np.float32, 4),
    'BYTE_COLOR': ("color_srgb", np.float32, 4), 'INT16_2D': ("value", np.int32, 2),
    'INT32_2D': ("value", np.int32, 2), 'QUATERNION': ("value", np.float32, 4), 'FLOAT4X4': ("value", np.float32, 16),
}


@dataclass
class Attribute:
    name: str
    data_type: str
    domain: str
    values: np.ndarray  # (elements,), or (elements, numbers) for several numbers per element


@dataclass
class Source:
    """A mesh's arrays, read once for all the pieces cut from it."""

    mesh: bpy.types.Mesh
    positions: np.ndarray    # (V, 3)
    edge_verts: np.ndarray   # (E, 2)
    corner_vert: np.ndarray  # (C,)
    corner_edge: np.ndarray  # (C,)
    loop_start: np.ndarray   # (F,)
    loop_total: np.ndarray   # (F,)
    vertex_corner: np.ndarray  # (V,) a corner at each vertex (-1: none)
    attributes: list[Attribute]

    @classmethod
    def read(cls, mesh: bpy.types.Mesh) -> Source:
        """The arrays of `mesh` (in object mode)."""
        attributes = mesh.attributes
        corners = corners_per_face(mesh)
        if isinstance(corners, int):  # triangles: no need to read the faces one by one
            loop_total = np.full(len(mesh.polygons), corners, np.int32)
            loop_start = np.arange(0, len(mesh.loops), corners, dtype=np.int32)
        else:
            loop_total, loop_start = corners, read_array(mesh.polygons, "loop_start", np.int32)
        corner_vert = read_array(attributes[".corner_vert"].data, "value", np.int32)
        vertex_corner = np.full(len(mesh.vertices), -1, np.int64)
        vertex_corner[corner_vert] = np.arange(len(corner_vert))
        carried = [Attribute(a.name, a.data_type, a.domain, read_array(a.data, *VALUES[a.data_type]))
                   for a in attributes if not a.is_required and a.data_type in VALUES]  # required: the topology
        return cls(mesh, read_array(attributes["position"].data, "vector", np.float32, 3),
                   read_array(attributes[".edge_verts"].data, "value", np.int32, 2), corner_vert,
                   read_array(attributes[".corner_edge"].data, "value", np.int32), loop_start, loop_total,
                   vertex_corner, carried)

    def attribute(self, name: str) -> Attribute | None:
        return next((a for a in self.attributes if a.name == name), None)


def _face_corners(source: Source, faces: np.ndarray) -> np.ndarray:
    """The corners of `faces`, face by face in order."""
    totals = source.loop_total[faces]
    offsets = np.repeat(source.loop_start[faces].astype(np.int64) - np.cumsum(totals) + totals, totals)
    return offsets + np.arange(offsets.size)


def _triangle_edges(edge_verts: np.ndarray, triangles: np.ndarray, n_vertices: int) -> tuple[np.ndarray, np.ndarray]:
    """The edge of each corner of `triangles` (3T,), corner k running from vertex k to k+1 as
    Blender's corners do: one of `edge_verts` where it has it, else a new one; and the new edges."""
    first, second = triangles.ravel(), np.roll(triangles, -1, axis=1).ravel()
    keys = np.minimum(first, second).astype(np.int64) * n_vertices + np.maximum(first, second)
    existing = np.sort(edge_verts, axis=1).astype(np.int64)
    existing = existing[:, 0] * n_vertices + existing[:, 1]
    order = np.argsort(existing)
    place = np.searchsorted(existing[order], keys)
    found = place < len(existing)
    found[found] = existing[order[place[found]]] == keys[found]
    added, which = np.unique(keys[~found], return_inverse=True)
    corner_edge = np.empty(len(keys), np.int64)
    corner_edge[found] = order[place[found]]
    corner_edge[~found] = len(edge_verts) + which.ravel()
    return corner_edge, np.stack([added // n_vertices, added % n_vertices], axis=1)


def _gather(values: np.ndarray, index: np.ndarray, default: float) -> np.ndarray:
    """`values` at `index`, and `default` where the index is -1 (an element the source lacks)."""
    out = values[np.maximum(index, 0)] if len(values) else np.zeros((len(index), *values.shape[1:]), values.dtype)
    out[index < 0] = default
    return out


def cut(source: Source, name: str, faces: np.ndarray, new_positions: np.ndarray | None = None,
        triangles: np.ndarray | None = None, vertex_values: dict[str, np.ndarray] | None = None,
        defaults: dict[str, float] | None = None) -> bpy.types.Mesh:
    """A new mesh `name` of the source's `faces` (indices), followed by `triangles` (T, 3) whose
    indices run over the source's vertices then `new_positions` (N, 3). Each attribute is the
    source's on what comes from it; on the new elements (the triangles, the new vertices, edges
    and corners) it is `defaults[name]` (else 0), and `vertex_values[name]` (N, numbers) on the
    new vertices and their corners. The triangles' corners at source vertices take the values of
    a source corner at the same vertex (UVs, corner colours). Materials, the active and render
    colours and UV maps, and the mesh's custom properties come along."""
    new_positions = np.zeros((0, 3), np.float32) if new_positions is None else new_positions
    triangles = np.zeros((0, 3), np.int64) if triangles is None else triangles
    n_source = len(source.positions)
    corners = _face_corners(source, faces)
    used = np.zeros(n_source + len(new_positions), bool)
    used[source.corner_vert[corners]] = True
    used[triangles.ravel()] = True
    vertices = np.flatnonzero(used)
    renumber = np.zeros(len(used), np.int64)
    renumber[vertices] = np.arange(len(vertices))
    edges = np.flatnonzero(np.bincount(source.corner_edge[corners], minlength=len(source.edge_verts)))
    renumber_edge = np.zeros(len(source.edge_verts), np.int64)
    renumber_edge[edges] = np.arange(len(edges))
    edge_verts = renumber[source.edge_verts[edges]]
    triangle_corner_edge, added_edges = _triangle_edges(edge_verts, renumber[triangles], len(vertices))

    # Per domain: each new element's source element (-1: a new one).
    triangle_vertices = triangles.ravel()
    index = {
        'POINT': np.where(vertices < n_source, vertices, -1),
        'EDGE': np.concatenate([edges, np.full(len(added_edges), -1)]),
        'FACE': np.concatenate([faces, np.full(len(triangles), -1)]),
        'CORNER': np.concatenate([corners, np.concatenate(
            [source.vertex_corner, np.full(len(new_positions), -1)])[triangle_vertices]]),
    }
    new_vertex = {'POINT': vertices - n_source,
                  'CORNER': np.concatenate([np.full(len(corners), -1), triangle_vertices - n_source])}

    mesh = bpy.data.meshes.new(name)
    totals = np.concatenate([source.loop_total[faces], np.full(len(triangles), 3, np.int32)])
    write_topology(mesh, np.concatenate([source.positions, new_positions])[vertices],
                   np.concatenate([edge_verts, added_edges]),
                   np.concatenate([renumber[source.corner_vert[corners]], renumber[triangle_vertices]]),
                   np.concatenate([renumber_edge[source.corner_edge[corners]], triangle_corner_edge]),
                   np.cumsum(totals) - totals)
    for attribute in source.attributes:
        values = _gather(attribute.values, index[attribute.domain], (defaults or {}).get(attribute.name, 0))
        extra = (vertex_values or {}).get(attribute.name)
        if extra is not None and attribute.domain in new_vertex:
            new = new_vertex[attribute.domain]
            values[new >= 0] = extra[new[new >= 0]]
        prop = VALUES[attribute.data_type][0]
        target = ensure_attribute(mesh, attribute.name, attribute.data_type, attribute.domain)
        target.data.foreach_set(prop, values.ravel())
    _copy_settings(source.mesh, mesh)
    mesh.update()
    return mesh


def _copy_settings(source: bpy.types.Mesh, mesh: bpy.types.Mesh) -> None:
    """Materials, active and render colours and UV maps, custom properties."""
    for material in source.materials:
        mesh.materials.append(material)
    colours = mesh.color_attributes
    colours.active_color_name = source.color_attributes.active_color_name
    colours.default_color_name = source.color_attributes.default_color_name
    for layer in source.uv_layers:
        copy = mesh.uv_layers.get(layer.name)
        if copy is not None and layer.active:
            copy.active = True
        if copy is not None and layer.active_render:
            copy.active_render = True
    for key, value in source.items():
        mesh[key] = value
