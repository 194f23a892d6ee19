"""The feature field (SAN eq. 6 and 7): its own hash grid, an MLP after quadrature, frozen density.

It renders F(r) = MLP(sum_i w_i E(x_i)) with the radiance field's weights w_i held fixed, from
the few samples of each ray that carry the mass (top-k by weight: `quadrature_samples`).
Per-face features are MLP(E(x)) at the face centroids (eq. 7), stored as codes (`FaceCodes`).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..config import FeatureConfig
from ..geometry.camera import rays_for_pixels
from ..nerf.encoding import HashGrid, mlp
from ..nerf.field import NerfField, unit_cube
from ..nerf.occupancy import OccupancyGrid
from ..nerf.render import render_rays
from ..progress import Reporter
from .face_codes import FaceCodes


class FeatureField(nn.Module):
    """E(x), a hash grid over the scene, and the MLP head applied to it (after quadrature when rendering rays)."""

    def __init__(self, out_dim: int, config: FeatureConfig) -> None:
        super().__init__()
        self.grid = HashGrid(levels=config.levels, log2_table=config.log2_table, max_res=config.max_res)
        self.head = mlp(self.grid.output_dim, config.hidden, out_dim, 1)
        self.contract = config.contract

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """E(x) for points of the scene frame (N, 3). Rays that miss a bounded scene's box (background
        feature cells) carry zero weights at arbitrary points; clamping keeps their lookups in range."""
        return self.grid(unit_cube(x, self.contract).clamp(0, 1))

    def render(self, points: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """MLP after quadrature: points (R, K, 3), weights (R, K) -> (R, C)."""
        e = self.embed(points.reshape(-1, 3)).view(*weights.shape, -1)
        return self.head((weights[..., None] * e).sum(1))

    def at_points(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(x))


@torch.no_grad()
def quadrature_samples(field: NerfField, grid: OccupancyGrid, c2w: torch.Tensor, intrinsics: torch.Tensor,
                       view: torch.Tensor, row: torch.Tensor, col: torch.Tensor, k: int,
                       reporter: Reporter | None = None, chunk: int = 8192) -> tuple[torch.Tensor, torch.Tensor]:
    """The k heaviest quadrature samples (points, weights) of each ray of the frozen radiance field."""
    points, weights = [], []
    total = len(view)
    for i in range(0, total, chunk):
        origins, dirs = rays_for_pixels(c2w, intrinsics, view[i:i + chunk], row[i:i + chunk], col[i:i + chunk])
        out = render_rays(field, grid, origins, dirs, torch.ones(1, 3, device=origins.device))
        w, idx = out.weights.topk(k, dim=-1)
        points.append(torch.gather(out.points, 1, idx[..., None].expand(-1, -1, 3)))
        weights.append(w)
        if reporter is not None:
            reporter.progress("features", 0, 1, None, f"rendering quadrature samples {min(i + chunk, total)}/{total}")
    return torch.cat(points), torch.cat(weights)


@torch.no_grad()
def face_codes(model: FeatureField, centroids: np.ndarray, chunk: int = 1 << 16) -> FaceCodes:
    """The per-face features MLP(E(x)) at face centroids in the normalised frame, as codes."""
    dev = next(model.parameters()).device
    body, last = model.head[:-1], model.head[-1]
    codes, norms = [], []
    for i in range(0, len(centroids), chunk):
        code = body(model.embed(torch.from_numpy(centroids[i:i + chunk]).float().to(dev)))
        codes.append(code.cpu().numpy())
        norms.append(last(code).norm(dim=1).cpu().numpy())
    empty = np.zeros((0, last.in_features), np.float32)
    return FaceCodes(np.concatenate(codes).astype(np.float16) if codes else empty.astype(np.float16),
                     last.weight.detach().cpu().numpy().astype(np.float32),
                     last.bias.detach().cpu().numpy().astype(np.float32),
                     np.concatenate(norms).astype(np.float32) if norms else np.zeros(0, np.float32))


@torch.no_grad()
def background_feature(model: FeatureField) -> np.ndarray:
    """What the field renders where a ray carries no weight: MLP(0) (eq. 6 with all w_i = 0)."""
    dev = next(model.parameters()).device
    return model.head(torch.zeros(1, model.grid.output_dim, device=dev))[0].cpu().numpy()
