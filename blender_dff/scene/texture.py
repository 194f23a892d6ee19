"""A `bake` reply -> UV map "DFF UV", a new packed image "DFF Texture" and a new material that
renders it, on every DFF mesh of the worker's mesh (the main one and the parts separated from
it). The image texture node is the active one, so Texture Paint edits the image right away.
Each bake has its own image and material: another mesh's painted texture is never overwritten,
and on the targets only the materials the add-on made are replaced."""

from __future__ import annotations

import bpy
import numpy as np

from ..worker.client import Reply
from .images import write_image
from .mesh_import import FACE_INDEX_ATTR, MESH_ID_PROP, OWN_MATERIAL_TAG, WORKER_FACES_PROP, node_material, read_array
from .modes import mesh_data_writable

UV_NAME = "DFF UV"
IMAGE_NAME = "DFF Texture"
MATERIAL_NAME = "DFF Texture"


def _checked_arrays(reply: Reply) -> tuple[np.ndarray, np.ndarray]:
    uv, texture = reply.arrays.get("uv"), reply.arrays.get("texture")
    if uv is None or texture is None:
        raise ValueError("the worker's bake reply lacks the arrays 'uv' and 'texture'")
    if uv.ndim != 3 or uv.shape[1:] != (3, 2) or not np.isfinite(uv).all():
        raise ValueError(f"the bake's 'uv' must be finite, of shape (faces, 3, 2), got {uv.shape}")
    if texture.ndim != 3 or texture.shape[2] != 3 or texture.shape[0] != texture.shape[1] \
            or texture.dtype != np.uint8:
        raise ValueError(f"the bake's 'texture' must be a square RGB uint8 image, got {texture.shape} "
                         f"{texture.dtype}")
    return uv, texture


def _write_uv(mesh: bpy.types.Mesh, uv: np.ndarray) -> None:
    """Each loop takes the texture coordinate of its worker face's corner; the loops of faces
    that are none of the worker's (index -1: closing a part) take (0, 0)."""
    polygons = len(mesh.polygons)
    face_index = read_array(mesh.attributes[FACE_INDEX_ATTR].data, "value", np.int32)
    loop_start = read_array(mesh.polygons, "loop_start", np.int32)
    loop_total = read_array(mesh.polygons, "loop_total", np.int32)
    loop_face = np.repeat(np.arange(polygons), loop_total)
    corner = np.arange(len(mesh.loops)) - loop_start[loop_face]
    loop_index = face_index[loop_face]
    loop_uv = np.where((loop_index >= 0)[:, None], uv[np.maximum(loop_index, 0), np.minimum(corner, 2)], 0.0)
    layer = mesh.uv_layers.get(UV_NAME) or mesh.uv_layers.new(name=UV_NAME)
    layer.data.foreach_set("uv", loop_uv.astype(np.float32).ravel())
    mesh.uv_layers.active = layer


def _image(texture: np.ndarray) -> bpy.types.Image:
    image = write_image(None, IMAGE_NAME, texture)
    image.pack()  # saved inside the .blend, so a painted texture travels with the file
    return image


def _material(image: bpy.types.Image) -> bpy.types.Material:
    material = node_material(MATERIAL_NAME)
    nodes, links = material.node_tree.nodes, material.node_tree.links
    shader = nodes.get("Principled BSDF")
    shader.inputs["Roughness"].default_value = 1.0  # the bake holds the lit colour: no highlights
    uv_map = nodes.new("ShaderNodeUVMap")
    uv_map.uv_map = UV_NAME
    uv_map.location = (shader.location.x - 600, shader.location.y)
    texture = nodes.new("ShaderNodeTexImage")
    texture.location = (shader.location.x - 350, shader.location.y)
    links.new(uv_map.outputs["UV"], texture.inputs["Vector"])
    links.new(texture.outputs["Color"], shader.inputs["Base Color"])
    texture.image = image
    nodes.active = texture  # the image Texture Paint paints on
    return material


def _replace_own_materials(mesh: bpy.types.Mesh, material: bpy.types.Material) -> None:
    """`material` in every slot that is empty or holds a material the add-on made; a mesh
    without slots gets one. The user's own materials keep their slots."""
    slots = mesh.materials
    own = [i for i, old in enumerate(slots) if old is None or old.get(OWN_MATERIAL_TAG)]
    for i in own:
        slots[i] = material
    if not len(slots):
        slots.append(material)


def apply_bake(context: bpy.types.Context, reply: Reply, mesh_id: str = "") -> str:
    """Put a bake on every object of the scene whose mesh came from the worker's mesh `mesh_id`
    (or, for a mesh imported without one, has its face count). Returns a summary."""
    uv, texture = _checked_arrays(reply)
    targets = [obj for obj in context.scene.objects
               if obj.type == 'MESH' and FACE_INDEX_ATTR in obj.data.attributes
               and obj.data.get(WORKER_FACES_PROP) == len(uv)
               and obj.data.get(MESH_ID_PROP, "") == mesh_id]
    if not targets:
        raise ValueError(f"no DFF mesh in the scene has the {len(uv)} faces the texture was baked for: "
                         "Load Mesh, then bake again")
    material = _material(_image(texture))
    for obj in targets:
        with mesh_data_writable(context, obj):
            _write_uv(obj.data, uv)
            _replace_own_materials(obj.data, material)
    names = ", ".join(f"'{obj.name}'" for obj in targets)
    return f"Baked a {texture.shape[0]} x {texture.shape[0]} texture onto {names}"
