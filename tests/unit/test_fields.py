"""Building blocks of the fields: hash encoding, compositing, occupancy carving, visibility, mesh cleanup."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from external_worker.nerf.encoding import HashGrid, TorchHashGrid, _Gather
from external_worker.mesh.extract import fill_cavities
from external_worker.nerf.field import NerfField, contract, uncontract
from external_worker.nerf.occupancy import OccupancyGrid
from external_worker.nerf import render
from external_worker.nerf.render import CONTRACTED_FAR, composite, importance_edges, render_rays, sample_points
from external_worker.config import NerfConfig
from external_worker.geometry.frame import SceneFrame, box_intersection
from external_worker.geometry.camera import pixel_rays
from external_worker.geometry.visibility import visible_faces


def look_at(eye, target=(0.0, 0.0, 0.0)) -> np.ndarray:
    """OpenGL camera-to-world looking from `eye` at `target` (z up)."""
    eye, target = np.asarray(eye, float), np.asarray(target, float)
    back = eye - target
    back /= np.linalg.norm(back)
    right = np.cross([0, 0, 1], back)
    if np.linalg.norm(right) < 1e-6:
        right = np.array([1.0, 0, 0])
    right /= np.linalg.norm(right)
    up = np.cross(back, right)
    c2w = np.eye(4, dtype=np.float32)
    c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = right, up, back, eye
    return c2w


def test_hash_grid_interpolates_linear_functions_exactly_on_dense_levels():
    grid = TorchHashGrid(levels=2, features=2, log2_table=16, base_res=4, max_res=8)
    assert grid.n_dense == grid.levels
    # Table value = x (feature 0) and y (feature 1) grid coordinates of the entry: trilinear
    # interpolation must return the grid position itself.
    with torch.no_grad():
        for level in range(grid.levels):
            r = int(grid.resolutions[level])
            idx = torch.arange(r**3)
            grid.params[grid.offsets[level] + idx, 0] = (idx % r).float()
            grid.params[grid.offsets[level] + idx, 1] = (idx // r % r).float()
    x = torch.rand(256, 3) * 0.8  # stay off the last cell, which wraps as it does in tiny-cuda-nn
    out = grid(x).view(256, grid.levels, 2)
    expected = x[:, None, :2] * grid.scales[None, :, None] + 0.5
    assert torch.allclose(out, expected, atol=1e-4)


def test_hash_grid_hashed_levels_match_the_spatial_hash():
    """A point on a grid vertex of a hashed level reads exactly the table entry instant-NGP's hash
    names: (x * 1 xor y * 2654435761 xor z * 805459861) mod 2^32 mod T."""
    grid = TorchHashGrid(levels=3, features=2, log2_table=10, base_res=8, max_res=64)
    assert grid.n_dense == 1
    level = 2
    with torch.no_grad():
        grid.params.normal_()
    vertex = torch.tensor([5, 17, 30])
    x = ((vertex.float() - 0.5) / grid.scales[level])[None]
    entry = int((5 * 1 ^ 17 * 2654435761 ^ 30 * 805459861) % 2**32 % int(grid.sizes[level]))
    out = grid(x).view(grid.levels, 2)
    assert torch.allclose(out[level], grid.params[int(grid.offsets[level]) + entry], atol=1e-4)


def test_hash_grid_refuses_other_feature_counts():
    with pytest.raises(ValueError, match="2 features"):
        TorchHashGrid(levels=2, features=4, log2_table=12, base_res=4, max_res=8)


def test_gather_backward_matches_embedding():
    table = torch.randn(50, 2, requires_grad=True)
    index = torch.randint(0, 50, (400,))
    grad = torch.randn(400, 2)
    _Gather.apply(table, index).backward(grad)
    ours = table.grad.clone()
    table.grad = None
    torch.nn.functional.embedding(index, table).backward(grad)
    assert torch.allclose(ours, table.grad, atol=1e-5)


def test_hash_grid_uses_pytorch_without_tinycudann_on_cpu():
    grid = HashGrid(levels=4, log2_table=12, max_res=64)
    assert not grid.uses_tcnn and isinstance(grid.impl, TorchHashGrid)
    assert grid(torch.rand(10, 3)).shape == (10, 8)


def test_compositing_weights():
    sigma = torch.tensor([[0.0, 0.0, 1e4, 1e4], [0.0, 0.0, 0.0, 0.0]])
    w = composite(sigma, torch.full((2, 1), 0.1))
    assert torch.allclose(w[0], torch.tensor([0.0, 0.0, 1.0, 0.0]), atol=1e-4)  # opaque at the first hit
    assert torch.all(w[1] == 0)


def test_importance_intervals_crowd_where_the_weight_is_and_cover_the_ray():
    edges = torch.linspace(0, 1, 11).expand(2, 11).contiguous()
    weights = torch.zeros(2, 10)
    weights[0, 6] = 1.0  # all of ray 0's weight in [0.6, 0.7]; ray 1 sees nothing
    for perturb in (False, True):
        fine = importance_edges(edges, weights, 32, perturb)
        assert fine.shape == (2, 33) and (fine.diff(dim=-1) >= 0).all()
        assert torch.all(fine[:, 0] == 0) and torch.all(fine[:, -1] == 1)
        mids = (fine[:, 1:] + fine[:, :-1]) / 2
        assert ((mids[0] > 0.6) & (mids[0] < 0.7)).sum() >= 28
        # No weight: evenly spread, no interval longer than two of the 33 strata of u.
        assert fine[1].diff().max() <= 2 / 33 + 1e-6


def test_bounded_samples_and_their_importance_resamples_stay_in_the_box():
    torch.manual_seed(0)
    origins = torch.randn(256, 3) * 3
    dirs = torch.nn.functional.normalize(-origins + torch.randn(256, 3) * 0.5, dim=-1)
    t, edges, valid = sample_points(origins, dirs, 32, perturb=True)
    points = origins[:, None] + t[..., None] * dirs[:, None]
    assert (points[valid].abs() <= 1 + 1e-5).all()
    assert ((edges[:, :-1] <= t) & (t <= edges[:, 1:])).all()  # each sample inside its stretch
    field = NerfField(NerfConfig(levels=4, log2_table=12, max_res=64, samples_per_ray=32))
    out = render_rays(field, OccupancyGrid(16), origins, dirs, torch.zeros(1, 3), perturb=True)
    hit = valid[:, 0]
    assert 50 < hit.sum() < 256 and (out.points[hit].abs() <= 1 + 1e-4).all()


class _SlabField(NerfField):
    """Analytic density: `inside` in the slab |x - 0.1| < half, `outside` elsewhere; colour by x."""

    def __init__(self, config: NerfConfig, inside: float, outside: float, half: float) -> None:
        super().__init__(config)
        self.inside, self.outside, self.half = inside, outside, half

    def density(self, x):
        return torch.where((x[:, 0] - 0.1).abs() < self.half, self.inside, self.outside)

    def forward(self, x, d):
        return self.density(x), torch.sigmoid(x[:, :1] * 3).expand(-1, 3)


def test_a_surface_ray_keeps_its_probe_samples_and_a_fuzzy_ray_is_resampled():
    """A ray through a thin dense slab has its weight in a few probe samples: the full pass must
    render exactly what a pass over all probe samples renders. A ray through fog has weight all
    along: it gets importance intervals, whose opacity must match the fog's analytic one."""
    origins, dirs = torch.tensor([[-3.0, 0.0, 0.0]]), torch.tensor([[1.0, 0.0, 0.0]])
    grid, bg = OccupancyGrid(16), torch.zeros(1, 3)
    surface = dict(inside=300.0, outside=0.0, half=0.02)
    config = NerfConfig(levels=4, log2_table=12, max_res=64, samples_per_ray=128, importance_samples=8)
    every = NerfConfig(levels=4, log2_table=12, max_res=64, samples_per_ray=128, importance_samples=128)
    out = render_rays(_SlabField(config, **surface), grid, origins, dirs, bg)
    reference = render_rays(_SlabField(every, **surface), grid, origins, dirs, bg)
    assert out.weights.shape == (1, 8) and 0.9 < out.opacity.item() <= 1
    assert torch.allclose(out.rgb, reference.rgb, atol=1e-6) and torch.allclose(out.depth, reference.depth, atol=1e-6)
    assert torch.allclose(out.weights[out.weights > 0], reference.weights[reference.weights > 0])

    fog = _SlabField(config, inside=0.5, outside=0.5, half=1.0)
    out = render_rays(fog, grid, origins, dirs, bg)
    assert out.weights.shape == (1, 8) and (out.weights > 0).all()
    assert abs(out.opacity.item() - (1 - np.exp(-0.5 * 2))) < 1e-4  # the box is 2 long


