"""The occupancy grid: which cells of the scene may hold content, to skip empty space."""

from __future__ import annotations

import math

import torch
from torch import nn

from ..config import NerfConfig
from ..geometry.camera import project
from .field import uncontract, unit_cube


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
        for pose, lens, alpha in zip(c2w, intrinsics, alphas):
            u, v, depth = project(centers, pose, lens)
            front = depth > 1e-3
            u, v = u.floor().long(), v.floor().long()
            inside = front & (u >= 0) & (u < width) & (v >= 0) & (v < height)
            # Dilate by the projected size of a cell so a partly covered cell is never carved.
            nearest = depth[front].min().item() if front.any() else 1.0
            radius = min(8, math.ceil(float(lens[0]) * half_diagonal / max(nearest, 1e-3)) + 1)
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


def occupancy_threshold(config: NerfConfig) -> float:
    """Density under which a cell is empty: alpha < 0.01 over one step across the box."""
    step = 2 * 3**0.5 / config.samples_per_ray
    return 0.01 / step
