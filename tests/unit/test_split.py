"""Separate All on small made-up meshes: parts (specks, the background), closing each object with a
fill that follows its surface, filling the background's holes but never its outer rim, and the
files written."""

from __future__ import annotations

import json

import numpy as np
import pytest
import trimesh

from blender_dff.wire.api import BACKGROUND_PART
from external_worker.mesh.extract import Mesh
from external_worker.parts.assign import Partition, Surface, finish
from external_worker.parts.export import write_objects
from external_worker.parts.fair import fair
from external_worker.parts.fill import fill_loops
from external_worker.parts.islands import merge_islands
from external_worker.parts.loops import fan, simple_cycles
from external_worker.parts.rim import rim_keys, spans_box, wall_contact
from external_worker.parts.split import split_mesh
from external_worker.mesh.topology import edge_keys, face_keys, face_pairs, open_edges
from external_worker.progress import SilentReporter
from external_worker.queries.faces import Geometry
from external_worker.workspace import Confinement

NO_RIM = np.zeros(0, np.int64)


def grid(n: int = 24, height: float = 0.0, raised: tuple[int, int] = (0, -1)) -> tuple[np.ndarray, np.ndarray]:
    """A floor over the box [-1, 1]^2 (z = 0) of n x n cells, facing up, with the vertices whose
    row and column both lie in `raised` (first, last) lifted to `height`: a block standing on it."""
    axis = np.linspace(-1, 1, n + 1)
    x, y = np.meshgrid(axis, axis, indexing="ij")
    lifted = np.zeros((n + 1, n + 1), bool)
    lifted[raised[0]:raised[1] + 1, raised[0]:raised[1] + 1] = True
    vertices = np.stack([x.ravel(), y.ravel(), np.where(lifted, height, 0.0).ravel()], 1)
    i, j = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    a, b, c, d = (i * (n + 1) + j).ravel(), ((i + 1) * (n + 1) + j).ravel(), ((i + 1) * (n + 1) + j + 1).ravel(), \
        (i * (n + 1) + j + 1).ravel()
    return vertices, np.concatenate([np.stack([a, b, c], 1), np.stack([a, c, d], 1)])


def block_on_floor() -> tuple[Mesh, np.ndarray]:
    """One connected surface: a floor reaching the box's walls and a block standing on it; each
    face's part (0: the block, its top and sides; 1: the floor)."""
    vertices, faces = grid(24, 0.5, (8, 16))
    on_block = vertices[faces][:, :, 2].max(1) > 0
    colours = np.where(vertices[:, 2:] > 0, [0.9, 0.1, 0.1], [0.1, 0.1, 0.9])
    return Mesh(vertices.astype(np.float32), faces.astype(np.int32), colours.astype(np.float32)), np.where(on_block, 0, 1)


def surface_of(mesh: Mesh) -> Surface:
    tm = trimesh.Trimesh(mesh.vertices, mesh.faces, process=False)
    return Surface(Geometry.of(mesh.vertices, mesh.faces), face_pairs(mesh.faces), tm.area_faces,
                   wall_contact(mesh.vertices, 1e-6))


def test_the_part_that_reaches_across_the_box_is_the_background_and_every_face_is_in_one_part():
    mesh, part = block_on_floor()
    surface = surface_of(mesh)
    assert spans_box(mesh.faces[part == 1], surface.walls) and not spans_box(mesh.faces[part == 0], surface.walls)
    partition = finish(surface, part, ["block", "floor", "nothing"])
    assert partition.names == ["block", BACKGROUND_PART]  # the empty part dropped, the floor the background
    assert partition.face_part.shape == (len(mesh.faces),) and partition.face_part.dtype == np.int32
    assert np.array_equal(partition.face_part, part)
    named = finish(surface, np.where(part == 0, 0, -1), ["Background"])  # named so, and faces no part holds
    assert named.names == [BACKGROUND_PART] and (named.face_part == 0).all()
    unnamed = finish(surface, part, None)  # parts found by clicks are numbered after the background goes
    assert unnamed.names == ["object 1", BACKGROUND_PART]


def test_specks_join_their_surroundings_but_a_small_piece_of_a_big_part_stays():
    vertices, faces = grid(80)
    area = trimesh.Trimesh(vertices, faces, process=False).area_faces
    centres = vertices[faces].mean(1)
    part = np.zeros(len(faces), int)
    ring = (np.abs(centres[:, :2]).max(1) < 0.45) & (np.abs(centres[:, :2]).max(1) > 0.25)
    part[ring] = 1  # a square ring of another part, the floor inside it a small piece of the floor
    speck = np.flatnonzero(np.linalg.norm(centres[:, :2] - [0.8, 0.8], axis=1) < 0.03)
    part[speck] = 1  # a speck of the ring's part on the floor
    part[np.flatnonzero(np.linalg.norm(centres[:, :2] - [0.35, 0.35], axis=1) < 0.03)] = 0  # a speck in the ring
    alone = np.flatnonzero(np.linalg.norm(centres[:, :2] - [-0.8, 0.8], axis=1) < 0.03)
    part[alone] = 2  # a part that is nothing but a speck: small, yet all there is of it
    merged = merge_islands(part, face_pairs(faces), area)
    assert area[speck].sum() < 0.001 * area.sum() and (merged[speck] == 0).all() and (merged[alone] == 2).all()
    assert (merged[ring] == 1).all()
    inside = np.abs(centres[:, :2]).max(1) < 0.25
    assert (merged[inside] == 0).all() and area[inside].sum() < 0.1 * area[merged == 0].sum()


