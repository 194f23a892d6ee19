"""COLMAP projects: a sparse model (`sparse/0/`, `sparse/` or the folder itself holding
`cameras.bin` or `cameras.txt`, `images.*`, `points3D.*`), read with pycolmap, beside `images/`
or `images_<k>/`. Distorting camera models are undistorted with COLMAP's own undistorter."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import DatasetError
from ..workspace import Confinement
from .images import Undistorter, check_aspect, downscaled_size, image_folder, load_images, open_image
from .views import Views, held_out_split

COLMAP_MODELS = ("SIMPLE_PINHOLE", "PINHOLE", "SIMPLE_RADIAL", "RADIAL", "OPENCV", "FULL_OPENCV")
MODEL_FILES = tuple(f"{name}{ext}" for name in ("cameras", "images", "points3D", "rigs", "frames")
                    for ext in (".bin", ".txt"))  # what pycolmap may read in a model folder


def colmap_model(root: Path, confine: Confinement) -> Path | None:
    """The COLMAP sparse model folder of a project folder (or the model folder itself)."""
    for candidate in (root / "sparse" / "0", root / "sparse", root):
        if any(confine.is_file(candidate / f"cameras{ext}") for ext in (".bin", ".txt")):
            return candidate
    return None


def load_colmap(model: Path, downscale: int, test_every: int, confine: Confinement) -> Views:
    """Registered images of a COLMAP model, sorted by name, every `test_every`-th held out for testing.

    COLMAP's world has no up: it is rotated so that the cameras' mean up vector is +z (Blender's
    up). Distorted images (SIMPLE_RADIAL, RADIAL, OPENCV, FULL_OPENCV) go through COLMAP's
    undistorter, all at the one scale that leaves no blank pixel in any of them, so every view
    keeps the same pinhole size."""
    import pycolmap  # only COLMAP imports need it

    root = _project_folder(model)
    for name in MODEL_FILES:
        confine.check(model / name)  # pycolmap opens them itself
    try:
        reconstruction = pycolmap.Reconstruction(str(model))
    except Exception as exc:  # noqa: BLE001 - pycolmap raises plain RuntimeError/ValueError
        raise DatasetError(f"{model}: cannot read the COLMAP model ({exc})",
                           "Check that cameras, images and points3D files are complete, or "
                           "export the model again (colmap model_converter).") from exc
    registered = sorted((image for image in reconstruction.images.values() if image.has_pose),
                        key=lambda image: image.name)
    if not registered:
        raise DatasetError(f"{model}: the model has no registered images",
                           "Run COLMAP's mapper until it registers the photos.")
    for image in registered:
        camera = reconstruction.cameras[image.camera_id]
        if camera.model.name not in COLMAP_MODELS:
            raise DatasetError(f"{model}: image {image.name} uses camera model {camera.model.name}, "
                               f"which is not supported ({', '.join(COLMAP_MODELS)} are)",
                               "Undistort the images first (colmap image_undistorter) and import "
                               "the undistorted project.")
    folder, resize = image_folder(root, downscale, confine)
    paths = [folder / image.name for image in registered]
    missing = [path for path in paths if not confine.is_file(path)]
    if missing:
        raise DatasetError(f"{model} names {len(missing)} images missing from {folder}, e.g. {missing[0]}",
                           "Put the photos the model was made from into that folder, with the "
                           "same file names.")

    stored = open_image(paths[0], confine).size
    cameras = []
    for image, path in zip(registered, paths):
        camera = pycolmap.Camera(reconstruction.cameras[image.camera_id].todict())
        check_aspect((camera.width, camera.height), stored, f"{model} (camera of {path.name})")
        camera.rescale(*downscaled_size(stored, resize))
        cameras.append(camera)
    undistorter = Undistorter(cameras)
    images, alphas, stored_size = load_images(paths, resize, confine, undistorter)
    intrinsics = undistorter.intrinsics(images.shape[2], images.shape[1])

    # World-to-camera (OpenCV: y down, looking along +z) -> camera-to-world (OpenGL).
    c2w = np.tile(np.eye(4), (len(registered), 1, 1))
    for pose, image in zip(c2w, registered):
        pose[:3] = image.cam_from_world().inverse().matrix()
    c2w[:, :3, 1:3] *= -1
    up = _rotation_to_z(c2w[:, :3, 1].mean(0))
    c2w = np.einsum("ij,njk->nik", up, c2w)
    points3d = [point for _, point in sorted(reconstruction.points3D.items())]
    points = np.array([point.xyz for point in points3d], np.float64).reshape(-1, 3) @ up[:3, :3].T
    colors = np.array([point.color for point in points3d], np.uint8).reshape(-1, 3)
    return Views(root=root, paths=paths, images=images, alphas=alphas, c2w=c2w, intrinsics=intrinsics,
                 split=held_out_split(len(paths), test_every), stored_size=stored_size, points=points,
                 point_colors=colors)


def _project_folder(model: Path) -> Path:
    """The project folder (the one holding images/) of a model folder: itself or up to 2 levels up."""
    for folder in (model, model.parent, model.parent.parent):
        if any(folder.glob("images*/")):
            return folder
    raise DatasetError(f"{model}: no images/ folder beside the COLMAP model (looked in {model}, "
                       f"{model.parent} and {model.parent.parent})",
                       "Put the photos in images/ next to sparse/, as COLMAP's projects have them.")


def _rotation_to_z(up: np.ndarray) -> np.ndarray:
    """4x4 rotation taking the direction `up` to +z by the shortest arc (identity if already)."""
    up = up / max(np.linalg.norm(up), 1e-12)
    axis = np.cross(up, [0.0, 0.0, 1.0])
    sin, cos = np.linalg.norm(axis), up[2]
    rotation = np.eye(4)
    if sin < 1e-9:
        rotation[:3, :3] = np.diag([1.0, -1.0, -1.0]) if cos < 0 else np.eye(3)
        return rotation
    k = axis / sin
    cross = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    rotation[:3, :3] = np.eye(3) + sin * cross + (1 - cos) * cross @ cross
    return rotation
