"""The dataset's cameras as Blender camera objects in the "DFF Cameras" collection."""

from __future__ import annotations

import bpy
import numpy as np
from mathutils import Matrix

from .client import Reply

COLLECTION_NAME = "DFF Cameras"
SENSOR_WIDTH = 36.0  # mm; any width works, the lens is expressed relative to it


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
    """The cameras collection, linked to `scene` and emptied of earlier cameras."""
    collection = bpy.data.collections.get(COLLECTION_NAME)
    if collection is None:
        collection = bpy.data.collections.new(COLLECTION_NAME)
    if scene.collection.children.get(collection.name) is None:
        scene.collection.children.link(collection)
    for obj in list(collection.objects):
        data = obj.data
        bpy.data.objects.remove(obj)
        if data is not None and data.users == 0:
            bpy.data.cameras.remove(data)
    return collection


def apply_import(context: bpy.types.Context, reply: Reply) -> str:
    """Create one camera per image of an `import_dataset` reply, set the render size to the
    images' and keep the label names for the UI. Returns a summary for the user."""
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

    scene = context.scene
    collection = _empty_collection(scene)
    positions = c2w[:, :3, 3]
    extent = float(np.ptp(positions, axis=0).max()) if n_images > 1 else 0.0
    for name, pose, (fx, _fy, cx, cy) in zip(names, c2w, intrinsics):
        camera = bpy.data.cameras.new(name)
        for key, value in camera_parameters(fx, cx, cy, width, height).items():
            setattr(camera, key, value)
        if extent > 0.0:
            camera.display_size = 0.05 * extent  # the default 1 m swamps small scenes
        obj = bpy.data.objects.new(name, camera)
        obj.matrix_world = Matrix(pose.tolist())
        collection.objects.link(obj)
    if n_images and scene.camera is None:
        scene.camera = collection.objects[0]

    scene.render.resolution_x, scene.render.resolution_y = width, height
    scene.render.resolution_percentage = 100
    props = scene.dff
    props.n_images = n_images
    props.labels.clear()
    for label in (result.get("labels") or {}).values():  # in the worker's order
        props.labels.add().name = str(label)
    return f"Imported {n_images} cameras ({width}x{height}), {len(props.labels)} labels"
