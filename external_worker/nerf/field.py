"""The radiance field: hash-grid NeRF, occupancy grid for empty-space skipping, volume rendering.

Bounded scenes live in the box [-1, 1]^3 of the scene frame. Unbounded ones (360-degree captures
of an object in a room or outdoors) keep the box for the object and squeeze all space beyond it
into a shell (mip-NeRF 360's contraction, with the max norm as in nerfstudio): the hash grid and
the occupancy grid then cover [-2, 2]^3 of the contracted space, and rays run to CONTRACTED_FAR.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from ..config import NerfConfig
from .encoding import HashGrid, mlp, spherical_harmonics
from ..geometry.frame import box_intersection


class _TruncExp(torch.autograd.Function):
    """exp with its gradient clamped, so large densities do not blow up early training."""

    @staticmethod
    def forward(ctx, x):  # type: ignore[override]
        ctx.save_for_backward(x)
        return torch.exp(x)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        (x,) = ctx.saved_tensors
        return grad * torch.exp(x.clamp(max=15))


def trunc_exp(x: torch.Tensor) -> torch.Tensor:
    return _TruncExp.apply(x)


CONTRIBUTION_EPS = 1e-4  # samples whose quadrature weight would stay below this are not rendered
CONTRACTED_NEAR = 1e-2  # ray span of unbounded scenes, in units of the box's half-size
CONTRACTED_FAR = 1e3
CONTRACTED_FAR_SHARE = 4  # one sample in this many is spread over the whole ray, the rest in the box


def contract(x: torch.Tensor) -> torch.Tensor:
    """The box [-1, 1]^3 as it is; a point at max-norm n > 1 goes to (2 - 1/n) x / n, inside [-2, 2]^3."""
    norm = x.abs().amax(-1, keepdim=True).clamp_min(1e-9)
    return torch.where(norm <= 1, x, (2 - 1 / norm) * x / norm)


def uncontract(y: torch.Tensor) -> torch.Tensor:
    """The inverse of `contract` (the edge of [-2, 2]^3, infinitely far, is pulled in slightly)."""
    norm = y.abs().amax(-1, keepdim=True).clamp(1e-9, 2 - 1e-4)
    return torch.where(norm <= 1, y, y / (norm * (2 - norm)))


def unit_cube(x: torch.Tensor, contracted: bool) -> torch.Tensor:
    """Points of the scene frame -> the [0, 1]^3 a hash grid covers."""
    return (contract(x) / 2 + 1) / 2 if contracted else (x + 1) / 2


class NerfField(nn.Module):
    """Density from a hash grid + 1-layer MLP; view-dependent colour from geometry features + SH."""

    def __init__(self, config: NerfConfig) -> None:
        super().__init__()
        self.config = config
        self.grid = HashGrid(levels=config.levels, log2_table=config.log2_table, max_res=config.max_res)
        self.density_net = mlp(self.grid.output_dim, config.hidden, 1 + config.geo_features, 1)
        self.color_net = mlp(config.geo_features + 16, config.hidden, 3, 2)

    def _geometry(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.density_net(self.grid(unit_cube(x, self.config.contract)))
        return trunc_exp(h[:, 0] - 1.0), h[:, 1:]

    def density(self, x: torch.Tensor) -> torch.Tensor:
        """Density at points of the normalised box (N, 3) -> (N,)."""
        return self._geometry(x)[0]

    def forward(self, x: torch.Tensor, d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        sigma, geo = self._geometry(x)
        rgb = torch.sigmoid(self.color_net(torch.cat([geo, spherical_harmonics(d)], -1)))
        return sigma, rgb


class OccupancyGrid(nn.Module):
    """Coarse grid of the max density seen in each cell (EMA), used to skip empty space. It spans
    the box, or with `contracted` the whole contracted space."""

    def __init__(self, resolution: int = 64, contracted: bool = False) -> None:
        super().__init__()
        self.resolution = resolution
        self.contracted = contracted
        self.register_buffer("density", torch.zeros((resolution,) * 3))
        self.register_buffer("occupied", torch.ones((resolution,) * 3, dtype=torch.bool))
        # Cells that may hold content at all (visual hull of the alpha masks when there are some).
        self.register_buffer("hull", torch.ones((resolution,) * 3, dtype=torch.bool))

    def cell_centers(self, jitter: bool, cells: torch.Tensor | None = None) -> torch.Tensor:
        """Centres (or random points, with `jitter`) of all cells, or of the flat indices `cells`,
        as points of the scene frame."""
        r = self.resolution
        if cells is None:
            cells = torch.arange(r**3, device=self.density.device)
        idx = torch.stack([cells // (r * r), cells // r % r, cells % r], -1).float()
        offset = torch.rand_like(idx) if jitter else torch.full_like(idx, 0.5)
        points = (idx + offset) / r * 2 - 1
        return uncontract(2 * points) if self.contracted else points

    @torch.no_grad()
    def update(self, density_fn, threshold: float, decay: float = 0.95, fraction: float = 1.0,
               chunk: int = 1 << 16) -> None:
        """Refresh the max density of the hull's cells (the others can hold nothing), all of them or a
        random `fraction` (instant-NGP refreshes a subset once training has warmed up)."""
        cells = self.hull.view(-1).nonzero()[:, 0]
        if fraction < 1.0:
            cells = cells[torch.randperm(len(cells), device=cells.device)[:max(1, int(len(cells) * fraction))]]
        points = self.cell_centers(jitter=True, cells=cells)
        fresh = torch.cat([density_fn(points[i:i + chunk]) for i in range(0, len(points), chunk)])
        density = self.density.view(-1)
        density[cells] = torch.maximum(density[cells] * decay, fresh)
        # instant-NGP's min(mean, threshold), the mean taken where content may be at all.
        mean = self.density[self.hull].mean().item() if self.hull.any() else 0.0
        self.occupied = self.hull & (self.density > min(mean, threshold))

    @torch.no_grad()
    def carve(self, c2w: torch.Tensor, intrinsics: torch.Tensor, alphas: torch.Tensor, empty_below: float = 0.05) -> None:
        """Visual hull: a cell seen by a camera where the (dilated) alpha mask is empty holds nothing.

        Object captures with masks (RGBA) lose most of their empty space before training starts,
        which is what makes CPU training affordable."""
        centers = self.cell_centers(jitter=False).to(c2w.device)
        half_diagonal = 3**0.5 / self.resolution
        keep = torch.ones(len(centers), dtype=torch.bool, device=c2w.device)
        height, width = alphas.shape[1:]
        for pose, (fx, fy, cx, cy), alpha in zip(c2w, intrinsics.tolist(), alphas):
            local = (centers - pose[:3, 3]) @ pose[:3, :3]
            depth = -local[:, 2]
            front = depth > 1e-3
            u = (fx * local[:, 0] / depth.clamp_min(1e-3) + cx).floor().long()
            v = (-fy * local[:, 1] / depth.clamp_min(1e-3) + cy).floor().long()
            inside = front & (u >= 0) & (u < width) & (v >= 0) & (v < height)
            # Dilate by the projected size of a cell so a partly covered cell is never carved.
            nearest = depth[front].min().item() if front.any() else 1.0
            radius = min(8, math.ceil(fx * half_diagonal / max(nearest, 1e-3)) + 1)
            mask = torch.nn.functional.max_pool2d(alpha[None, None], 2 * radius + 1, stride=1, padding=radius)[0, 0]
            seen_empty = torch.zeros_like(keep)
            seen_empty[inside] = mask[v[inside], u[inside]] < empty_below
            keep &= ~seen_empty
        self.hull = keep.view(self.hull.shape)
        self.occupied = self.hull.clone()

    def lookup(self, x: torch.Tensor) -> torch.Tensor:
        """Whether points (N, 3) of the scene frame fall into occupied cells."""
        idx = (unit_cube(x, self.contracted) * self.resolution).long().clamp(0, self.resolution - 1)
        return self.occupied[idx[:, 0], idx[:, 1], idx[:, 2]]


@dataclass
class RenderOutput:
    rgb: torch.Tensor      # (R, 3)
    opacity: torch.Tensor  # (R,)
    depth: torch.Tensor    # (R,) expected distance along the ray, normalised frame
    weights: torch.Tensor  # (R, S) quadrature weights T_i * alpha_i
    points: torch.Tensor   # (R, S, 3) sample positions


def sample_points(origins: torch.Tensor, dirs: torch.Tensor, n_samples: int, perturb: bool, contracted: bool = False
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Samples along each ray (stratified when `perturb`): one in each of n equal stretches of the
    box and, for an unbounded scene, one in CONTRACTED_FAR_SHARE spaced evenly in log distance out
    to CONTRACTED_FAR.

    Returns sorted distances t (R, S), the edges of the stretch each sample stands for (R, S + 1:
    sample i covers [edges[i], edges[i + 1]], inside the box for a bounded scene) and which samples
    count (R, S): those of rays that miss the box do not."""
    t_near, t_far = box_intersection(origins, dirs, near=1e-3)
    hit = t_far > t_near
    span = torch.where(hit, t_far - t_near, torch.zeros_like(t_near))
    n_far = n_samples // CONTRACTED_FAR_SHARE if contracted else 0
    n_box = n_samples - n_far

    def stratified(n: int) -> torch.Tensor:
        u = torch.arange(n, device=origins.device, dtype=origins.dtype).expand(len(origins), n)
        return (u + (torch.rand(len(origins), n, device=origins.device) if perturb else 0.5)) / n

    t = t_near[:, None] + span[:, None] * stratified(n_box)
    valid = hit[:, None].expand_as(t)
    if not contracted:
        steps = torch.arange(n_box + 1, device=origins.device, dtype=origins.dtype) / n_box
        return t, t_near[:, None] + span[:, None] * steps, valid
    # A ray that misses the box parks its box samples at the far end, where they span nothing.
    t = torch.where(valid, t, torch.full_like(t, CONTRACTED_FAR))
    t_out = CONTRACTED_NEAR * (CONTRACTED_FAR / CONTRACTED_NEAR) ** stratified(n_far)
    t, order = torch.sort(torch.cat([t, t_out], 1), dim=1)
    valid = torch.cat([valid, torch.ones_like(t_out, dtype=torch.bool)], 1).gather(1, order)
    return t, torch.cat([t, torch.full_like(t[:, :1], CONTRACTED_FAR)], 1), valid


