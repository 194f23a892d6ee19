"""The dataset's cameras as Blender camera objects in the scene's "DFF Cameras" collection, each
with its photo as background, and the sparse point cloud when the format has one (COLMAP).

Each scene has its own collection (`Scene.dff.cameras`), and a new import removes only the
objects an import made (tagged IMPORTED_TAG): what the user put in the collection stays."""

from __future__ import annotations

import os

import bpy
import numpy as np
from mathutils import Matrix

from ..worker.client import Reply

COLLECTION_NAME = "DFF Cameras"
POINTS_NAME = "DFF Points"
IMPORTED_TAG = "dff_imported"  # custom property of the cameras and points an import made
POINT_COLOR_ATTR = "Color"
SENSOR_WIDTH = 36.0  # mm; any width works, the lens is expressed relative to it
PHOTO_ALPHA = 0.8  # camera background opacity: the photo shows, the model in front still reads


def camera_parameters(fx: float, cx: float, cy: float, width: int, height: int) -> dict:
    """Blender camera settings for pinhole intrinsics in pixels, with a horizontal sensor
    fit: the lens scales with fx/width, and shifts are fractions of the image width."""
    return {
        "sensor_fit": 'HORIZONTAL',
        "sensor_width": SENSOR_WIDTH,
        "lens": fx * SENSOR_WIDTH / width,
        # A principal point right of the centre puts more of the image left of the axis;
        # image rows grow downwards while Blender's y points up.
        "shift_x": (width / 2.0 - cx) / width,
        "shift_y": (cy - height / 2.0) / width,
    }


def _empty_collection(scene: bpy.types.Scene) -> bpy.types.Collection:
    """The scene's cameras collection, linked to `scene` and emptied of the earlier import."""
    collection = scene.dff.cameras
    if collection is None:
        collection = scene.dff.cameras = bpy.data.collections.new(COLLECTION_NAME)
    if collection not in scene.collection.children_recursive:
        scene.collection.children.link(collection)
    for obj in [obj for obj in collection.objects if obj.get(IMPORTED_TAG)]:
        data = obj.data
        bpy.data.objects.remove(obj)
        if isinstance(data, bpy.types.Camera) and data.users == 0:
            bpy.data.cameras.remove(data)
        elif isinstance(data, bpy.types.Mesh) and data.users == 0:
            bpy.data.meshes.remove(data)
    return collection


def _show_photo(camera: bpy.types.Camera, path: str) -> None:
    """The photo as the camera's background, seen when looking through it. Loading is lazy (the
    pixels are read when first drawn), so hundreds of photos import quickly. A worker on another
    machine may report paths this one cannot see: those cameras go without a photo."""
    if not os.path.isfile(path):
        return
    background = camera.background_images.new()
    background.image = bpy.data.images.load(path, check_existing=True)
    background.frame_method = 'STRETCH'  # intrinsics and image share the aspect ratio
    background.alpha = PHOTO_ALPHA
    camera.show_background_images = True


def _point_cloud(points: np.ndarray, colors: np.ndarray, radius: float) -> bpy.types.Object:
    """A mesh of the points with their sRGB colours, drawn as points of `radius` by a
    Mesh to Points geometry-nodes modifier (loose vertices alone would not show in Object Mode)."""
    mesh = bpy.data.meshes.new(POINTS_NAME)
    mesh.vertices.add(len(points))
    mesh.vertices.foreach_set("co", points.astype(np.float32).ravel())
    rgba = np.concatenate([colors / 255.0, np.ones((len(colors), 1))], 1).astype(np.float32)
    mesh.color_attributes.new(POINT_COLOR_ATTR, 'BYTE_COLOR', 'POINT').data.foreach_set("color_srgb", rgba.ravel())
    mesh.update()
    obj = bpy.data.objects.new(POINTS_NAME, mesh)
    obj[IMPORTED_TAG] = True
    group = bpy.data.node_groups.new(POINTS_NAME, 'GeometryNodeTree')
    group.interface.new_socket("Geometry", in_out='INPUT', socket_type='NodeSocketGeometry')
    group.interface.new_socket("Geometry", in_out='OUTPUT', socket_type='NodeSocketGeometry')
    inputs, outputs = group.nodes.new('NodeGroupInput'), group.nodes.new('NodeGroupOutput')
    to_points = group.nodes.new('GeometryNodeMeshToPoints')
    to_points.inputs["Radius"].default_value = radius
    group.links.new(inputs.outputs[0], to_points.inputs["Mesh"])
    group.links.new(to_points.outputs["Points"], outputs.inputs[0])
    obj.modifiers.new("Points", 'NODES').node_group = group
    return obj


def apply_import(context: bpy.types.Context, reply: Reply) -> str:
    """Create one camera per image of an `import_dataset` reply, set the render size to the
    images' (if the scene's Set Render Size says so) and keep the label names for the UI.
    Returns a summary for the user."""
    result, arrays = reply.result, reply.arrays
    width, height = int(result.get("width", 0)), int(result.get("height", 0))
    if width <= 0 or height <= 0:
        raise ValueError(f"the worker reported an image size of {width}x{height}")
    c2w = np.asarray(arrays.get("c2w"), dtype=np.float64)
    intrinsics = np.asarray(arrays.get("intrinsics"), dtype=np.float64)
    names = list(result.get("names") or [])
    n_images = len(names)
    if c2w.shape != (n_images, 4, 4) or intrinsics.shape != (n_images, 4):
        raise ValueError(
            f"the worker sent {n_images} image names, c2w of shape {c2w.shape} and "
            f"intrinsics of shape {intrinsics.shape}; expected (N,4,4) and (N,4)")

    points = arrays.get("points")
    colors = arrays.get("point_colors")
    if points is not None and (np.shape(points)[1:] != (3,) or np.shape(colors) != np.shape(points)):
        raise ValueError(f"the worker sent points of shape {np.shape(points)} and colours of shape "
                         f"{np.shape(colors)}; expected (P,3) both")

    scene = context.scene
    collection = _empty_collection(scene)
    positions = c2w[:, :3, 3]
    extent = float(np.ptp(positions, axis=0).max()) if n_images > 1 else 0.0
    root = str(result.get("root") or "")
    for name, pose, (fx, _fy, cx, cy) in zip(names, c2w, intrinsics):
        camera = bpy.data.cameras.new(name)
        for key, value in camera_parameters(fx, cx, cy, width, height).items():
            setattr(camera, key, value)
        if extent > 0.0:
            camera.display_size = 0.05 * extent  # the default 1 m swamps small scenes
        if root:
            _show_photo(camera, os.path.join(root, name))
        obj = bpy.data.objects.new(name, camera)
        obj[IMPORTED_TAG] = True
        obj.matrix_world = Matrix(pose.tolist())
        collection.objects.link(obj)
    if n_images and scene.camera is None:
        scene.camera = collection.objects[0]
    if points is not None and len(points):
        collection.objects.link(_point_cloud(np.asarray(points), np.asarray(colors), 0.002 * max(extent, 1e-3)))

    props = scene.dff
    if props.set_render_size:
        scene.render.resolution_x, scene.render.resolution_y = width, height
        scene.render.resolution_percentage = 100
    props.n_images = n_images
    props.labels.clear()
    for label in (result.get("labels") or {}).values():  # in the worker's order
        props.labels.add().name = str(label)
    cloud = f", {len(points)} points" if points is not None else ""
    return f"Imported {n_images} cameras ({width}x{height}){cloud}, {len(props.labels)} labels"