def test_the_probe_stops_a_ray_behind_opaque_content_and_renders_as_without_stopping(monkeypatch):
    """An opaque slab at x = 0.1 with fog behind it: the probe evaluates nothing in the stretches
    after the slab's, and the render is what probing every sample gives."""
    origins = torch.tensor([[-3.0, 0.0, 0.0], [-3.0, 0.5, 0.0]])
    dirs = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    config = NerfConfig(levels=4, log2_table=12, max_res=64, samples_per_ray=128, importance_samples=16)

    class Opaque(_SlabField):
        probed = 0

        def sigma(self, x):
            slab = (x[:, 0] - 0.1).abs() < 0.05
            return torch.where(slab, 500.0, torch.where(x[:, 0] > 0.1, 0.5, 0.0))

        def density(self, x):  # what the probe calls
            Opaque.probed += len(x)
            return self.sigma(x)

        def forward(self, x, d):
            return self.sigma(x), torch.sigmoid(x[:, :1] * 3).expand(-1, 3)

    field, grid, bg = Opaque(config, 0, 0, 0), OccupancyGrid(16), torch.zeros(1, 3)
    out = render_rays(field, grid, origins, dirs, bg)
    stopped, Opaque.probed = Opaque.probed, 0
    monkeypatch.setattr(render, "PROBE_SEGMENTS", 1)
    reference = render_rays(field, grid, origins, dirs, bg)
    assert Opaque.probed == 2 * 128  # every sample of both rays
    # x runs from -1 to 1 along the box in 4 stretches: the one after the slab (x > 0.5) is skipped.
    assert stopped == 2 * 3 * 32
    assert torch.allclose(out.rgb, reference.rgb, atol=1e-4) and torch.allclose(out.opacity, reference.opacity, atol=1e-4)


