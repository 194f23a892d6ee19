"""Render a labelled synthetic scene with Blender (Cycles, CPU) as a NeRF-synthetic dataset.

Writes to ``--out``:

- ``train/r_000.png`` ..., ``test/r_000.png`` ...: RGBA renders, transparent background;
  with ``--ground`` the objects rest on a textured floor (label "ground") that reaches far beyond
  them and the scene box, as a real floor does, one object stands on another and the others
  touch their neighbours;
- ``transforms_train.json``, ``transforms_test.json``: ``camera_angle_x``, frames with
  camera-to-world matrices (Blender/OpenGL camera convention) and the scene ``aabb``;
- ``labels/train/r_000.png`` ...: 8-bit label maps, the id of the object hit by the ray
  through each pixel centre, 0 for background;
- ``labels.json``: ``{"1": "cube", ...}``;
- ``ground_truth.npz``: the triangles that were rendered (``vertices``, ``faces``,
  ``face_labels``) in world coordinates.

Run with the Python that has the ``bpy`` module::

    python scripts/make_scene.py --out demo/scene --resolution 128 --views 60
    python scripts/make_scene.py --out demo/room --ground   # objects on a floor, touching
"""

from __future__ import annotations

import argparse
import colorsys
import itertools
import math
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import bpy
import numpy as np
from PIL import Image
from tqdm import tqdm

# These modules come with bpy and import only after it.
import bmesh  # noqa: E402
from mathutils import Matrix, Vector  # noqa: E402
from mathutils.bvhtree import BVHTree  # noqa: E402

from blender_dff.capture.render import (GOLDEN_ANGLE, atomic_path, looking_at, orbit, render_views, setup_render,
                                        write_json)

FOV_DEG = 40.0
WIDTH_RANGE = (0.5, 0.8)  # horizontal extent of each object, scene units
DISC_RADIUS = 1.2  # objects are spread within this disc around the origin
AABB_PADDING = 0.1  # fraction of the box size added on each side
GROUND_HALF_SIZE = 4.0  # the floor reaches this far from the origin: under every camera, past the box
GROUND_CELLS = 16  # the floor is a grid of this many squares a side (two triangles each)
STACK_ON, STACKED = "cube", "cone"  # with a ground: this object stands on that one (a flat base on a top)
TOUCH_TOLERANCE = 1e-3  # objects pushed together stop this close (scene units)


def _cube(bm: bmesh.types.BMesh) -> None:
    bmesh.ops.create_cube(bm, size=1.0)


def _sphere(bm: bmesh.types.BMesh) -> None:
    bmesh.ops.create_uvsphere(bm, u_segments=32, v_segments=16, radius=0.5)


def _cone(bm: bmesh.types.BMesh) -> None:
    bmesh.ops.create_cone(bm, cap_ends=True, segments=32, radius1=0.5, radius2=0.0, depth=1.0)


def _torus(bm: bmesh.types.BMesh, major: float = 0.5, minor: float = 0.18) -> None:
    rings, sides = 32, 12
    grid = [[None] * sides for _ in range(rings)]
    for i in range(rings):
        u = 2.0 * math.pi * i / rings
        for j in range(sides):
            v = 2.0 * math.pi * j / sides
            r = major + minor * math.cos(v)
            grid[i][j] = bm.verts.new((r * math.cos(u), r * math.sin(u), minor * math.sin(v)))
    for i in range(rings):
        for j in range(sides):
            i1, j1 = (i + 1) % rings, (j + 1) % sides
            bm.faces.new((grid[i][j], grid[i1][j], grid[i1][j1], grid[i][j1]))


def _monkey(bm: bmesh.types.BMesh) -> None:
    bmesh.ops.create_monkey(bm)


def _cylinder(bm: bmesh.types.BMesh) -> None:
    bmesh.ops.create_cone(bm, cap_ends=True, segments=32, radius1=0.5, radius2=0.5, depth=1.0)


def _icosphere(bm: bmesh.types.BMesh) -> None:
    bmesh.ops.create_icosphere(bm, subdivisions=1, radius=0.5)


def _pyramid(bm: bmesh.types.BMesh) -> None:
    bmesh.ops.create_cone(bm, cap_ends=True, segments=4, radius1=0.6, radius2=0.0, depth=0.8)


# Shape name -> (builder, smooth shading). The first `objects` entries are used, in this order,
# and the name is also the object's label.
SHAPES: dict[str, tuple[Callable[[bmesh.types.BMesh], None], bool]] = {
    "cube": (_cube, False),
    "sphere": (_sphere, True),
    "cone": (_cone, False),
    "torus": (_torus, True),
    "monkey": (_monkey, True),
    "cylinder": (_cylinder, False),
    "icosphere": (_icosphere, False),
    "pyramid": (_pyramid, False),
}


