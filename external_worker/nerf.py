"""The radiance field: hash-grid NeRF, occupancy grid for empty-space skipping, volume rendering."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from .encoding import HashGrid, mlp, spherical_harmonics
from .rays import box_intersection


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


@dataclass
class NerfConfig:
    levels: int = 16
    log2_table: int = 17
    max_res: int = 512
    hidden: int = 64
    geo_features: int = 15
    samples_per_ray: int = 128


class NerfField(nn.Module):
    """Density from a hash grid + 1-layer MLP; view-dependent colour from geometry features + SH."""

    def __init__(self, config: NerfConfig) -> None:
        super().__init__()
        self.config = config
        self.grid = HashGrid(levels=config.levels, log2_table=config.log2_table, max_res=config.max_res)
        self.density_net = mlp(self.grid.output_dim, config.hidden, 1 + config.geo_features, 1)
        self.color_net = mlp(config.geo_features + 16, config.hidden, 3, 2)

    def _geometry(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.density_net(self.grid((x + 1) / 2))
        return trunc_exp(h[:, 0] - 1.0), h[:, 1:]

    def density(self, x: torch.Tensor) -> torch.Tensor:
        """Density at points of the normalised box (N, 3) -> (N,)."""
        return self._geometry(x)[0]

    def forward(self, x: torch.Tensor, d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        sigma, geo = self._geometry(x)
        rgb = torch.sigmoid(self.color_net(torch.cat([geo, spherical_harmonics(d)], -1)))
        return sigma, rgb


class OccupancyGrid(nn.Module):
    """Coarse grid of the max density seen in each cell (EMA), used to skip empty space."""

    def __init__(self, resolution: int = 64) -> None:
        super().__init__()
        self.resolution = resolution
        self.register_buffer("density", torch.zeros((resolution,) * 3))
        self.register_buffer("occupied", torch.ones((resolution,) * 3, dtype=torch.bool))
        # Cells that may hold content at all (visual hull of the alpha masks when there are some).
        self.register_buffer("hull", torch.ones((resolution,) * 3, dtype=torch.bool))

    def cell_centers(self, jitter: bool, cells: torch.Tensor | None = None) -> torch.Tensor:
        """Centres (or random points, with `jitter`) of all cells, or of the flat indices `cells`."""
        r = self.resolution
        if cells is None:
            cells = torch.arange(r**3, device=self.density.device)
        idx = torch.stack([cells // (r * r), cells // r % r, cells % r], -1).float()
        offset = torch.rand_like(idx) if jitter else torch.full_like(idx, 0.5)
        return (idx + offset) / r * 2 - 1

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
        """Whether points (N, 3) in [-1, 1]^3 fall into occupied cells."""
        idx = ((x + 1) / 2 * self.resolution).long().clamp(0, self.resolution - 1)
        return self.occupied[idx[:, 0], idx[:, 1], idx[:, 2]]


@dataclass
class RenderOutput:
    rgb: torch.Tensor      # (R, 3)
    opacity: torch.Tensor  # (R,)
    depth: torch.Tensor    # (R,) expected distance along the ray, normalised frame
    weights: torch.Tensor  # (R, S) quadrature weights T_i * alpha_i
    points: torch.Tensor   # (R, S, 3) sample positions


def sample_points(origins: torch.Tensor, dirs: torch.Tensor, n_samples: int, perturb: bool
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Evenly spaced samples (stratified when `perturb`) across each ray's span of the box.

    Returns distances (R, S), step lengths (R, 1) and whether the ray hits the box (R,)."""
    t_near, t_far = box_intersection(origins, dirs, near=1e-3)
    hit = t_far > t_near
    span = torch.where(hit, t_far - t_near, torch.zeros_like(t_near))
    u = torch.arange(n_samples, device=origins.device, dtype=origins.dtype)[None]
    u = u + (torch.rand(len(origins), n_samples, device=origins.device) if perturb else 0.5)
    t = t_near[:, None] + span[:, None] * u / n_samples
    return t, (span / n_samples)[:, None], hit


def composite(sigma: torch.Tensor, dt: torch.Tensor) -> torch.Tensor:
    """Quadrature weights w_i = T_i (1 - exp(-sigma_i dt_i)) for dense (R, S) densities."""
    alpha = 1 - torch.exp(-sigma * dt)
    transmittance = torch.cumprod(torch.cat([torch.ones_like(alpha[:, :1]), 1 - alpha + 1e-10], -1), -1)[:, :-1]
    return alpha * transmittance


def render_rays(field: NerfField, grid: OccupancyGrid, origins: torch.Tensor, dirs: torch.Tensor,
                background: torch.Tensor, perturb: bool = False) -> RenderOutput:
    """Volume-render rays in the normalised box; only samples in occupied cells reach the field."""
    n_samples = field.config.samples_per_ray
    t, dt, hit = sample_points(origins, dirs, n_samples, perturb)
    points = origins[:, None] + t[..., None] * dirs[:, None]
    flat = points.reshape(-1, 3)
    keep = grid.lookup(flat) & hit[:, None].expand_as(t).reshape(-1)
    sigma = torch.zeros(flat.shape[0], device=flat.device)
    rgb = torch.zeros(flat.shape[0], 3, device=flat.device)
    if keep.any():
        idx = keep.nonzero()[:, 0]
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