def test_the_distortion_loss_is_the_pairwise_spread_of_the_weights_and_grows_with_haze():
    t = torch.linspace(-0.9, 0.9, 16).expand(3, 16).contiguous()
    dt = torch.full_like(t, 1.8 / 15)
    weights = torch.zeros(3, 16)
    weights[0, 8] = 1.0             # one surface
    weights[1, 2:14] = 1.0 / 12     # haze spread along the ray
    weights[2] = torch.rand(16) / 16
    points = torch.stack([t, torch.zeros_like(t), torch.zeros_like(t)], -1)
    out = render.RenderOutput(rgb=torch.zeros(3, 3), opacity=weights.sum(1), depth=t[:, 0], weights=weights,
                              points=points, t=t, dt=dt)
    d = render.BOX_DIAGONAL
    pairwise = (weights[:, :, None] * weights[:, None] * (t[:, :, None] - t[:, None]).abs() / d).sum((1, 2))
    expected = (pairwise + (weights ** 2 * dt / d).sum(1) / 3).mean()
    assert torch.allclose(render.distortion_loss(out), expected, rtol=1e-5)
    single = [render.distortion_loss(render.RenderOutput(out.rgb[i:i + 1], out.opacity[i:i + 1], out.depth[i:i + 1],
                                                         weights[i:i + 1], points[i:i + 1], t[i:i + 1], dt[i:i + 1]))
              for i in range(2)]
    assert single[1] > 10 * single[0]  # the haze costs far more than the surface
    outside = points + torch.tensor([3.0, 0.0, 0.0])  # beyond the box (a contracted scene's far samples)
    assert render.distortion_loss(render.RenderOutput(out.rgb, out.opacity, out.depth, weights, outside, t, dt)) == 0


def test_rays_miss_the_box_and_an_empty_field_shows_the_background():
    origins = torch.tensor([[0.0, 0.0, 3.0], [0.0, 5.0, 3.0]])
    dirs = torch.tensor([[0.0, 0.0, -1.0], [0.0, 0.0, -1.0]])
    near, far = box_intersection(origins, dirs)
    assert torch.allclose(near[0], torch.tensor(2.0)) and torch.allclose(far[0], torch.tensor(4.0))
    assert far[1] <= near[1]
    field, grid = NerfField(NerfConfig(levels=4, log2_table=12, max_res=64, samples_per_ray=16)), OccupancyGrid(16)
    grid.occupied.zero_()
    out = render_rays(field, grid, origins, dirs, torch.tensor([[0.2, 0.4, 0.6]]))
    assert torch.allclose(out.rgb, torch.tensor([[0.2, 0.4, 0.6]] * 2)) and torch.all(out.opacity == 0)


