"""Pictures the worker sends (the baked texture, the training preview) -> Blender images.

Both arrive as (H, W, 3) uint8 RGB with the bottom row first, as Blender stores pixels."""

from __future__ import annotations

import bpy
import numpy as np

PREVIEW_IMAGE = "DFF Training Preview"


def write_image(name: str, rgb: np.ndarray) -> bpy.types.Image:
    """Put the pixels into the image `name`, made (or remade at the new size) as needed."""
    height, width = rgb.shape[:2]
    image = bpy.data.images.get(name)
    if image is None or tuple(image.size) != (width, height):
        if image is not None:
            bpy.data.images.remove(image)
        image = bpy.data.images.new(name, width, height, alpha=False)
    rgba = np.ones((height * width, 4), np.float32)
    rgba[:, :3] = rgb.reshape(-1, 3) / 255.0
    image.pixels.foreach_set(rgba.ravel())
    return image


def show_training_preview(rgb: np.ndarray) -> bpy.types.Image:
    """The render of a training view beside its photo -> the image the Train panel shows (also
    open in any Image Editor as "DFF Training Preview")."""
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8 or min(rgb.shape[:2]) < 1:
        raise ValueError(f"a training preview must be an RGB uint8 image, got {rgb.shape} {rgb.dtype}")
    image = write_image(PREVIEW_IMAGE, rgb)
    # The panel draws the image's preview icon, which Blender only makes from files on its own.
    preview = image.preview_ensure()
    preview.image_size = image.size
    preview.image_pixels_float.foreach_set(image.pixels[:])
    return image