def _triangulated_mesh(name: str, width: float, smooth: bool) -> bpy.types.Mesh:
    """Build shape `name` as a triangle mesh `width` wide in x/y, resting on z=0 at the origin.

    Rendering the very triangles that go into ground_truth.npz keeps the two exactly consistent.
    """
    bm = bmesh.new()
    SHAPES[name][0](bm)
    bmesh.ops.triangulate(bm, faces=bm.faces[:])
    co = np.array([v.co for v in bm.verts])
    lo, hi = co.min(axis=0), co.max(axis=0)
    scale = width / float(max(hi[0] - lo[0], hi[1] - lo[1]))
    centre = Vector(((lo[0] + hi[0]) / 2, (lo[1] + hi[1]) / 2, lo[2]))
    bmesh.ops.transform(bm, matrix=Matrix.Diagonal((scale, scale, scale, 1.0)) @ Matrix.Translation(-centre),
                        verts=bm.verts[:])
    for face in bm.faces:
        face.smooth = smooth
    mesh = bpy.data.meshes.new(name)
    bm.to_mesh(mesh)
    bm.free()
    return mesh


def _footprint_radius(mesh: bpy.types.Mesh) -> float:
    """Radius of the smallest origin-centred circle around the mesh's x/y footprint."""
    co = np.empty(len(mesh.vertices) * 3, dtype=np.float64)
    mesh.vertices.foreach_get("co", co)
    return float(np.linalg.norm(co.reshape(-1, 3)[:, :2], axis=1).max())


def _place(radii: list[float], rng: np.random.Generator) -> list[tuple[float, float]]:
    """Random non-overlapping centres for circles of `radii` within a disc around the origin.

    The disc grows a little whenever a circle does not fit after many tries, so placement
    always terminates while staying close to DISC_RADIUS for the usual few objects.
    """
    disc, centres, gap = DISC_RADIUS, [], 0.05
    for r in radii:
        for attempt in itertools.count(1):
            rho = max(disc - r, 0.0) * math.sqrt(rng.uniform())
            phi = rng.uniform(0.0, 2.0 * math.pi)
            c = (rho * math.cos(phi), rho * math.sin(phi))
            if all(math.dist(c, c2) >= r + r2 + gap for c2, r2 in zip(centres, radii)):
                centres.append(c)
                break
            if attempt % 200 == 0:
                disc *= 1.1
    return centres


def _ground_mesh() -> bpy.types.Mesh:
    """The floor: a square grid at z = 0, triangulated, facing up."""
    bm = bmesh.new()
    bmesh.ops.create_grid(bm, x_segments=GROUND_CELLS, y_segments=GROUND_CELLS, size=GROUND_HALF_SIZE)
    bmesh.ops.triangulate(bm, faces=bm.faces[:])
    mesh = bpy.data.meshes.new("ground")
    bm.to_mesh(mesh)
    bm.free()
    return mesh


def _world_bvh(obj: bpy.types.Object) -> BVHTree:
    co = np.empty(len(obj.data.vertices) * 3, dtype=np.float64)
    obj.data.vertices.foreach_get("co", co)
    matrix = np.array(obj.matrix_world)
    world = co.reshape(-1, 3) @ matrix[:3, :3].T + matrix[:3, 3]
    return BVHTree.FromPolygons(world.tolist(), [tuple(p.vertices) for p in obj.data.polygons], all_triangles=True)


def _push_until_touching(obj: bpy.types.Object, towards: bpy.types.Object, others: list[bpy.types.Object]) -> None:
    """Slide `obj` along the floor towards `towards` until it touches it (or another of
    `others`), found by bisection on the distance: the two meshes' triangles overlap at the
    near end and not at the far one, and at the end they lie within TOUCH_TOLERANCE."""
    start = np.array(obj.location[:2])
    goal = np.array(towards.location[:2])

    def overlaps(fraction: float) -> bool:
        obj.location[:2] = start + fraction * (goal - start)
        bpy.context.view_layer.update()
        mine = _world_bvh(obj)
        return any(mine.overlap(_world_bvh(other)) for other in others)

    free, blocked = 0.0, 1.0
    if overlaps(free):
        raise RuntimeError(f"{obj.name} overlaps another object where it was placed")
    step = np.linalg.norm(goal - start)
    while (blocked - free) * step > TOUCH_TOLERANCE:
        middle = (free + blocked) / 2
        if overlaps(middle):
            blocked = middle
        else:
            free = middle
    overlaps(free)