def test_visual_hull_keeps_the_object_and_carves_the_background():
    """A sphere of radius 0.3 seen by six cameras: cells inside survive, far cells are carved."""
    cams = [look_at(e) for e in ([3, 0, 0], [-3, 0, 0], [0, 3, 0], [0, -3, 0], [0, 0.1, 3], [0, 0.1, -3])]
    c2w = torch.from_numpy(np.stack(cams))
    size, f = 64, 80.0
    intrinsics = torch.tensor([[f, f, size / 2, size / 2]] * len(cams))
    alphas = []
    for pose in c2w:
        o, d = pixel_rays(pose, intrinsics[0], size, size)
        t = -(o * d).sum(-1)  # closest approach to the origin
        miss = ((o + t[:, None] * d).norm(dim=-1) > 0.3).float()
        alphas.append((1 - miss).view(size, size))
    grid = OccupancyGrid(32)
    grid.carve(c2w, intrinsics, torch.stack(alphas))
    centers = grid.cell_centers(jitter=False)
    inside = centers.norm(dim=-1) < 0.25
    far = centers.norm(dim=-1) > 0.6
    assert grid.lookup(centers[inside]).all()
    assert not grid.lookup(centers[far]).any()


def test_occupancy_update_marks_dense_cells_within_the_hull_only():
    grid = OccupancyGrid(16)
    centers = grid.cell_centers(jitter=False)
    grid.hull = (centers[:, 0] < 0.5).view(grid.hull.shape)  # as if carved away beyond x = 0.5
    blob = lambda x: torch.where(x.norm(dim=-1) < 0.5, 100.0, 0.0)  # noqa: E731
    grid.update(blob, threshold=1.0, decay=0.8)
    occupied = grid.lookup(centers)
    assert occupied[(centers.norm(dim=-1) < 0.3) & (centers[:, 0] < 0.4)].all()
    assert not occupied[centers.norm(dim=-1) > 0.7].any()
    assert not occupied[centers[:, 0] > 0.5].any()  # dense there, but outside the hull
    # The field has moved the blob: every remembered density decays, refreshed (a quarter) or
    # not, so its old cells empty within a bounded number of updates.
    moved = lambda x: torch.where((x - torch.tensor([-0.6, 0.0, 0.0])).norm(dim=-1) < 0.3, 100.0, 0.0)  # noqa: E731
    before = grid.density.clone()
    grid.update(lambda x: torch.zeros(len(x)), threshold=1.0, decay=0.8, fraction=0.25)
    assert torch.allclose(grid.density, before * 0.8)
    for _ in range(24):  # 100 * 0.8^21 < 1
        grid.update(moved, threshold=1.0, decay=0.8, fraction=0.25)
    occupied = grid.lookup(centers)
    assert not occupied[(centers - torch.tensor([0.3, 0.0, 0.0])).norm(dim=-1) < 0.15].any()
    assert occupied[(centers - torch.tensor([-0.6, 0.0, 0.0])).norm(dim=-1) < 0.15].all()


def test_contraction_keeps_the_box_squeezes_the_rest_and_inverts():
    inside = torch.rand(100, 3) * 2 - 1
    assert torch.equal(contract(inside), inside)
    far = torch.randn(1000, 3) * torch.logspace(0.1, 3, 1000)[:, None]
    far = far[far.abs().amax(-1) > 1]
    squeezed = contract(far)
    assert (squeezed.abs().amax(-1) < 2).all() and (squeezed.abs().amax(-1) > 1).all()
    assert torch.allclose(uncontract(squeezed), far, rtol=1e-3)
    # Farther along a ray from the box is farther out in the shell: order is kept.
    ray = torch.tensor([1.0, 0.3, -0.2]) * torch.logspace(0, 3, 50)[:, None]
    assert (contract(ray).norm(dim=-1).diff() > 0).all()


