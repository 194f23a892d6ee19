"""The occupancy grid: which cells of the scene may hold content, to skip empty space."""

from __future__ import annotations

import math

import torch
from torch import nn

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
    def update(self, density_fn, threshold: float, decay: float, fraction: float = 1.0,
               chunk: int = 1 << 16) -> None:
        """Decay every cell's density by `decay`, then raise the hull's cells (the others can hold
        nothing) to the field's density at a random point in each, all of them or a random
        `fraction` (instant-NGP refreshes a subset once training has warmed up). Decaying every
        cell, refreshed or not, bounds how long a density the field has since dropped keeps a
        cell occupied: the noisy densities of the first steps would otherwise fill the space
        above a floor, which no mask carves, for thousands of steps."""
        cells = self.hull.view(-1).nonzero()[:, 0]
        if fraction < 1.0:
            cells = cells[torch.randperm(len(cells), device=cells.device)[:max(1, int(len(cells) * fraction))]]
        points = self.cell_centers(jitter=True, cells=cells)
        fresh = torch.cat([density_fn(points[i:i + chunk]) for i in range(0, len(points), chunk)])
        self.density.mul_(decay)
        density = self.density.view(-1)
        density[cells] = torch.maximum(density[cells], fresh)
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


# instant-NGP's finest march: sqrt(3)/1024 of its unit cube per step, 2 sqrt(3)/1024 of our box.
INSTANT_NGP_STEP = 2 * 3**0.5 / 1024


def occupancy_threshold() -> float:
    """Density under which a cell is empty: instant-NGP's, alpha < 0.01 over its finest step
    (about 3 here; a surface reads far more, the mesh's iso-level is 10). A lower threshold (one
    probe step's, 8x lower) kept the faint haze a floor invites in front of it occupied: 41% of
    the empty cells above the floor of a grounded scene at 150 steps, all evaluated by the probe."""
    return 0.01 / INSTANT_NGP_STEP
