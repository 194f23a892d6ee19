"""Texture bake: a UV atlas of the mesh (xatlas) and an image of the radiance field's colour.

Each texel covered by a triangle of the atlas gets the colour the field emits at its surface
point towards the outside, along the interpolated normal: the view of a camera facing the
surface. That is one field query per texel with no visibility test, and it is what the vertex
colours already use; averaging over the training cameras that see the point would cost a
visibility test per texel and camera for a view-dependent part that a texture cannot keep
anyway. Empty texels take the colour of the nearest covered one, so seams do not bleed the
background when the image is filtered or mip-mapped.

The image is stored top row first, as files and numpy count rows (v = 0 is its last row);
the add-on turns it over into Blender's bottom-first `Image.pixels`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from .extract import surface_colours
from ..errors import WorkerError
from ..nerf.field import NerfField
from ..progress import Reporter

PADDING = 2  # texels between charts: bilinear filtering never reads another chart; dilation fills the gap
TRIANGLES_HINT = ("Send the object's own triangles: 'vertices' float32 (V, 3) in the world frame and "
                  "'faces' int32 (F, 3), indices into them.")


@dataclass
class Bake:
    uv: np.ndarray       # (F, 3, 2) float32: each face corner's texture coordinate, in [0, 1]
    texture: np.ndarray  # (size, size, 3) uint8 sRGB, top row first

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {"uv": self.uv, "texture": self.texture}


@dataclass(frozen=True)
class Triangles:
    """One object's own triangles, baked on an atlas of their own: `vertices` (V, 3) float32 in
    the world frame, `faces` (F, 3) int32 indices into them. Checked when made: a wrong shape,
    type or index is a `bad_request` naming the array."""

    vertices: np.ndarray
    faces: np.ndarray

    def __post_init__(self) -> None:
        vertices, faces = self.vertices, self.faces
        for name, array, dtype, shape in (("vertices", vertices, np.float32, "(V, 3)"),
                                          ("faces", faces, np.int32, "(F, 3)")):
            if not isinstance(array, np.ndarray) or array.dtype != dtype or array.ndim != 2 \
                    or array.shape[1] != 3 or not len(array):
                got = f"{array.dtype} {array.shape}" if isinstance(array, np.ndarray) else type(array).__name__
                raise WorkerError("bad_request", f"array '{name}' must be {np.dtype(dtype)} of shape {shape} "
                                  f"with at least one row, got {got}", TRIANGLES_HINT)
        if not np.isfinite(vertices).all():
            raise WorkerError("bad_request", "array 'vertices' holds NaN or infinite coordinates", TRIANGLES_HINT)
        low, high = int(faces.min()), int(faces.max())
        if low < 0 or high >= len(vertices):
            raise WorkerError("bad_request", f"array 'faces' refers to vertex {low if low < 0 else high}, but "
                              f"'vertices' has {len(vertices)} rows", TRIANGLES_HINT)

    @property
    def key(self) -> str:
        """A digest of the triangles: the name of their bake in the workspace."""
        digest = hashlib.sha1(np.int64(len(self.vertices)).tobytes())
        digest.update(np.ascontiguousarray(self.vertices).tobytes())
        digest.update(np.ascontiguousarray(self.faces).tobytes())
        return digest.hexdigest()[:12]


def read_triangles(path: Path) -> Triangles:
    """The triangles of a mesh file (.ply, .obj, .glb...; polygons are split into triangles),
    in the file's coordinates, taken as the world frame."""
    import trimesh

    try:
        mesh = trimesh.load(path, force="mesh", process=False)
    except Exception as exc:  # noqa: BLE001 - trimesh fails with many types (format, parse, I/O)
        raise WorkerError("bad_request", f"{path} cannot be read as a mesh ({type(exc).__name__}: {exc})",
                          "Give a mesh file trimesh reads: .ply, .obj, .stl, .glb.") from exc
    return Triangles(np.asarray(mesh.vertices, np.float32).reshape(-1, 3),
                     np.asarray(mesh.faces, np.int64).reshape(-1, 3).astype(np.int32))


