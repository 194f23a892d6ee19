"""Pictures in Blender images: those the worker sends (the baked texture, the training preview)
and the training curve drawn here.

All are (H, W, 3) uint8 RGB with the top row first, as files, numpy and the wire count rows;
`write_image` alone turns them over into Blender's bottom-first pixels."""

from __future__ import annotations

import bpy
import numpy as np

PREVIEW_IMAGE = "DFF Training Preview"
CURVE_IMAGE = "DFF Training Curve"
CURVE_SIZE = (256, 128)  # width, height in pixels
CURVE_BACKGROUND, CURVE_GRID, CURVE_LINE = (32, 32, 32), (64, 64, 64), (255, 170, 40)


def write_image(image: bpy.types.Image | None, name: str, rgb: np.ndarray) -> bpy.types.Image:
    """Put the pixels into `image`, or into a new image called `name` (Blender adds a suffix
    when the name is taken) when there is none yet; resized as needed."""
    height, width = rgb.shape[:2]
    if image is None:
        image = bpy.data.images.new(name, width, height, alpha=False)
    elif tuple(image.size) != (width, height):
        image.scale(width, height)
    rgba = np.ones((height * width, 4), np.float32)
    rgba[:, :3] = rgb[::-1].reshape(-1, 3) / 255.0  # Blender stores the bottom row first
    image.pixels.foreach_set(rgba.ravel())
    return image


def plot_curve(x: np.ndarray, y: np.ndarray, width: int, height: int) -> np.ndarray:
    """A line plot of y over x spanning the whole image, with a horizontal grid line every unit
    of y when there are few enough (dB on a PSNR curve): (height, width, 3) uint8, top row
    first. Needs at least two points with increasing x."""
    image = np.empty((height, width, 3), np.uint8)
    image[:] = CURVE_BACKGROUND
    low, high = float(y.min()), float(y.max())
    low, high = (low - 0.5, high + 0.5) if high - low < 1.0 else (low, high)

    def row(value: np.ndarray | float) -> np.ndarray:
        """The image row of `value`: `high` on the top row, `low` on the last."""
        up = np.clip(np.round((np.asarray(value) - low) / (high - low) * (height - 1)), 0, height - 1)
        return height - 1 - up.astype(int)

    if high - low <= height / 4:
        image[row(np.arange(np.ceil(low), np.floor(high) + 1))] = CURVE_GRID
    rows = row(np.interp(np.linspace(x[0], x[-1], width), x, y))
    # Each column is filled from its row to its neighbours', so steep stretches stay connected.
    previous, following = np.r_[rows[:1], rows[:-1]], np.r_[rows[1:], rows[-1:]]
    first = np.minimum(rows, (rows + np.minimum(previous, following)) // 2)
    last = np.maximum(rows, (rows + np.maximum(previous, following) + 1) // 2)
    ys = np.arange(height)[:, None]
    image[(ys >= first) & (ys <= last)] = CURVE_LINE
    return image


def _update_icon(image: bpy.types.Image) -> None:
    preview = image.preview_ensure()
    preview.image_size = image.size
    preview.image_pixels_float.foreach_set(image.pixels[:])


def show_with_icon(image: bpy.types.Image | None, name: str, rgb: np.ndarray) -> bpy.types.Image:
    """Write the image and its preview icon, which a panel draws with `template_icon` (Blender
    only makes icons from files on its own). Packed, so it is still there when the file is
    opened again."""
    image = write_image(image, name, rgb)
    image.pack()
    _update_icon(image)
    return image


def restore_icons(props: bpy.types.PropertyGroup) -> None:
    """Remake the icons of a scene's pictures after the file was opened (icons are not saved)."""
    for image in (props.preview_image, props.curve_image):
        # A packed image loads when its pixels are first read (`has_data` is False until then).
        if image is not None and len(image.pixels):
            _update_icon(image)


def show_training_curve(props: bpy.types.PropertyGroup) -> bpy.types.Image | None:
    """The scene's training PSNR over the steps so far -> the scene's curve image, which the Train
    panel shows (also open in any Image Editor as "DFF Training Curve"); None until there are
    two points."""
    curve = props.training_curve
    if len(curve) < 2:
        return None
    steps, psnr = np.array([p.step for p in curve], float), np.array([p.psnr for p in curve], float)
    props.curve_image = show_with_icon(props.curve_image, CURVE_IMAGE, plot_curve(steps, psnr, *CURVE_SIZE))
    return props.curve_image


def show_training_preview(props: bpy.types.PropertyGroup, rgb: np.ndarray) -> bpy.types.Image:
    """The render of a training view beside its photo -> the scene's preview image, which the
    Train panel shows (also open in any Image Editor as "DFF Training Preview")."""
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8 or min(rgb.shape[:2]) < 1:
        raise ValueError(f"a training preview must be an RGB uint8 image, got {rgb.shape} {rgb.dtype}")
    props.preview_image = show_with_icon(props.preview_image, PREVIEW_IMAGE, rgb)
    return props.preview_image
