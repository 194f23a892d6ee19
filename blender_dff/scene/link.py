"""Your own mesh (a scan, a retopologised or remeshed copy) linked to the DFF mesh: each of its
faces takes the worker's index of the DFF face nearest to its centre, in world space, and the
mesh takes the DFF mesh's workspace and id. Queries, Click, the threshold, Separate and Separate
All then work on it as on a part of the DFF mesh (it has none of the worker's vertices, so the
faces that close parts are left out of its Separate All)."""

from __future__ import annotations

import bpy
import numpy as np
from mathutils.bvhtree import BVHTree

from .mesh_import import (FACE_INDEX_ATTR, MESH_ID_PROP, VERTEX_INDEX_ATTR, WORKER_FACES_PROP, WORKER_VERTICES_PROP,
                          WORKSPACE_PROP, corners_per_face, read_array)
from .modes import set_mode
from .selection import ensure_attribute

PROGRESS_STEP = 100_000  # faces searched between two updates of the progress shown in the cursor


def _world(obj: bpy.types.Object, points: np.ndarray) -> np.ndarray:
    """`points` (N, 3) of `obj`'s space in world space."""
    matrix = np.array(obj.matrix_world, dtype=np.float64)
    return points @ matrix[:3, :3].T + matrix[:3, 3]


def _faces(mesh: bpy.types.Mesh) -> tuple[np.ndarray, np.ndarray, int | np.ndarray]:
    """The positions of `mesh`'s vertices (V, 3), its corners' vertices and its corners per face."""
    return (read_array(mesh.attributes["position"].data, "vector", np.float32, 3),
            read_array(mesh.attributes[".corner_vert"].data, "value", np.int32), corners_per_face(mesh))


def _tree(obj: bpy.types.Object) -> BVHTree:
    """A BVH tree of `obj`'s faces in world space; it finds face indices of `obj`'s mesh."""
    positions, corner_vert, corners = _faces(obj.data)
    if isinstance(corners, int):
        faces = corner_vert.reshape(-1, 3).tolist()
    else:
        faces = [face.tolist() for face in np.split(corner_vert, np.cumsum(corners)[:-1])]
    return BVHTree.FromPolygons(_world(obj, positions).tolist(), faces, all_triangles=isinstance(corners, int))


def _face_centres(obj: bpy.types.Object) -> np.ndarray:
    """The world position of the centre (corners' mean) of each face of `obj`: (F, 3)."""
    positions, corner_vert, corners = _faces(obj.data)
    if isinstance(corners, int):
        centres = positions[corner_vert.reshape(-1, corners)].mean(axis=1)
    else:
        centres = np.add.reduceat(positions[corner_vert], np.cumsum(corners) - corners, axis=0) / corners[:, None]
    return _world(obj, centres)


def link_mesh(context: bpy.types.Context, obj: bpy.types.Object, dff: bpy.types.Object) -> str:
    """Give `obj`'s faces the worker's index of the nearest face of the DFF mesh `dff`, and
    `dff`'s workspace and mesh id. Returns a summary for the user."""
    if obj == dff:
        raise ValueError(f"'{obj.name}' is the DFF mesh: make your own mesh the active object")
    set_mode(context, obj, 'OBJECT')  # both meshes' data up to date (edit mode keeps its own copy)
    if not len(obj.data.polygons):
        raise ValueError(f"'{obj.name}' has no faces to link")
    tree = _tree(dff)
    centres = _face_centres(obj).tolist()
    hits = []
    progress = context.window_manager
    progress.progress_begin(0, len(centres))  # one search per face: seconds for a million
    for start in range(0, len(centres), PROGRESS_STEP):
        hits += map(tree.find_nearest, centres[start:start + PROGRESS_STEP])
        progress.progress_update(start)
    progress.progress_end()
    nearest = np.fromiter((hit[2] for hit in hits), np.int64, len(hits))
    distance = np.fromiter((hit[3] for hit in hits), np.float64, len(hits))
    dff_index = read_array(dff.data.attributes[FACE_INDEX_ATTR].data, "value", np.int32)

    mesh = obj.data
    ensure_attribute(mesh, FACE_INDEX_ATTR, 'INT').data.foreach_set("value", dff_index[nearest])
    # Its vertices are none of the worker's, even when it began as a copy of the DFF mesh.
    if VERTEX_INDEX_ATTR in mesh.attributes:
        mesh.attributes.remove(mesh.attributes[VERTEX_INDEX_ATTR])
    mesh.pop(WORKER_VERTICES_PROP, None)
    for key in (WORKER_FACES_PROP, MESH_ID_PROP, WORKSPACE_PROP):
        if key in dff.data:
            mesh[key] = dff.data[key]
    mesh.update()
    return (f"Linked {len(nearest)} faces of '{obj.name}' to '{dff.name}' (the farthest "
            f"{distance.max():.3g} from it): queries and Separate All work on it")
