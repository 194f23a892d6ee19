"""Texture bake: UV atlas (xatlas), texels rasterised in UV space, colour from the radiance field."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from PIL import Image

from external_worker import pipeline
from external_worker.mesh.bake import covered_texels, fill_empty
from external_worker.errors import WorkerError
from external_worker.progress import SilentReporter
from external_worker.workspace import Workspace
from external_worker.mesh.stored import load_mesh
from external_worker.workspace import Files


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


def test_bake_matches_the_vertex_colours_and_writes_a_png(baked):
    ws, bake = baked
    mesh = load_mesh(ws)
    assert bake.uv.shape == (len(mesh.faces), 3, 2) and bake.uv.min() >= 0 and bake.uv.max() <= 1
    assert bake.texture.shape == (512, 512, 3) and bake.texture.dtype == np.uint8
    # The texel under each face's centroid against the face's mean vertex colour.
    centre = bake.uv.mean(1)
    row = 511 - np.minimum((centre[:, 1] * 512).astype(int), 511)  # the top row is v = 1
    col = np.minimum((centre[:, 0] * 512).astype(int), 511)
    difference = np.abs(bake.texture[row, col] / 255 - mesh.vertex_colors[mesh.faces].mean(1))
    assert difference.mean() < 0.05
    png = np.asarray(Image.open(ws.path(Files.texture(512))))
    assert np.array_equal(png, bake.texture)  # both top row first


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
