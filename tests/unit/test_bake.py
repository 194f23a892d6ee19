"""Texture bake: UV atlas (xatlas), texels rasterised in UV space, colour from the radiance field."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
import trimesh
from PIL import Image

from external_worker import __main__ as cli, pipeline
from external_worker.errors import WorkerError
from external_worker.geometry.frame import SceneFrame
from external_worker.mesh.bake import Bake, Triangles, covered_texels, fill_empty
from external_worker.mesh.stored import load_mesh
from external_worker.progress import SilentReporter
from external_worker.server.handlers import make_handlers
from external_worker.workspace import Files, Stages, Workspace


def test_two_triangles_over_the_square_cover_every_texel_once():
    uv = np.array([[[0, 0], [1, 0], [1, 1]], [[0, 0], [1, 1], [0, 1]]], np.float32)
    face, bary, texel = covered_texels(uv, 8)
    assert set(np.unique(texel)) == set(range(64))
    assert len(texel) <= 64 + 8  # only the texels centred on the shared diagonal are in both
    assert np.allclose(bary.sum(1), 1) and (bary >= -1e-5).all()
    row, col = texel // 8, texel % 8
    centre = np.stack([(col + 0.5) / 8, (row + 0.5) / 8], 1)
    assert np.allclose(np.einsum("tk,tkc->tc", bary, uv[face]), centre, atol=1e-5)  # row 0 is v = 0


def test_small_budget_batches_give_the_same_texels():
    uv = np.random.default_rng(0).random((50, 3, 2)).astype(np.float32)
    whole = covered_texels(uv, 32)
    batched = covered_texels(uv, 32, budget=37)
    for a, b in zip(whole, batched):
        assert np.allclose(a, b)


def test_gaps_take_the_nearest_chart_colour():
    image = np.zeros((4, 4, 3), np.float32)
    filled = np.zeros((4, 4), bool)
    image[0, 0], filled[0, 0] = (1, 0, 0), True
    image[3, 3], filled[3, 3] = (0, 0, 1), True
    out = fill_empty(image, filled)
    assert tuple(out[0, 1]) == (1, 0, 0) and tuple(out[3, 2]) == (0, 0, 1) and tuple(out[3, 3]) == (0, 0, 1)


@pytest.fixture(scope="module")
def baked(trained_workspace, tmp_path_factory):
    ws = Workspace(tmp_path_factory.mktemp("bake") / "ws")
    shutil.copytree(trained_workspace, ws.root)
    return ws, pipeline.run_bake(ws, 512, SilentReporter())


def centroid_colours(bake: Bake) -> np.ndarray:
    """The colour (F, 3) in [0, 1] of the texel under each face's centroid."""
    size = len(bake.texture)
    centre = bake.uv.mean(1)
    row = size - 1 - np.minimum((centre[:, 1] * size).astype(int), size - 1)  # the top row is v = 1
    col = np.minimum((centre[:, 0] * size).astype(int), size - 1)
    return bake.texture[row, col] / 255


def test_bake_matches_the_vertex_colours_and_writes_a_png(baked):
    ws, bake = baked
    mesh = load_mesh(ws)
    assert bake.uv.shape == (len(mesh.faces), 3, 2) and bake.uv.min() >= 0 and bake.uv.max() <= 1
    assert bake.texture.shape == (512, 512, 3) and bake.texture.dtype == np.uint8
    difference = np.abs(centroid_colours(bake) - mesh.vertex_colors[mesh.faces].mean(1))
    assert difference.mean() < 0.05
    png = np.asarray(Image.open(ws.path(Files.texture(512))))
    assert np.array_equal(png, bake.texture)  # both top row first


def test_a_part_of_the_mesh_baked_alone_matches_its_vertex_colours(baked):
    ws, whole = baked
    mesh = load_mesh(ws)
    part = mesh.faces[mesh.vertices[mesh.faces].mean(1)[:, 0] > mesh.vertices[:, 0].mean()]
    used, faces = np.unique(part, return_inverse=True)
    triangles = Triangles(mesh.vertices[used].astype(np.float32), faces.reshape(-1, 3).astype(np.int32))
    bake = pipeline.run_bake(ws, 512, SilentReporter(), triangles)
    assert bake.uv.shape == (len(part), 3, 2) and not np.array_equal(bake.texture, whole.texture)
    difference = np.abs(centroid_colours(bake) - mesh.vertex_colors[part].mean(1))
    assert difference.mean() < 0.05


def test_a_second_bake_is_read_back_and_bad_sizes_are_refused(baked):
    ws, bake = baked
    written = ws.path(Files.bake(512)).stat().st_mtime_ns
    again = pipeline.run_bake(ws, 512, SilentReporter())
    assert ws.path(Files.bake(512)).stat().st_mtime_ns == written
    assert np.array_equal(again.texture, bake.texture) and np.array_equal(again.uv, bake.uv)
    with pytest.raises(WorkerError, match="texture size 1000"):
        pipeline.run_bake(ws, 1000, SilentReporter())


def test_a_bake_stored_bottom_row_first_by_an_older_version_is_read_top_row_first(baked):
    ws, bake = baked
    ws.save_npz(Files.bake(512), uv=bake.uv, texture=bake.texture[::-1])  # as older versions stored it
    state = ws.load_state()
    state["stages"]["bake_512"].pop("rows")
    ws.save_state(state)
    assert np.array_equal(pipeline.run_bake(ws, 512, SilentReporter()).texture, bake.texture)


# --- one object's own triangles ------------------------------------------------------------

FRAME = SceneFrame(center=np.array([0.5, 0.0, 0.0]), scale=2.0)