def test_a_closed_object_is_watertight_and_its_fill_follows_the_surface():
    """A ball cut at its equator is closed by a dome, not by a flat disc in the cut's plane."""
    ball = trimesh.creation.icosphere(4)
    vertices = np.asarray(ball.vertices)
    faces = np.asarray(ball.faces)[ball.triangles_center[:, 2] > 0]
    patches = fill_loops(vertices, faces, NO_RIM)
    both = np.concatenate([vertices, patches.vertices])
    together = np.concatenate([faces, patches.faces])
    free = len(vertices) + np.arange(len(patches.vertices))
    assert np.abs(both[free, 2]).max() < 0.05  # MeshFix's own fill: flat
    both[free] = fair(both, together, free)
    closed = trimesh.Trimesh(both, together, process=False)
    assert closed.is_watertight and closed.is_winding_consistent and closed.volume > 0
    assert both[free, 2].min() < -0.3  # a dome below the cut: the fill left the plane with the sphere's slope
    assert not np.isin(face_keys(patches.faces), face_keys(faces)).any()  # the part's own faces are not added again


def test_loops_touching_at_a_vertex_are_closed_too():
    """Two squares meeting at one corner: a single boundary walk passes that vertex twice. Split
    into simple cycles, a fan closes each (what MeshFix leaves open is closed so); so does MeshFix."""
    vertices, faces = grid(4)
    centres = vertices[faces].mean(1)
    faces = faces[((centres[:, 0] < 0) & (centres[:, 1] < 0)) | ((centres[:, 0] > 0) & (centres[:, 1] > 0))]
    edges = open_edges(faces)
    cycles = simple_cycles(edges)
    assert sorted(len(cycle) for cycle in cycles) == [8, 8]
    centres, fans = fan(edges, cycles, vertices)
    assert len(centres) == 2
    patches = fill_loops(vertices, faces, NO_RIM)
    for new, added in ((centres, fans), (patches.vertices, patches.faces)):
        closed = trimesh.Trimesh(np.concatenate([vertices, new]), np.concatenate([faces, added]), process=False)
        assert closed.is_watertight and closed.is_winding_consistent


def test_the_background_s_holes_are_filled_flat_and_its_outer_rim_is_left_open():
    mesh, part = block_on_floor()
    partition = Partition(["block", BACKGROUND_PART], part.astype(np.int32))
    rim = rim_keys(mesh.faces, wall_contact(mesh.vertices, 1e-6))
    assert np.array_equal(rim, np.unique(edge_keys(open_edges(mesh.faces))))  # every open edge lies on a wall
    split = split_mesh(mesh, partition, rim, close=True, fill_holes=True, reporter=SilentReporter())
    assert split.closed == [True, False]
    n = len(mesh.vertices)
    assert split.patch_faces.min() >= 0 and split.patch_faces.max() < n + len(split.patch_vertices)
    assert split.patch_vertices.dtype == np.float32 and split.patch_colors.dtype == np.uint8
    assert split.patch_faces.dtype == np.int32 and split.patch_part.dtype == np.int32
    assert set(np.unique(split.patch_part)) == {0, 1}
    floor = np.concatenate([mesh.faces[part == 1], split.patch_faces[split.patch_part == 1]])
    assert np.array_equal(np.unique(edge_keys(open_edges(floor))), rim)  # the hole closed, the rim open
    new = np.unique(split.patch_faces[split.patch_part == 1])
    new = new[new >= n] - n
    assert len(new) and np.abs(split.patch_vertices[new, 2]).max() < 1e-3  # on the floor's plane
    assert (split.patch_colors[new, 2] > 200).all()  # coloured like the floor around the hole
    block = np.concatenate([mesh.faces[part == 0], split.patch_faces[split.patch_part == 0]])
    assert trimesh.Trimesh(np.concatenate([mesh.vertices, split.patch_vertices]), block, process=False).is_watertight
    bare = split_mesh(mesh, partition, rim, close=False, fill_holes=False, reporter=SilentReporter())
    assert len(bare.patch_faces) == 0 and bare.closed == [False, False]


def test_each_object_is_written_as_a_ply_with_a_safe_name_and_listed(tmp_path):
    mesh, part = block_on_floor()
    rim = rim_keys(mesh.faces, wall_contact(mesh.vertices, 1e-6))
    split = split_mesh(mesh, Partition(["../a block", BACKGROUND_PART], part.astype(np.int32)), rim, True, True,
                       SilentReporter())
    listing = write_objects(tmp_path / "out", mesh, split, Confinement(tmp_path))
    written = json.loads((tmp_path / "out" / "objects.json").read_text())
    assert written == listing and [entry["file"] for entry in written] == ["a_block.ply", "background.ply"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a_block.ply", "background.ply", "objects.json"]
    block = trimesh.load(tmp_path / "out" / "a_block.ply", process=False)
    assert block.is_watertight and written[0]["closed"] and not written[1]["closed"]
    assert len(block.faces) == written[0]["faces"] + written[0]["fill_faces"] and written[0]["faces"] == (part == 0).sum()
    assert block.visual.vertex_colors.shape[0] == len(block.vertices)
    assert written[0]["area"] == pytest.approx(block.area)