def test_unbounded_rays_sample_the_box_densely_and_reach_far_away():
    origins = torch.tensor([[0.0, 0.0, 3.0], [0.0, 5.0, 3.0]])  # the second ray misses the box
    dirs = torch.tensor([[0.0, 0.0, -1.0], [0.0, 0.0, -1.0]])
    t, edges, valid = sample_points(origins, dirs, 64, perturb=True, contracted=True)
    dt = edges.diff(dim=1)
    assert (t.diff(dim=1) >= 0).all() and (dt >= 0).all()
    assert torch.equal(edges[:, :-1], t) and (edges[:, -1] == CONTRACTED_FAR).all()
    in_box = (t[0] > 2) & (t[0] < 4)
    assert in_box.sum() >= 48 and t[0].max() > 100  # most samples in the box, some far beyond
    assert valid[0].all() and valid[1].sum() == 16  # the miss keeps only its far samples...
    assert dt[1][~valid[1]].sum() == 0  # ...and its parked box samples span nothing
    field = NerfField(NerfConfig(levels=4, log2_table=12, max_res=64, samples_per_ray=64, contract=True))
    grid = OccupancyGrid(16, contracted=True)
    out = render_rays(field, grid, origins, dirs, torch.zeros(1, 3))
    assert out.rgb.shape == (2, 3) and torch.isfinite(out.rgb).all()
    # The occupancy grid covers all of space: its outermost cell centre, at 1.875 in the contracted
    # space, lies 1 / (2 - 1.875) = 8 box half-sizes out.
    assert grid.cell_centers(jitter=False).abs().amax(-1).max().item() == pytest.approx(8.0, rel=1e-3)


def test_visibility_sees_the_front_of_a_box_not_its_back():
    import trimesh

    box = trimesh.creation.box(extents=(1, 1, 1)).subdivide().subdivide()
    c2w = look_at([0, 0, 4])
    visible, pixel = visible_faces(box.triangles_center, box.face_normals, c2w,
                                   np.array([100.0, 100.0, 32, 32]), 64, 64, tolerance=0.05)
    top = box.face_normals[:, 2] > 0.9
    assert visible[top].all()
    assert not visible[box.face_normals[:, 2] < -0.9].any()
    assert (pixel[top] >= 0).all()


def test_fill_cavities_removes_hidden_pockets_only():
    density = np.zeros((20, 20, 20))
    density[5:15, 5:15, 5:15] = 100  # a solid cube ...
    density[8:12, 8:12, 8:12] = 0    # ... with a hidden pocket
    filled = fill_cavities(density, 10)
    assert (filled[8:12, 8:12, 8:12] > 10).all()
    assert (filled[:5] == 0).all()


def test_scene_frame_round_trip():
    frame = SceneFrame.from_aabb(np.array([[-1, 0, 2], [3, 1, 4]], np.float32))
    points = np.random.default_rng(0).uniform(-1, 3, (10, 3))
    assert np.abs(frame.normalise_points(frame.to_world(points)) - points).max() < 1e-5
    assert frame.scale == pytest.approx(2.0)


def test_cull_unseen_drops_hidden_inner_surfaces_and_keeps_the_outside_whole():
    import trimesh

    from external_worker.geometry.camera import Cameras
    from external_worker.mesh.extract import cull_unseen

    outer = trimesh.creation.box(extents=(1, 1, 1))
    for _ in range(5):  # faces smaller than a pixel, as marching cubes makes them
        outer = outer.subdivide()
    inner = trimesh.creation.icosphere(subdivisions=3, radius=0.3)
    mesh = trimesh.util.concatenate([outer, inner])
    eyes = ([3, 0, 0], [-3, 0, 0], [0, 3, 0], [0, -3, 0], [0, 0.1, 3], [0, 0.1, -3])
    cameras = Cameras(np.stack([look_at(e) for e in eyes]), np.array([[50.0, 50.0, 16, 16]] * 6), 32, 32)
    culled = cull_unseen(mesh, cameras, voxel=0.01)
    assert len(culled.faces) == len(outer.faces)
    assert np.abs(culled.vertices).max() == pytest.approx(0.5)  # only the box is left