def composite(sigma: torch.Tensor, dt: torch.Tensor) -> torch.Tensor:
    """Quadrature weights w_i = T_i (1 - exp(-sigma_i dt_i)) for dense (R, S) densities."""
    alpha = 1 - torch.exp(-sigma * dt)
    transmittance = torch.cumprod(torch.cat([torch.ones_like(alpha[:, :1]), 1 - alpha + 1e-10], -1), -1)[:, :-1]
    return alpha * transmittance


def importance_edges(edges: torch.Tensor, weights: torch.Tensor, n: int, perturb: bool,
                     padding: float = 1e-3) -> torch.Tensor:
    """n intervals drawn from the piecewise-constant distribution of `weights` (R, S) over the bins
    between `edges` (R, S + 1): the n + 1 sorted edges (R, n + 1) of the new intervals, which
    cover the same span and crowd where the weight is (inverse transform sampling, as NeRF's fine
    pass and mip-NeRF 360's proposal resampling). `padding` per bin keeps empty rays uniform."""
    pdf = weights + padding
    cdf = torch.cumsum(pdf / pdf.sum(-1, keepdim=True), -1)
    cdf = torch.cat([torch.zeros_like(cdf[:, :1]), cdf[:, :-1], torch.ones_like(cdf[:, :1])], -1)
    u = torch.arange(n + 1, device=edges.device, dtype=edges.dtype).expand(len(edges), n + 1)
    u = (u + (torch.rand_like(u) if perturb else 0.5)) / (n + 1)
    bin_ = torch.searchsorted(cdf, u.contiguous(), right=True).clamp(1, edges.shape[1] - 1) - 1
    c0, c1 = cdf.gather(1, bin_), cdf.gather(1, bin_ + 1)
    e0, e1 = edges.gather(1, bin_), edges.gather(1, bin_ + 1)
    fraction = ((u - c0) / (c1 - c0).clamp_min(1e-12)).clamp(0, 1)
    inner = e0 + fraction * (e1 - e0)
    # The new intervals span the probe's whole span, so a render sees all of the ray.
    return torch.cat([edges[:, :1], inner[:, 1:-1], edges[:, -1:]], -1)


