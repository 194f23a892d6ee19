"""A `bake` reply -> UV map "DFF UV", a new packed image "DFF Texture" and a new material that
renders it, on every DFF mesh of the worker's mesh (the main one and the parts separated from
it). The image texture node is the active one, so Texture Paint edits the image right away.
Each bake has its own image and material: another mesh's painted texture is never overwritten,
and on the targets only the materials the add-on made are replaced.

One object can also be baked on its own atlas (`object_triangles` is what is sent): its reply
goes to that object alone, as "DFF UV" and an image and material named after it, which later
bakes of the whole mesh leave in place."""

from __future__ import annotations

import bpy
import numpy as np

from ..worker.client import Reply
from .images import write_image
from .mesh_import import (FACE_INDEX_ATTR, MESH_ID_PROP, OWN_MATERIAL_TAG, WORKER_FACES_PROP, node_material,
                          read_array)
from .modes import mesh_data_writable

UV_NAME = "DFF UV"
# Set on a mesh baked on its own atlas: a later bake of the whole mesh leaves its texture be.
OWN_ATLAS_PROP = "dff_own_atlas"
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


def _write_uv(mesh: bpy.types.Mesh, loop_uv: np.ndarray) -> None:
    """Each loop's texture coordinate (L, 2) into the UV map "DFF UV", made the active one."""
    layer = mesh.uv_layers.get(UV_NAME) or mesh.uv_layers.new(name=UV_NAME)
    layer.data.foreach_set("uv", loop_uv.ravel())
    mesh.uv_layers.active = layer


def _worker_face_uv(mesh: bpy.types.Mesh, uv: np.ndarray) -> np.ndarray:
    """Each loop takes the texture coordinate of its worker face's corner; the loops of faces
    that are none of the worker's (index -1: closing a part) take (0, 0)."""
    polygons = len(mesh.polygons)
    face_index = read_array(mesh.attributes[FACE_INDEX_ATTR].data, "value", np.int32)
    loop_start = read_array(mesh.polygons, "loop_start", np.int32)
    loop_total = read_array(mesh.polygons, "loop_total", np.int32)
    loop_face = np.repeat(np.arange(polygons), loop_total)
    corner = np.arange(len(mesh.loops)) - loop_start[loop_face]
    loop_index = face_index[loop_face]
    loop_uv = uv[np.maximum(loop_index, 0), np.minimum(corner, 2)]
    loop_uv[loop_index < 0] = 0.0
    return loop_uv.astype(np.float32)


def _image(texture: np.ndarray, name: str = IMAGE_NAME) -> bpy.types.Image:
    image = write_image(None, name, texture)
    # A file beside the .blend: the name an exported .mtl gives it, and where Unpack writes it.
    image.filepath_raw = f"//{bpy.path.clean_name(image.name)}.png"
    image.file_format = 'PNG'
    image.pack()  # saved inside the .blend, so a painted texture travels with the file
    return image


def _material(image: bpy.types.Image, name: str = MATERIAL_NAME) -> bpy.types.Material:
    material = node_material(name)
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
    (or, for a mesh imported without one, has its face count), but the parts baked on their own
    atlas since (the scene's DFF mesh itself is always baked). Returns a summary."""
    uv, texture = _checked_arrays(reply)
    targets = [obj for obj in context.scene.objects
               if obj.type == 'MESH' and FACE_INDEX_ATTR in obj.data.attributes
               and obj.data.get(WORKER_FACES_PROP) == len(uv)
               and obj.data.get(MESH_ID_PROP, "") == mesh_id
               and (obj == context.scene.dff.mesh_object or not obj.data.get(OWN_ATLAS_PROP))]
    if not targets:
        raise ValueError(f"no DFF mesh in the scene has the {len(uv)} faces the texture was baked for: "
                         "Load Mesh, then bake again")
    material = _material(_image(texture))
    for obj in targets:
        with mesh_data_writable(context, obj):
            _write_uv(obj.data, _worker_face_uv(obj.data, uv))
            _replace_own_materials(obj.data, material)
    names = ", ".join(f"'{obj.name}'" for obj in targets)
    return f"Baked a {texture.shape[0]} x {texture.shape[0]} texture onto {names}"


def bakes_own_atlas(context: bpy.types.Context, target: bpy.types.Object) -> bool:
    """Whether Bake Texture bakes `target` (the DFF mesh a query would be for) on an atlas of its
    own: it is not the scene's DFF mesh but a part separated from it, or another workspace's mesh."""
    return target != context.scene.dff.mesh_object


def _loop_triangles(mesh: bpy.types.Mesh, prop: str) -> np.ndarray:
    """A property of each of Blender's triangles of the faces (quads and n-gons split): (T, 3)."""
    mesh.calc_loop_triangles()
    return read_array(mesh.loop_triangles, prop, np.int32, 3)


def object_triangles(obj: bpy.types.Object) -> dict[str, np.ndarray]:
    """The arrays of a bake of `obj` on its own atlas: its vertices in its mesh's frame (where the
    worker's mesh lies: the DFF mesh is imported at the identity and separated parts keep it;
    moving the object since changes nothing) and the vertex triangles of its faces."""
    if obj.mode == 'EDIT':
        obj.update_from_editmode()
    mesh = obj.data
    faces = _loop_triangles(mesh, "vertices")
    if not len(faces):
        raise ValueError(f"'{obj.name}' has no faces to bake")
    return {"vertices": read_array(mesh.vertices, "co", np.float32, 3), "faces": faces}


def apply_object_bake(context: bpy.types.Context, reply: Reply, target: str, faces: np.ndarray) -> str:
    """Put a bake of the object named `target`'s own triangles `faces` (as sent; by name, which
    survives undo) on that object alone. Returns a summary."""
    uv, texture = _checked_arrays(reply)
    obj = bpy.data.objects.get(target)
    if obj is None or context.scene.objects.get(target) != obj or obj.type != 'MESH':
        raise ValueError(f"'{target}', which the texture was baked for, is not in the scene any more")
    with mesh_data_writable(context, obj):
        if len(uv) != len(faces) or not np.array_equal(_loop_triangles(obj.data, "vertices"), faces):
            raise ValueError(f"the faces of '{target}' changed while its texture was baked: bake it again")
        loop_uv = np.zeros((len(obj.data.loops), 2), np.float32)
        loop_uv[_loop_triangles(obj.data, "loops").ravel()] = uv.reshape(-1, 2)
        _write_uv(obj.data, loop_uv)
        name = f"{target} Texture"
        _replace_own_materials(obj.data, _material(_image(texture, name), name))
        obj.data[OWN_ATLAS_PROP] = True
    return f"Baked a {texture.shape[0]} x {texture.shape[0]} texture onto '{target}' on its own UV map"
