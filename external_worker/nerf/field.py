"""The radiance field: density and view-dependent colour from a hash grid (instant-NGP).

Bounded scenes live in the box [-1, 1]^3 of the scene frame. Unbounded ones (360-degree captures
of an object in a room or outdoors) keep the box for the object and squeeze all space beyond it
into a shell (mip-NeRF 360's contraction, with the max norm as in nerfstudio): the hash grid and
the occupancy grid then cover [-2, 2]^3 of the contracted space.
"""

from __future__ import annotations

import torch
from torch import nn

from ..config import NerfConfig
from .encoding import HashGrid, mlp, spherical_harmonics


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


def contract(x: torch.Tensor) -> torch.Tensor:
    """The box [-1, 1]^3 as it is; a point at max-norm n > 1 goes to (2 - 1/n) x / n, inside [-2, 2]^3."""
    norm = x.abs().amax(-1, keepdim=True).clamp_min(1e-9)
    return torch.where(norm <= 1, x, (2 - 1 / norm) * x / norm)


def grid_resolution(box_resolution: int, contracted: bool) -> int:
    """The finest resolution of a hash grid whose box is to get `box_resolution` cells a side:
    contraction squeezes the box into half of the grid's extent on each axis, so the grid needs
    twice as many (else an unbounded scene's objects and contacts get half the detail)."""
    return 2 * box_resolution if contracted else box_resolution


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