def test_surface_depth_finds_an_opaque_slab_in_the_box_and_beyond_it_and_none_in_empty_space():
    """A camera at x = -3 looking along +x: a slab at x = 0.1 stands at depth 3.1 (never placed
    behind it, by at most one probe sample in front); in an unbounded scene a wall far past the
    box (x = 5) is found too; without content every pixel reads inf."""
    c2w = torch.from_numpy(look_at([-3, 0, 0], [0, 0, 0]))
    lens = torch.tensor([8.0, 8.0, 2.0, 2.0])  # 4 x 4 pixels, 28 degrees wide: every ray crosses the box
    config = NerfConfig(levels=4, log2_table=12, max_res=64, samples_per_ray=128)
    slab = render.surface_depth(_SlabField(config, inside=300.0, outside=0.0, half=0.03), OccupancyGrid(16),
                                c2w, lens, 4, 4)
    assert slab.shape == (4, 4) and ((slab >= 3.1 - 0.03) & (slab <= 3.1 + 0.03 + 2 / 96 * 2)).all()

    class Wall(_SlabField):
        def density(self, x):
            return torch.where(x[:, 0] > 5.0, 300.0, 0.0)

    unbounded = NerfConfig(levels=4, log2_table=12, max_res=64, samples_per_ray=128, contract=True)
    wall = render.surface_depth(Wall(unbounded, 0, 0, 0), OccupancyGrid(16, contracted=True), c2w, lens, 4, 4)
    # Far samples are log-spaced (32 of the 128): the sample past the wall, then its bin's far edge.
    step = (render.CONTRACTED_FAR / render.CONTRACTED_NEAR) ** (1 / 32)
    assert ((wall > 8.0) & (wall < 8.0 * step ** 2)).all()
    empty = render.surface_depth(_SlabField(config, inside=0.0, outside=0.0, half=0.03), OccupancyGrid(16),
                                 c2w, lens, 4, 4)
    assert torch.isinf(empty).all()


def test_an_occluder_hides_faces_behind_it_and_not_those_before_it():
    """The field's surface at depth 3.9 hides a plane at depth 4 from a camera at z = 4 (the
    mesh itself has nothing in front of it), and does not hide it at depth 4.5."""
    import trimesh

    plane = trimesh.creation.box(extents=(1, 1, 0.001)).subdivide().subdivide()
    top = plane.face_normals[:, 2] > 0.9
    c2w, lens = look_at([0, 0, 4]), np.array([100.0, 100.0, 32, 32])
    seen = visible_faces(plane.triangles_center, plane.face_normals, c2w, lens, 64, 64, tolerance=0.05)[0]
    hidden = visible_faces(plane.triangles_center, plane.face_normals, c2w, lens, 64, 64, tolerance=0.05,
                           occluder=np.full((64, 64), 3.9))[0]
    behind = visible_faces(plane.triangles_center, plane.face_normals, c2w, lens, 64, 64, tolerance=0.05,
                           occluder=np.full((64, 64), 4.5))[0]
    assert seen[top].all() and not hidden.any() and behind[top].all()


def test_culling_removes_what_the_field_hides_past_the_mesh_s_own_surfaces():
    """A blob under a floor that the mesh holds only in part (the rest lies past the box): seen
    through the gap by the mesh's own z-buffer, it is hidden by the field's floor."""
    import trimesh

    from external_worker.geometry.camera import Cameras
    from external_worker.mesh.extract import cull_unseen

    floor = trimesh.creation.box(extents=(0.6, 2, 0.01))
    floor.apply_translation([-0.7, 0, 0])  # covers x < -0.4 only
    blob = trimesh.creation.icosphere(subdivisions=3, radius=0.1)
    blob.apply_translation([0.5, 0, -0.5])  # under where the floor runs on, past the mesh
    for _ in range(4):
        floor = floor.subdivide()
    mesh = trimesh.util.concatenate([floor, blob])
    cameras = Cameras(np.stack([look_at([0.5, 0.1, 3], [0.5, 0.1, 0])]), np.array([[40.0, 40.0, 16, 16]]), 32, 32)
    def parts(culled: trimesh.Trimesh) -> tuple[int, int]:  # faces of the floor, of the blob
        low = culled.triangles_center[:, 2] < -0.2
        return int((~low).sum()), int(low.sum())

    floor_seen, blob_seen = parts(cull_unseen(mesh.copy(), cameras, voxel=0.01))
    assert floor_seen > 0 and blob_seen > 0  # through the gap, past the mesh's floor
    floor_depth = [np.full((32, 32), 3.0)]  # the field's floor at z = 0 runs under the whole view
    assert parts(cull_unseen(mesh.copy(), cameras, voxel=0.01, occluders=floor_depth)) == (floor_seen, 0)