def _probe_intervals(t: torch.Tensor, edges: torch.Tensor, weights: torch.Tensor, n: int
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The probe's own samples with weight, packed in order into n slots (R, n): distances, widths,
    and which slots hold one. Empty slots sit at the ray's far end with zero width. Rays with more
    than n such samples are cut short; the caller resamples those instead."""
    contributing = weights > CONTRIBUTION_EPS
    order = torch.sort((~contributing).to(torch.uint8), dim=1, stable=True).indices[:, :n]
    used = contributing.gather(1, order)
    t = torch.where(used, t.gather(1, order), edges[:, -1:])
    dt = torch.where(used, edges.diff(dim=-1).gather(1, order), torch.zeros_like(t))
    return t, dt, used


def _resampled_intervals(edges: torch.Tensor, weights: torch.Tensor, n: int, perturb: bool
                         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """n intervals drawn from the probe's weights (R, n): distances, widths, and which fall in a
    probe bin with weight (the others lie in empty space or behind opaque content)."""
    fine = importance_edges(edges, weights, n, perturb)
    t = (fine[:, 1:] + fine[:, :-1]) / 2
    bin_ = (torch.searchsorted(edges, t.contiguous(), right=True) - 1).clamp(0, weights.shape[1] - 1)
    return t, fine.diff(dim=-1), weights.gather(1, bin_) > CONTRIBUTION_EPS


def render_rays(field: NerfField, grid: OccupancyGrid, origins: torch.Tensor, dirs: torch.Tensor,
                background: torch.Tensor, perturb: bool = False, n_samples: int | None = None) -> RenderOutput:
    """Volume-render rays in the scene frame, in two passes of the same field.

    A density-only probe without gradients (`n_samples` per ray, default `samples_per_ray`; only
    those in occupied cells reach the field) gives each stretch of the ray its weight. The full
    pass, with colour and gradients, then runs on at most `importance_samples` per ray:
    - a ray whose weight sits in few probe samples (a surface) keeps those samples, and drops the
      rest, as nerfacc does: exact, and the common case on objects;
    - a ray whose weight is spread over more (semi-transparent or fuzzy content, early training)
      gets intervals drawn from the probe's weights instead (NeRF's fine pass; the field is its
      own proposal network)."""
    n_samples = n_samples or field.config.samples_per_ray
    n_full = field.config.importance_samples
    t, edges, valid = sample_points(origins, dirs, n_samples, perturb, field.config.contract)
    with torch.no_grad():
        probe_points = (origins[:, None] + t[..., None] * dirs[:, None]).reshape(-1, 3)
        keep = (grid.lookup(probe_points) & valid.reshape(-1)).nonzero()[:, 0]
        probe = torch.zeros(len(probe_points), device=t.device)
        if len(keep):
            probe = probe.index_put((keep,), field.density(probe_points[keep]))
        probe_weights = composite(probe.view(t.shape), edges.diff(dim=-1))
        if n_samples > n_full:
            few = ((probe_weights > CONTRIBUTION_EPS).sum(1) <= n_full)[:, None]
            kept, resampled = (_probe_intervals(t, edges, probe_weights, n_full),
                               _resampled_intervals(edges, probe_weights, n_full, perturb))
            t, dt, evaluate = (torch.where(few, a, b) for a, b in zip(kept, resampled))
        else:
            t, dt, evaluate = t, edges.diff(dim=-1), probe_weights > CONTRIBUTION_EPS
        idx = evaluate.reshape(-1).nonzero()[:, 0]
    points = origins[:, None] + t[..., None] * dirs[:, None]
    flat = points.reshape(-1, 3)
    sigma = torch.zeros(flat.shape[0], device=flat.device)
    rgb = torch.zeros(flat.shape[0], 3, device=flat.device)
    if len(idx):
        s, c = field(flat[idx], dirs[:, None].expand_as(points).reshape(-1, 3)[idx])
        sigma = sigma.index_put((idx,), s)
        rgb = rgb.index_put((idx,), c)
    weights = composite(sigma.view(t.shape), dt)
    opacity = weights.sum(-1)
    color = (weights[..., None] * rgb.view(*t.shape, 3)).sum(1) + (1 - opacity[:, None]) * background
    depth = (weights * t).sum(-1) + (1 - opacity) * t[:, -1]
    return RenderOutput(rgb=color, opacity=opacity, depth=depth, weights=weights, points=points)


def occupancy_threshold(config: NerfConfig) -> float:
    """Density under which a cell is empty: alpha < 0.01 over one step across the box."""
    step = 2 * 3**0.5 / config.samples_per_ray
    return 0.01 / step