def uv_atlas(vertices: np.ndarray, faces: np.ndarray, size: int) -> np.ndarray:
    """Per-corner texture coordinates (F, 3, 2) in [0, 1] of an atlas packed for a size x size image."""
    import xatlas

    atlas = xatlas.Atlas()
    atlas.add_mesh(np.ascontiguousarray(vertices, np.float32), np.ascontiguousarray(faces, np.uint32))
    pack = xatlas.PackOptions()
    pack.resolution = size
    pack.padding = PADDING
    pack.bilinear = True
    atlas.generate(pack_options=pack)
    _, indices, uvs = atlas[0]  # faces come back in the input order, with seam-split vertices
    return uvs[indices].astype(np.float32)


def covered_texels(uv: np.ndarray, size: int, budget: int = 1 << 22) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The texels whose centre lies in a triangle of the atlas: (face, barycentric (T, 3), texel
    index row * size + col with row 0 at v = 0), for triangles batched to `budget` candidates."""
    xy = uv * size - 0.5  # texel (row, col) has its centre at x = col, y = row
    low = np.clip(np.ceil(xy.min(1)), 0, size - 1).astype(np.int64)
    high = np.clip(np.floor(xy.max(1)), -1, size - 1).astype(np.int64)
    extent = np.maximum(high - low + 1, 0)
    count = extent[:, 0] * extent[:, 1]
    faces, barys, texels = [], [], []
    starts = np.searchsorted(np.cumsum(count), np.arange(0, count.sum(), budget), side="right")
    for first, last in zip(starts, list(starts[1:]) + [len(uv)]):
        chunk = np.arange(first, last)
        n = count[chunk]
        face = np.repeat(chunk, n)
        offset = np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n)
        width = extent[face, 0]
        col = low[face, 0] + offset % np.maximum(width, 1)
        row = low[face, 1] + offset // np.maximum(width, 1)
        a, b, c = xy[face, 0], xy[face, 1], xy[face, 2]
        v0, v1 = b - a, c - a
        p = np.stack([col, row], 1) - a
        det = v0[:, 0] * v1[:, 1] - v0[:, 1] * v1[:, 0]
        safe = np.where(np.abs(det) > 1e-12, det, 1.0)
        beta = (p[:, 0] * v1[:, 1] - p[:, 1] * v1[:, 0]) / safe
        gamma = (v0[:, 0] * p[:, 1] - v0[:, 1] * p[:, 0]) / safe
        inside = (np.abs(det) > 1e-12) & (beta >= -1e-6) & (gamma >= -1e-6) & (beta + gamma <= 1 + 1e-6)
        faces.append(face[inside])
        barys.append(np.stack([1 - beta - gamma, beta, gamma], 1)[inside].astype(np.float32))
        texels.append((row * size + col)[inside])
    if not faces:
        return np.zeros(0, np.int64), np.zeros((0, 3), np.float32), np.zeros(0, np.int64)
    return np.concatenate(faces), np.concatenate(barys), np.concatenate(texels)


def fill_empty(image: np.ndarray, filled: np.ndarray) -> np.ndarray:
    """Every texel outside the charts takes the colour of the nearest texel inside one."""
    if not filled.any():
        return image
    _, nearest = ndimage.distance_transform_edt(~filled, return_indices=True)
    return image[nearest[0], nearest[1]]


def bake_texture(field: NerfField, vertices: np.ndarray, faces: np.ndarray, vertex_normals: np.ndarray,
                 size: int, reporter: Reporter) -> Bake:
    """UV atlas and baked colour texture of a mesh given in the field's normalised frame."""
    reporter.progress("bake", 0, 3, None, f"unwrapping {len(faces):,} faces")
    uv = uv_atlas(vertices, faces, size)
    reporter.progress("bake", 1, 3, None, f"colouring the {size} x {size} texture")
    face, bary, texel = covered_texels(uv, size)
    corners = faces[face]
    points = np.einsum("tk,tkc->tc", bary, vertices[corners].astype(np.float32))
    normals = np.einsum("tk,tkc->tc", bary, vertex_normals[corners].astype(np.float32))
    colours = surface_colours(field, points, normals)
    image = np.zeros((size * size, 3), np.float32)
    image[texel] = colours
    filled = np.zeros(size * size, bool)
    filled[texel] = True
    reporter.progress("bake", 2, 3, None, "filling the gaps between charts")
    image = fill_empty(image.reshape(size, size, 3), filled.reshape(size, size))
    reporter.progress("bake", 3, 3, None, "texture baked")
    # The atlas counts rows up from v = 0; the image counts them down from the top.
    return Bake(uv, np.clip(image[::-1] * 255 + 0.5, 0, 255).astype(np.uint8))