class PositionColour(torch.nn.Module):
    """A radiance field whose colour is the normalised position, mapped from [-1, 1] to [0, 1]."""

    def __init__(self) -> None:
        super().__init__()
        self.device_probe = torch.nn.Parameter(torch.zeros(1))  # where surface_colours sends its points

    def forward(self, x: torch.Tensor, d: torch.Tensor) -> tuple[None, torch.Tensor]:
        return None, (x.clamp(-1, 1) + 1) / 2


@pytest.fixture
def field_workspace(tmp_path, monkeypatch) -> Workspace:
    """A workspace with a trained field (`PositionColour`) and no mesh: enough to bake given triangles."""
    ws = Workspace(tmp_path / "ws")
    ws.save_state({"version": 1, "dataset": {"path": str(tmp_path / "dataset")}, "frame": FRAME.to_dict(),
                   "stages": {Stages.NERF: {"done": True, "step": 7}}})
    monkeypatch.setattr(pipeline, "load_field", lambda workspace: (PositionColour(), None))
    return ws


def objects() -> tuple[Triangles, Triangles]:
    """Two objects' triangles in the world frame: a box and, beside it, an icosphere."""
    box = trimesh.creation.box(extents=(1.0, 0.6, 0.4))
    ball = trimesh.creation.icosphere(subdivisions=1, radius=0.5)
    ball.apply_translation((1.5, 0.2, 0.0))
    return tuple(Triangles(np.asarray(m.vertices, np.float32), np.asarray(m.faces, np.int32)) for m in (box, ball))


def test_each_object_is_baked_on_its_own_atlas_into_its_own_files(field_workspace):
    ws = field_workspace
    box, ball = objects()
    bakes = [pipeline.run_bake(ws, 512, SilentReporter(), triangles) for triangles in (box, ball)]
    for triangles, bake in zip((box, ball), bakes):
        assert bake.uv.shape == (len(triangles.faces), 3, 2) and bake.uv.min() >= 0 and bake.uv.max() <= 1
        assert bake.texture.shape == (512, 512, 3)
        # The texel under each face's centroid holds the field's colour there (linear: the corners' mean).
        expected = (FRAME.normalise_points(triangles.vertices[triangles.faces].mean(1)) + 1) / 2
        assert np.abs(centroid_colours(bake) - expected).max() < 0.01
        png = np.asarray(Image.open(ws.path(Files.texture(512, triangles.key))))
        assert np.array_equal(png, bake.texture)
    assert box.key != ball.key and not np.array_equal(bakes[0].texture, bakes[1].texture)
    assert not ws.path(Files.bake(512)).exists()  # the workspace's own mesh was neither needed nor baked

    written = ws.path(Files.bake(512, box.key)).stat().st_mtime_ns
    again = pipeline.run_bake(ws, 512, SilentReporter(), objects()[0])  # the same triangles, sent again
    assert ws.path(Files.bake(512, box.key)).stat().st_mtime_ns == written
    assert np.array_equal(again.uv, bakes[0].uv) and np.array_equal(again.texture, bakes[0].texture)
    ws.update_stage(Stages.NERF, step=8)  # trained further: the field changed, the bake is made again
    pipeline.run_bake(ws, 512, SilentReporter(), box)
    assert ws.path(Files.bake(512, box.key)).stat().st_mtime_ns != written


def test_the_bake_request_and_the_command_line_bake_an_object_s_triangles(field_workspace, tmp_path):
    ws = field_workspace
    box, _ = objects()
    result, arrays = make_handlers()["bake"]({"workspace": str(ws.root), "size": 512},
                                             {"vertices": box.vertices, "faces": box.faces}, SilentReporter())
    assert result["texture_path"] == str(ws.path(Files.texture(512, box.key)))
    assert arrays["uv"].shape == (len(box.faces), 3, 2)

    ply, out = tmp_path / "box.ply", tmp_path / "box.png"
    trimesh.Trimesh(box.vertices, box.faces, process=False).export(ply)
    assert cli.main(["bake", "--workspace", str(ws.root), "--size", "512", "--mesh", str(ply), "--out", str(out)]) == 0
    assert np.array_equal(np.asarray(Image.open(out)), arrays["texture"])  # the same triangles: the same bake


@pytest.mark.parametrize("name, vertices, faces, message", [
    ("faces", None, np.array([[0, 1, 8]], np.int32), "array 'faces' refers to vertex 8, but 'vertices' has 8 rows"),
    ("faces", None, np.array([[0, -1, 2]], np.int32), "array 'faces' refers to vertex -1"),
    ("faces", None, np.array([[0, 1, 2]], np.int64), "array 'faces' must be int32 of shape (F, 3)"),
    ("faces", None, np.array([[0, 1, 2, 3]], np.int32), "array 'faces' must be int32 of shape (F, 3)"),
    ("faces", None, np.zeros((0, 3), np.int32), "with at least one row, got int32 (0, 3)"),
    ("vertices", np.zeros((8, 2), np.float32), None, "array 'vertices' must be float32 of shape (V, 3)"),
    ("vertices", np.full((8, 3), np.nan, np.float32), None, "array 'vertices' holds NaN"),
])
def test_bad_triangles_are_refused_naming_the_array(name, vertices, faces, message, tmp_path):
    box, _ = objects()
    arrays = {"vertices": box.vertices if vertices is None else vertices, "faces": box.faces if faces is None else faces}
    with pytest.raises(WorkerError) as error:  # refused before the workspace is even looked at
        make_handlers()["bake"]({"workspace": str(tmp_path / "none")}, arrays, None)
    assert error.value.code == "bad_request" and message in error.value.message, error.value.message


def test_triangles_come_as_both_arrays(tmp_path):
    with pytest.raises(WorkerError, match="lacks the array 'vertices'"):
        make_handlers()["bake"]({"workspace": str(tmp_path / "none")}, {"faces": objects()[0].faces}, None)