def _srgb_to_linear(c: float) -> float:
    return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4


def _socket(sockets: bpy.types.bpy_prop_collection, identifier: str) -> bpy.types.NodeSocket:
    """Socket by identifier: the Mix node has several sockets named "A", one per data type."""
    return next(s for s in sockets if s.identifier == identifier)


def _material(name: str, hue: float, saturation: float = 0.85) -> bpy.types.Material:
    """Diffuse material: a colour, modulated by noise and a checker so a NeRF has texture."""
    base = [_srgb_to_linear(c) for c in colorsys.hsv_to_rgb(hue, saturation, 0.85)]
    mat = bpy.data.materials.new(name)
    mat.use_nodes = True
    nodes, links = mat.node_tree.nodes, mat.node_tree.links
    nodes.clear()
    coords = nodes.new("ShaderNodeTexCoord")
    noise = nodes.new("ShaderNodeTexNoise")
    noise.inputs["Scale"].default_value = 4.0
    noise.inputs["Detail"].default_value = 4.0
    checker = nodes.new("ShaderNodeTexChecker")
    checker.inputs["Scale"].default_value = 6.0
    checker.inputs["Color1"].default_value = (1.0, 1.0, 1.0, 1.0)
    checker.inputs["Color2"].default_value = (0.6, 0.6, 0.6, 1.0)
    shade = nodes.new("ShaderNodeMix")  # dark-to-light variant of the base colour, by noise
    shade.data_type = "RGBA"
    _socket(shade.inputs, "A_Color").default_value = (*[0.35 * c for c in base], 1.0)
    _socket(shade.inputs, "B_Color").default_value = (*base, 1.0)
    pattern = nodes.new("ShaderNodeMix")  # times the checker
    pattern.data_type = "RGBA"
    pattern.blend_type = "MULTIPLY"
    _socket(pattern.inputs, "Factor_Float").default_value = 1.0
    diffuse = nodes.new("ShaderNodeBsdfDiffuse")
    output = nodes.new("ShaderNodeOutputMaterial")
    links.new(coords.outputs["Object"], noise.inputs["Vector"])
    links.new(coords.outputs["Object"], checker.inputs["Vector"])
    links.new(noise.outputs["Fac"], _socket(shade.inputs, "Factor_Float"))
    links.new(_socket(shade.outputs, "Result_Color"), _socket(pattern.inputs, "A_Color"))
    links.new(checker.outputs["Color"], _socket(pattern.inputs, "B_Color"))
    links.new(_socket(pattern.outputs, "Result_Color"), diffuse.inputs["Color"])
    links.new(diffuse.outputs["BSDF"], output.inputs["Surface"])
    return mat


def _add_objects(scene: bpy.types.Scene, names: list[str], rng: np.random.Generator,
                 grounded: bool = False) -> list[bpy.types.Object]:
    """Create the labelled objects; object i + 1 is label id i + 1. `grounded`: STACKED stands on
    STACK_ON, and each other object is slid along the floor until it touches the one before it."""
    meshes = [_triangulated_mesh(n, rng.uniform(*WIDTH_RANGE), SHAPES[n][1]) for n in names]
    stacked = grounded and STACK_ON in names and STACKED in names
    on_floor = [i for i, n in enumerate(names) if not (stacked and n == STACKED)]
    centres = dict(zip(on_floor, _place([_footprint_radius(meshes[i]) for i in on_floor], rng)))
    hue0 = rng.uniform()
    objects = []
    for i, (name, mesh) in enumerate(zip(names, meshes)):
        mesh.materials.append(_material(name, (hue0 + i / len(names)) % 1.0))
        obj = bpy.data.objects.new(name, mesh)
        obj.rotation_euler = (0.0, 0.0, rng.uniform(0.0, 2.0 * math.pi))
        obj.pass_index = i + 1
        scene.collection.objects.link(obj)
        objects.append(obj)
    for i in on_floor:
        objects[i].location = (*centres[i], 0.0)
    bpy.context.view_layer.update()
    if grounded:
        for k in range(1, len(on_floor)):
            _push_until_touching(objects[on_floor[k]], objects[on_floor[k - 1]], [objects[j] for j in on_floor[:k]])
    if stacked:
        support, top = objects[names.index(STACK_ON)], objects[names.index(STACKED)]
        top.location = (*support.location[:2], _top_height(support))
        bpy.context.view_layer.update()
    return objects


