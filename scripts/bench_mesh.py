"""Benchmark the mesh an artist gets: import into Blender, and the texture bake.

Prints:
  1. Seconds to bring a mesh of --faces faces (an icosphere, with vertex colours) into Blender
     through the add-on's importer (goal <= 2 s for 1M faces).
  2. With --workspace: the bake of its mesh at --size (seconds, share of the texture the
     charts cover), and how much the bake loses on the surface: PSNR of the texture, read
     bilinearly at each face's centroid, against the radiance field's colour there.
  3. The baked mesh rendered back (Cycles, the texture as emission) at --views held-out
     cameras, against the NeRF's own render of them and against the photos: PSNR over the
     pixels the mesh covers.

    python scripts/bench_mesh.py [--faces 1000000] [--workspace WS --size 2048 --views 5]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import bpy
import numpy as np
import trimesh
from mathutils import Matrix

from benchlib import scratch_copy
from blender_dff.scene.mesh_import import apply_mesh
from blender_dff.worker.client import Reply


def import_time(n_faces: int) -> None:
    subdivisions = int(np.ceil(np.log(n_faces / 20) / np.log(4)))
    sphere = trimesh.creation.icosphere(subdivisions=subdivisions)
    vertices, faces = np.asarray(sphere.vertices, np.float32), np.asarray(sphere.faces, np.int32)
    colors = (vertices + 1) / 2
    bpy.ops.wm.read_homefile(use_empty=True)
    import blender_dff

    blender_dff.register()
    reply = Reply(ok=True, result={}, arrays={"vertices": vertices, "faces": faces, "vertex_colors": colors})
    start = time.perf_counter()
    apply_mesh(bpy.context, reply)
    seconds = time.perf_counter() - start
    print(f"  {len(faces):,} faces, {len(vertices):,} vertices with colours: {seconds:.2f} s")
    blender_dff.unregister()


def bilinear(texture: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """Texture (top row first) read at uv (N, 2) like a renderer with linear filtering."""
    size = texture.shape[0]
    x, y = uv[:, 0] * size - 0.5, (1 - uv[:, 1]) * size - 0.5
    x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    at = lambda r, c: texture[np.clip(r, 0, size - 1), np.clip(c, 0, size - 1)].astype(np.float32)  # noqa: E731
    return ((at(y0, x0) * (1 - fx) + at(y0, x0 + 1) * fx) * (1 - fy)
            + (at(y0 + 1, x0) * (1 - fx) + at(y0 + 1, x0 + 1) * fx) * fy) / 255


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(-10 * np.log10(np.mean((a - b) ** 2)))


def cycles_render(mesh, bake, c2w: np.ndarray, intrinsics: np.ndarray, height: int, width: int,
                  out: Path) -> tuple[np.ndarray, np.ndarray]:
    """The textured mesh seen by one camera, lit by nothing but its texture as emission:
    (H, W, 3) sRGB and (H, W) alpha, top row first."""
    import blender_dff
    from blender_dff.scene.cameras import camera_parameters
    from blender_dff.scene.texture import apply_bake

    bpy.ops.wm.read_homefile(use_empty=True)
    blender_dff.register()
    apply_mesh(bpy.context, Reply(ok=True, result={}, arrays=mesh.to_arrays()))
    apply_bake(bpy.context, Reply(ok=True, result={}, arrays=bake.to_arrays()))
    nodes = bpy.data.materials["DFF Texture"].node_tree.nodes
    links = bpy.data.materials["DFF Texture"].node_tree.links
    emission = nodes.new("ShaderNodeEmission")
    links.new(nodes.active.outputs["Color"], emission.inputs["Color"])
    links.new(emission.outputs["Emission"], nodes["Material Output"].inputs["Surface"])
    scene = bpy.context.scene
    camera = bpy.data.objects.new("Bench Camera", bpy.data.cameras.new("Bench Camera"))
    scene.collection.objects.link(camera)
    fx, _, cx, cy = intrinsics
    for key, value in camera_parameters(fx, cx, cy, width, height).items():
        setattr(camera.data, key, value)
    camera.matrix_world = Matrix(np.asarray(c2w, np.float64).tolist())
    scene.camera = camera
    scene.render.engine = 'CYCLES'
    scene.cycles.device = 'CPU'
    scene.cycles.samples = 16
    scene.render.resolution_x, scene.render.resolution_y = width, height
    scene.render.resolution_percentage = 100
    scene.render.film_transparent = True
    scene.view_settings.view_transform = 'Standard'
    scene.render.image_settings.file_format = 'PNG'
    scene.render.image_settings.color_mode = 'RGBA'
    scene.render.filepath = str(out)
    bpy.ops.render.render(write_still=True)
    blender_dff.unregister()
    from PIL import Image

    rgba = np.asarray(Image.open(out), np.float32) / 255
    return rgba[..., :3], rgba[..., 3]


def bake_figures(workspace: Path, size: int, views: int) -> None:
    from external_worker import pipeline
    from external_worker.mesh.bake import covered_texels
    from external_worker.mesh.extract import surface_colours
    from external_worker.mesh.stored import load_mesh
    from external_worker.nerf.train import load_field
    from external_worker.progress import TqdmReporter
    from external_worker.geometry.frame import SceneFrame

    with tempfile.TemporaryDirectory() as tmp:
        ws = scratch_copy(workspace, Path(tmp) / "ws", "bake_*", "texture_*", "*features_*")
        mesh = load_mesh(ws)
        start = time.perf_counter()
        bake = pipeline.run_bake(ws, size, TqdmReporter())
        seconds = time.perf_counter() - start
        covered = len(np.unique(covered_texels(bake.uv, size)[2])) / size**2
        frame = SceneFrame.from_dict(ws.load_state()["frame"])
        vertices = frame.normalise_points(mesh.vertices).astype(np.float32)
        tm = trimesh.Trimesh(vertices, mesh.faces, process=False)
        field, _ = load_field(ws)
        truth = surface_colours(field, tm.triangles_center.astype(np.float32), tm.face_normals.astype(np.float32))
        baked = bilinear(bake.texture, bake.uv.mean(1))
        print(f"  {len(mesh.faces):,} faces, {size} x {size}: {seconds:.1f} s, charts cover {covered:.0%} of the "
              "texture")
        print(f"  texture vs the field's colour at face centroids: PSNR {psnr(baked, truth):.1f} dB")

        import torch

        from external_worker.nerf.render import render_view

        scene = pipeline.open_scene(ws)
        dataset = scene.dataset
        test = np.flatnonzero(dataset.split == "test")[:views]
        print(f"\n3. the baked mesh rendered back at {len(test)} held-out views (Cycles, texture as emission)")
        against_nerf, against_photo = [], []
        grid = load_field(ws)[1]
        for v in test:
            rgb, alpha = cycles_render(mesh, bake, dataset.c2w[v], dataset.intrinsics[v], dataset.height,
                                       dataset.width, Path(tmp) / f"view_{v}.png")
            c2w = torch.from_numpy(frame.normalise_poses(dataset.c2w[v:v + 1])[0])
            lens = torch.from_numpy(dataset.intrinsics[v].astype(np.float32))
            with torch.no_grad():
                nerf = render_view(field, grid, c2w, lens, dataset.height, dataset.width, 0.0).numpy()
            covered_pixels = alpha > 0.99
            against_nerf.append(psnr(rgb[covered_pixels], nerf[covered_pixels]))
            against_photo.append(psnr(rgb[covered_pixels], dataset.images[v][..., :3][covered_pixels]))
        print(f"  PSNR over the mesh's pixels: vs the NeRF's render {np.mean(against_nerf):.2f} dB, "
              f"vs the photos {np.mean(against_photo):.2f} dB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--faces", type=int, default=1_000_000)
    parser.add_argument("--workspace", type=Path, help="a trained workspace (NeRF and mesh)")
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--views", type=int, default=5, help="held-out views rendered back")
    args = parser.parse_args()
    print("1. mesh into Blender (the add-on's importer)")
    import_time(args.faces)
    if args.workspace:
        print("\n2. texture bake")
        bake_figures(args.workspace, args.size, args.views)


if __name__ == "__main__":
    main()
