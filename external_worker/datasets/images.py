"""Reading a dataset's photos: the folder to read, decoding and downscaling on threads into one
stack, and COLMAP's undistorter for lenses that bend straight lines."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from ..errors import DatasetError
from ..workspace import Confinement

_log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
GREY_16_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")
_WORKERS = min(8, os.cpu_count() or 1)


def image_folder(root: Path, downscale: int, confine: Confinement) -> tuple[Path, int]:
    """The folder to read and the factor still to resize by: `images_<downscale>/` as it is,
    else `images/` resized; with downscale 1 and only one `images_<k>/`, that one as it is."""
    exact = root / f"images_{downscale}"
    if confine.is_dir(exact):
        return exact, 1
    if confine.is_dir(root / "images"):
        return root / "images", downscale
    others = sorted(p.name for p in root.glob("images_*") if confine.is_dir(p))
    if downscale == 1 and len(others) == 1:
        _log.warning("%s: no images/ folder, using %s/ (already downscaled)", root, others[0])
        return root / others[0], 1
    found = f"; found {', '.join(others)}" if others else ""
    raise DatasetError(f"{root}: no images_{downscale}/ or images/ folder{found}",
                       "Pass downscale=<k> to use an existing images_<k>/ folder, or add the "
                       "full-size images/ folder.")


class _ImageStack:
    """Preallocated output arrays that decoding threads fill in place."""

    def __init__(self, count: int, size: tuple[int, int]) -> None:
        self.images = np.empty((count, size[1], size[0], 3), np.float32)
        self.alphas: np.ndarray | None = None  # made on the first image with alpha
        self._lock = threading.Lock()

    def put(self, index: int, pixels: np.ndarray) -> None:
        self.images[index] = pixels[..., :3]
        if pixels.shape[-1] == 4:
            with self._lock:
                if self.alphas is None:
                    # Ones: views without an alpha channel are opaque.
                    self.alphas = np.ones(self.images.shape[:3], np.float32)
            self.alphas[index] = pixels[..., 3]


def load_images(paths: list[Path], downscale: int, confine: Confinement,
                transform: Callable[[int, np.ndarray], np.ndarray] | None = None
                ) -> tuple[np.ndarray, np.ndarray | None, tuple[int, int]]:
    """Decode all images (threads: PIL decodes without holding the GIL), each passed through
    `transform(index, pixels)` when given; returns images, alphas (None when no image has alpha)
    and the stored (width, height) they all share."""
    first, stored_size = _decode_image(paths[0], downscale, confine)
    if transform is not None:
        first = transform(0, first)
    stack = _ImageStack(len(paths), (first.shape[1], first.shape[0]))
    stack.put(0, first)

    def load(index: int) -> None:
        pixels, size = _decode_image(paths[index], downscale, confine)
        if size != stored_size:
            raise DatasetError(f"{paths[index]}: image is {size[0]}x{size[1]} but {paths[0]} is "
                               f"{stored_size[0]}x{stored_size[1]}",
                               "All images of a dataset must have the same size: resize or remove "
                               "the odd one.")
        stack.put(index, pixels if transform is None else transform(index, pixels))

    in_parallel(load, range(1, len(paths)))
    return stack.images, stack.alphas, stored_size


def _decode_image(path: Path, downscale: int, confine: Confinement) -> tuple[np.ndarray, tuple[int, int]]:
    """(H, W, 3 or 4) float32 in [0, 1] at 1/downscale size, and the (width, height) stored in
    the file after EXIF rotation."""
    image = open_image(path, confine)
    stored_size = image.size
    target = downscaled_size(stored_size, downscale)
    if image.mode in GREY_16_BIT_MODES:
        grey = Image.fromarray(np.asarray(image, np.float32) / 65535.0)
        if grey.size != target:
            grey = grey.resize(target, Image.Resampling.BOX)
        pixels = np.repeat(np.clip(np.asarray(grey), 0.0, 1.0)[..., None], 3, -1)
        return pixels, stored_size
    if image.mode not in ("RGB", "RGBA"):
        with_alpha = image.mode in ("LA", "La", "PA", "RGBa") or "transparency" in image.info
        image = image.convert("RGBA" if with_alpha else "RGB")
    if image.size != target:
        image = image.resize(target, Image.Resampling.BOX)  # PIL premultiplies alpha for this
    pixels = np.asarray(image, np.float32)
    pixels *= 1.0 / 255.0
    return pixels, stored_size


def open_image(path: Path, confine: Confinement,
               hint: str = "Replace it with an RGB or RGBA PNG or JPEG.") -> Image.Image:
    """The decoded image at `path`, once `confine` allows it."""
    try:
        with Image.open(confine.check(path)) as image:
            image.load()
            ImageOps.exif_transpose(image, in_place=True)
        return image  # closing the file keeps the decoded pixels
    except Image.DecompressionBombError as exc:  # its header claims more pixels than memory should hold
        raise DatasetError(f"{path}: the image is too large to read ({exc})",
                           f"Resize the photos to at most {Image.MAX_IMAGE_PIXELS} pixels each: the "
                           "downscale option shrinks them only after reading them whole.") from exc
    except (OSError, ValueError, SyntaxError) as exc:
        raise DatasetError(f"{path}: cannot read the image ({exc})", hint) from exc


def downscaled_size(size: tuple[int, int], downscale: int) -> tuple[int, int]:
    return max(1, round(size[0] / downscale)), max(1, round(size[1] / downscale))


def check_aspect(reference: tuple[float, float], stored_size: tuple[int, int], where: str) -> None:
    """Intrinsics given for another size are scaled, which only works for the same aspect ratio."""
    aspect = stored_size[0] / stored_size[1]
    if abs(reference[0] / reference[1] - aspect) > 0.01 * aspect:
        raise DatasetError(f"{where}: the camera is for {reference[0]:g}x{reference[1]:g} images but "
                           f"the images are {stored_size[0]}x{stored_size[1]}",
                           "The images may be rotated (EXIF orientation) or cropped: use the images "
                           "the poses were computed from.")


class Undistorter:
    """COLMAP's undistorter for the cameras of the images (pycolmap.Camera at the loaded size),
    all at the one scale that leaves no blank pixel in any image, so every view keeps the same
    pinhole size. Called on decoded pixels (index, (H, W, 3 or 4)), as `load_images` does."""

    def __init__(self, cameras: list) -> None:
        import pycolmap

        self._pycolmap = pycolmap
        self.cameras = cameras
        self.options = pycolmap.UndistortCameraOptions()
        distorting = [camera for camera in cameras if not camera.is_undistorted()]
        if distorting:
            scale = min(pycolmap.undistort_camera(self.options, camera).width / camera.width
                        for camera in distorting)
            self.options.min_scale = self.options.max_scale = scale

    def __call__(self, index: int, pixels: np.ndarray) -> np.ndarray:
        camera = self.cameras[index]
        if camera.is_undistorted():
            return pixels
        channels = [pixels[..., :3]] + ([pixels[..., 3]] if pixels.shape[-1] == 4 else [])
        out = []
        for channel in channels:  # colour, then alpha as a grey image
            bitmap = self._pycolmap.Bitmap.from_array(np.round(channel * 255).astype(np.uint8))
            warped = self._pycolmap.undistort_image(self.options, bitmap, camera)[0].to_array()
            out.append(warped.reshape(*warped.shape[:2], -1).astype(np.float32) / 255.0)
        return np.concatenate(out, -1)

    def intrinsics(self, width: int, height: int) -> np.ndarray:
        """(N, 4) fx, fy, cx, cy of the undistorted images, which are `width` x `height`."""
        rows = []
        for camera in self.cameras:
            pinhole = camera if camera.is_undistorted() else self._pycolmap.undistort_camera(self.options, camera)
            sx, sy = width / pinhole.width, height / pinhole.height
            rows.append([pinhole.focal_length_x * sx, pinhole.focal_length_y * sy,
                         pinhole.principal_point_x * sx, pinhole.principal_point_y * sy])
        return np.array(rows)


def in_parallel(task: Callable[[int], None], indices: Iterable[int]) -> None:
    """Run task(i) on a thread pool; re-raise the first failure in index order."""
    with ThreadPoolExecutor(max_workers=_WORKERS) as pool:
        try:
            for _ in pool.map(task, indices):
                pass
        except BaseException:
            pool.shutdown(cancel_futures=True)  # report the error now, not after decoding the rest
            raise