def _top_height(obj: bpy.types.Object) -> float:
    co = np.empty(len(obj.data.vertices) * 3, dtype=np.float64)
    obj.data.vertices.foreach_get("co", co)
    return float(co.reshape(-1, 3)[:, 2].max() * obj.scale[2] + obj.location[2])


def _add_ground(scene: bpy.types.Scene, label: int) -> bpy.types.Object:
    mesh = _ground_mesh()
    mesh.materials.append(_material("ground", 0.08, saturation=0.25))
    ground = bpy.data.objects.new("ground", mesh)
    ground.pass_index = label
    scene.collection.objects.link(ground)
    return ground


def _setup_lighting(scene: bpy.types.Scene) -> None:
    """Grey world light so no side is black, plus a sun for shading."""
    world = bpy.data.worlds.new("World")
    world.use_nodes = True
    background = world.node_tree.nodes["Background"]
    background.inputs["Color"].default_value = (0.5, 0.5, 0.5, 1.0)
    background.inputs["Strength"].default_value = 0.8
    scene.world = world
    sun = bpy.data.lights.new("Sun", type="SUN")
    sun.energy = 2.5
    sun_obj = bpy.data.objects.new("Sun", sun)
    sun_obj.rotation_euler = (math.radians(40.0), 0.0, math.radians(30.0))
    scene.collection.objects.link(sun_obj)


def _label_map(bvh: BVHTree, face_labels: np.ndarray, camera: bpy.types.Object, resolution: int) -> np.ndarray:
    """Label id of the first triangle hit by the ray through each pixel centre (0: no hit).

    Pixel (i, j) spans [j, j+1) x [i, i+1) with row 0 at the top, as in the rendered PNG.
    """
    half = math.tan(camera.data.angle / 2.0)  # square image: the same half-extent in x and y
    centres = (np.arange(resolution) + 0.5) / resolution * 2.0 - 1.0
    rotation = np.array(camera.matrix_world.to_3x3())
    origin = camera.matrix_world.translation
    labels = np.zeros((resolution, resolution), dtype=np.uint8)
    for i, v in enumerate(-centres * half):
        directions = np.stack([centres * half, np.full(resolution, v), -np.ones(resolution)], axis=1) @ rotation.T
        for j, direction in enumerate(directions):
            index = bvh.ray_cast(origin, Vector(direction))[2]
            if index is not None:
                labels[i, j] = face_labels[index]
    return labels


def _canonical_order(tris: np.ndarray) -> np.ndarray:
    """Triangles sorted, each starting at its smallest vertex index (winding kept).

    bmesh builds some primitives (the UV sphere) with a face order that changes between runs;
    this makes the exported faces depend on the geometry only.
    """
    start = tris.argmin(axis=1)[:, None]
    tris = np.take_along_axis(tris, (start + np.arange(3)) % 3, axis=1)
    return tris[np.lexsort(tris.T[::-1])]


