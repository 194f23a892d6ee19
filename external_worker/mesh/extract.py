"""Mesh extraction: marching cubes on the density grid, cleanup, decimation, vertex colours."""

from __future__ import annotations

from dataclasses import dataclass

import mcubes
import numpy as np
import torch
import trimesh

from ..config import MeshConfig
from ..nerf.field import NerfField
from ..nerf.occupancy import OccupancyGrid
from ..nerf.render import surface_depth
from ..progress import Reporter
from ..geometry.camera import Cameras
from ..geometry.frame import SceneFrame
from ..geometry.visibility import seen_by_any


@dataclass
class Mesh:
    vertices: np.ndarray       # (V, 3) float32, dataset world frame
    faces: np.ndarray          # (F, 3) int32
    vertex_colors: np.ndarray  # (V, 3) float32 sRGB in [0, 1]

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {"vertices": self.vertices, "faces": self.faces, "vertex_colors": self.vertex_colors}


@torch.no_grad()
def density_grid(field: NerfField, grid: OccupancyGrid, resolution: int, reporter: Reporter,
                 chunk: int = 1 << 17) -> np.ndarray:
    """Density at the nodes of a resolution^3 lattice over [-1, 1]^3; unoccupied cells read 0."""
    dev = next(field.parameters()).device
    axis = torch.linspace(-1, 1, resolution, device=dev)
    out = torch.zeros(resolution**3, device=dev)
    slab = resolution * resolution
    for z0 in range(resolution):  # one z-slab at a time keeps memory flat at any resolution
        xy = torch.stack(torch.meshgrid(axis, axis, indexing="ij"), -1).reshape(-1, 2)
        points = torch.cat([xy, axis[z0].expand(len(xy), 1)], -1)
        keep = grid.lookup(points).nonzero()[:, 0]
        for i in range(0, len(keep), chunk):
            idx = keep[i:i + chunk]
            out[z0 * slab + idx] = field.density(points[idx])
        reporter.progress("mesh", z0 + 1, resolution, None, "evaluating density")
    # Layout (z, x, y) -> (x, y, z) for marching cubes.
    return out.view(resolution, resolution, resolution).permute(1, 2, 0).cpu().numpy()


@torch.no_grad()
def surface_colours(field: NerfField, points: np.ndarray, normals: np.ndarray, chunk: int = 1 << 16) -> np.ndarray:
    """Radiance (N, 3) in [0, 1] leaving surface points along their outward normals (the view of
    a camera facing the surface), normalised frame."""
    dev = next(field.parameters()).device
    out = []
    for i in range(0, len(points), chunk):
        x = torch.from_numpy(points[i:i + chunk]).float().to(dev)
        d = -torch.from_numpy(normals[i:i + chunk]).float().to(dev)
        out.append(field(x, d / d.norm(dim=-1, keepdim=True).clamp_min(1e-8))[1].cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 3), np.float32)


def fill_cavities(density: np.ndarray, threshold: float) -> np.ndarray:
    """Make enclosed empty pockets solid. No camera sees inside an object, so the field's density
    there is arbitrary; without this, marching cubes builds surfaces inside the objects."""
    from scipy import ndimage

    solid = density > threshold
    pockets = ndimage.binary_fill_holes(solid) & ~solid
    return np.where(pockets, 2 * threshold, density)


def clean(mesh: trimesh.Trimesh, min_component_faces: int) -> trimesh.Trimesh:
    """Drop degenerate faces and small islands (floaters)."""
    mesh.update_faces(mesh.nondegenerate_faces())
    mesh.remove_unreferenced_vertices()
    components = mesh.split(only_watertight=False)
    keep = [c for c in components if len(c.faces) >= min_component_faces]
    return trimesh.util.concatenate(keep) if keep else mesh


def decimate(vertices: np.ndarray, faces: np.ndarray, max_faces: int) -> tuple[np.ndarray, np.ndarray]:
    import fast_simplification

    reduction = 1 - max_faces / len(faces)
    return fast_simplification.simplify(vertices, faces, target_reduction=reduction)


VISIBILITY_SIZE = 160  # longest side of the views the visibility of faces is decided in


def field_depths(field: NerfField, grid: OccupancyGrid, cameras: Cameras) -> list[np.ndarray]:
    """The radiance field's surface depth in each view (see `render.surface_depth`)."""
    small = cameras.scaled_to(VISIBILITY_SIZE)
    dev = next(field.parameters()).device
    return [surface_depth(field, grid, torch.from_numpy(pose).float().to(dev), torch.from_numpy(k).float().to(dev),
                          small.height, small.width).cpu().numpy() for pose, k in zip(small.c2w, small.intrinsics)]


def cull_unseen(mesh: trimesh.Trimesh, cameras: Cameras, voxel: float, occluders: list[np.ndarray] | None = None,
                max_hole_faces: int = 64) -> trimesh.Trimesh:
    """Remove faces no training camera sees: the insides of objects, which the field leaves
    undefined and marching cubes turns into hidden surfaces, and whatever lies under an opaque
    floor or behind a wall, hidden by the field's surface (`occluders`) even where that surface
    runs on past the mesh's box. The splat resolution is capped so a pixel is wider than a face
    (see visibility.py). Small unseen patches inside seen surface are grazing-angle misses of the
    z-test, not hidden surfaces: they stay, so no holes open."""
    seen = seen_by_any(mesh.triangles_center, mesh.face_normals, cameras.scaled_to(VISIBILITY_SIZE),
                       tolerance=3 * voxel, occluders=occluders)
    unseen = np.flatnonzero(~seen)
    pairs = mesh.face_adjacency
    pairs = pairs[~seen[pairs[:, 0]] & ~seen[pairs[:, 1]]]
    for patch in trimesh.graph.connected_components(pairs, nodes=unseen, min_len=1):
        if len(patch) <= max_hole_faces:
            seen[patch] = True
    mesh.update_faces(seen)
    mesh.remove_unreferenced_vertices()
    return mesh


def extract_mesh(field: NerfField, grid: OccupancyGrid, frame: SceneFrame, cameras: Cameras,
                 config: MeshConfig, reporter: Reporter) -> Mesh:
    density = fill_cavities(density_grid(field, grid, config.resolution, reporter), config.density_threshold)
    vertices, faces = mcubes.marching_cubes(density, config.density_threshold)
    if len(faces) == 0:
        return Mesh(np.zeros((0, 3), np.float32), np.zeros((0, 3), np.int32), np.zeros((0, 3), np.float32))
    vertices = vertices / (config.resolution - 1) * 2 - 1
    mesh = trimesh.Trimesh(vertices, faces, process=True)  # PyMCubes' winding already faces outwards
    occluders = field_depths(field, grid, cameras)
    mesh = clean(cull_unseen(clean(mesh, config.min_component_faces), cameras, 2 / config.resolution, occluders),
                 config.min_component_faces)
    vertices, faces = np.asarray(mesh.vertices), np.asarray(mesh.faces)
    if config.max_faces and len(faces) > config.max_faces:
        vertices, faces = decimate(vertices, faces, config.max_faces)
        mesh = trimesh.Trimesh(vertices, faces, process=False)
    colors = surface_colours(field, np.asarray(mesh.vertices, np.float32), np.asarray(mesh.vertex_normals, np.float32))
    return Mesh(vertices=frame.to_world(np.asarray(mesh.vertices)), faces=np.asarray(mesh.faces, np.int32),
                vertex_colors=colors.astype(np.float32))