def _ground_truth(objects: list[bpy.types.Object]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """World-space triangles of all objects, with the label id of each face."""
    vertices, faces, face_labels, offset = [], [], [], 0
    for label, obj in enumerate(objects, start=1):
        mesh = obj.data
        co = np.empty(len(mesh.vertices) * 3, dtype=np.float64)
        mesh.vertices.foreach_get("co", co)
        matrix = np.array(obj.matrix_world)
        vertices.append(co.reshape(-1, 3) @ matrix[:3, :3].T + matrix[:3, 3])
        tris = np.empty(len(mesh.polygons) * 3, dtype=np.int64)
        mesh.polygons.foreach_get("vertices", tris)  # every polygon is a triangle
        faces.append(_canonical_order(tris.reshape(-1, 3)) + offset)
        face_labels.append(np.full(len(mesh.polygons), label))
        offset += len(mesh.vertices)
    return (np.concatenate(vertices).astype(np.float32), np.concatenate(faces).astype(np.int32),
            np.concatenate(face_labels).astype(np.int32))


def _write_label_png(path: Path, labels: np.ndarray) -> None:
    tmp = atomic_path(path)
    Image.fromarray(labels, mode="L").save(tmp, format="PNG")
    os.replace(tmp, path)


def _write_npz(path: Path, **arrays: np.ndarray) -> None:
    tmp = atomic_path(path)
    with open(tmp, "wb") as f:
        np.savez_compressed(f, **arrays)
    os.replace(tmp, path)


def _check_arguments(resolution: int, views: int, test_views: int, objects: int, samples: int) -> None:
    if resolution < 8:
        raise ValueError(f"resolution={resolution}: use at least 8 pixels")
    if views < 1 or test_views < 0:
        raise ValueError(f"views={views}, test_views={test_views}: need views >= 1 and test_views >= 0")
    if not 1 <= objects <= len(SHAPES):
        raise ValueError(f"objects={objects}: choose 1 to {len(SHAPES)} ({', '.join(SHAPES)})")
    if samples < 1:
        raise ValueError(f"samples={samples}: use at least 1 sample per pixel")


def make_scene(out: Path, resolution: int = 128, views: int = 60, test_views: int = 10,
               objects: int = 5, seed: int = 0, samples: int = 16, ground: bool = False) -> Path:
    """Build, render and label a scene of `objects` primitives into `out` (on a floor, touching,
    with `ground`); return `out`.

    Blender's state is reset to an empty factory scene before and after.
    """
    _check_arguments(resolution, views, test_views, objects, samples)
    out = Path(out)
    start = time.perf_counter()
    bpy.ops.wm.read_factory_settings(use_empty=True)
    try:
        _make_scene(out, resolution, views, test_views, objects, seed, samples, ground)
    finally:
        bpy.ops.wm.read_factory_settings(use_empty=True)
    print(f"scene written to {out} in {time.perf_counter() - start:.1f} s")
    return out


def _make_scene(out: Path, resolution: int, views: int, test_views: int, objects: int,
                seed: int, samples: int, ground: bool) -> None:
    rng = np.random.default_rng(seed)
    scene = bpy.context.scene
    names = list(SHAPES)[:objects]
    objs = _add_objects(scene, names, rng, grounded=ground)
    # The cameras and the box frame the objects; the floor reaches past both, as in a room.
    framed, _, _ = _ground_truth(objs)
    if ground:
        objs.append(_add_ground(scene, len(objs) + 1))
        names.append("ground")
    _setup_lighting(scene)
    setup_render(scene, resolution, resolution, samples, seed)
    bpy.context.view_layer.update()

    vertices, faces, face_labels = _ground_truth(objs)
    lo, hi = framed.min(axis=0), framed.max(axis=0)
    target = Vector((lo + hi) / 2.0)
    aabb = [(lo - AABB_PADDING * (hi - lo)).tolist(), (hi + AABB_PADDING * (hi - lo)).tolist()]
    # Far enough that the sphere around the target holding every vertex fits in the view cone.
    reach = float(np.linalg.norm(framed - np.array(target), axis=1).max())
    radius = 1.05 * reach / math.sin(math.radians(FOV_DEG) / 2.0)

    bvh = BVHTree.FromPolygons(vertices.tolist(), faces.tolist(), all_triangles=True)
    cameras = {
        "train": [looking_at(p, target) for p in orbit(views, target, radius)],
        # Half a golden angle apart in azimuth, so no test camera sits on a train camera.
        "test": [looking_at(p, target) for p in orbit(test_views, target, radius, GOLDEN_ANGLE / 2.0)],
    }
    progress = tqdm(total=views + test_views, desc="rendering views", unit="view")

    def label_view(split: str, k: int, camera: bpy.types.Object) -> None:
        (out / "labels" / split).mkdir(parents=True, exist_ok=True)
        _write_label_png(out / "labels" / split / f"r_{k:03d}.png", _label_map(bvh, face_labels, camera, resolution))
        progress.update()

    render_views(scene, out, cameras, math.radians(FOV_DEG), aabb, label_view)
    progress.close()
    write_json(out / "labels.json", {str(i): name for i, name in enumerate(names, start=1)})
    _write_npz(out / "ground_truth.npz", vertices=vertices, faces=faces, face_labels=face_labels)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--resolution", type=int, default=128, help="image width and height")
    parser.add_argument("--views", type=int, default=60, help="training views")
    parser.add_argument("--test-views", type=int, default=10, help="held-out views")
    parser.add_argument("--objects", type=int, default=5, help=f"number of objects, 1 to {len(SHAPES)}")
    parser.add_argument("--seed", type=int, default=0, help="placement, colours and Cycles seed")
    parser.add_argument("--samples", type=int, default=16, help="Cycles samples per pixel")
    parser.add_argument("--ground", action="store_true",
                        help="objects on a floor larger than the scene box, one on another, the others touching")
    args = parser.parse_args(argv)
    try:
        make_scene(args.out, args.resolution, args.views, args.test_views, args.objects, args.seed,
                   args.samples, args.ground)
    except ValueError as error:
        parser.error(str(error))


if __name__ == "__main__":
    main(sys.argv[1:])
