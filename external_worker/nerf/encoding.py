"""Multiresolution hash encoding (instant-NGP, Mueller et al. 2022) and the small MLPs on top.

`HashGrid` uses tiny-cuda-nn when it imports and the input lives on a CUDA device; otherwise a
pure-PyTorch implementation of the same math (same level scales, same spatial hash, same
trilinear interpolation), so CPUs and GPUs without tcnn train the same model.
"""

from __future__ import annotations

import math

import torch
from torch import nn

try:  # tiny-cuda-nn builds from source with CUDA; it is optional.
    import tinycudann as tcnn
except Exception:  # noqa: BLE001 - any import failure means "not available"
    tcnn = None

# instant-NGP's hash primes; the first is 1 so coarse levels stay coherent in memory.
_PRIMES = (1, 2654435761, 805459861)
_CORNERS = torch.tensor([[(c >> 2) & 1, (c >> 1) & 1, c & 1] for c in range(8)], dtype=torch.long)


class _Gather(torch.autograd.Function):
    """rows = table[index] for a table of 2 features per entry, viewed as one complex number so
    the gather and its index_add_ backward move one element per lookup: about twice as fast on
    the CPU as two-column rows, and several times faster than embedding's sort-based backward."""

    @staticmethod
    def forward(ctx, table, index):  # type: ignore[override]
        ctx.save_for_backward(index)
        ctx.rows = table.shape[0]
        return torch.view_as_real(torch.view_as_complex(table).index_select(0, index))

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        (index,) = ctx.saved_tensors
        out = torch.zeros(ctx.rows, dtype=torch.complex64, device=grad.device)
        out.index_add_(0, index, torch.view_as_complex(grad.contiguous()))
        return torch.view_as_real(out), None


class TorchHashGrid(nn.Module):
    """Hash grid in plain PyTorch. Input: points in [0, 1]^3, shape (N, 3). Output (N, L * F)."""

    def __init__(self, levels: int, features: int, log2_table: int, base_res: int, max_res: int) -> None:
        super().__init__()
        if features != 2:
            raise ValueError(f"the PyTorch hash grid stores 2 features per level, not {features}")
        self.levels, self.features = levels, features
        growth = math.exp((math.log(max_res) - math.log(base_res)) / max(levels - 1, 1))
        # As in tcnn: scale = base * growth^l - 1, resolution = ceil(scale) + 1.
        scales = [base_res * growth**level - 1.0 for level in range(levels)]
        resolutions = [int(math.ceil(s)) + 1 for s in scales]
        table = 2**log2_table
        sizes = [min(r**3, table) for r in resolutions]
        offsets = [0]
        for size in sizes:
            offsets.append(offsets[-1] + size)
        self.register_buffer("scales", torch.tensor(scales, dtype=torch.float32), persistent=False)
        self.register_buffer("resolutions", torch.tensor(resolutions, dtype=torch.long), persistent=False)
        self.register_buffer("sizes", torch.tensor(sizes, dtype=torch.long), persistent=False)
        self.register_buffer("offsets", torch.tensor(offsets[:-1], dtype=torch.long), persistent=False)
        # Levels grow in resolution, so the dense ones (the whole grid fits the table) come first.
        self.n_dense = sum(r**3 <= table for r in resolutions)
        self.params = nn.Parameter(torch.empty(offsets[-1], features).uniform_(-1e-4, 1e-4))

    @property
    def output_dim(self) -> int:
        return self.levels * self.features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pos = x[:, None, :] * self.scales[None, :, None] + 0.5  # (N, L, 3)
        base = torch.floor(pos)
        frac = pos - base
        base = base.long()
        corner = torch.stack([base, base + 1], -1)  # (N, L, 3, 2): floor and floor + 1 per axis
        weight = torch.stack([1 - frac, frac], -1)
        # Per-axis terms, combined over the 8 corners by broadcasting (cheaper than 8 x 3 ops).
        # Coarse levels index a dense grid, the others the hash table; each is computed only
        # where it is used.
        ix, iy, iz = corner[:, :, 0, :, None, None], corner[:, :, 1, None, :, None], corner[:, :, 2, None, None, :]
        d = self.n_dense
        res = self.resolutions[None, :d, None, None, None]
        dense_index = ix[:, :d] + res * (iy[:, :d] + res * iz[:, :d])
        hashed = ((ix[:, d:] * _PRIMES[0]) ^ (iy[:, d:] * _PRIMES[1]) ^ (iz[:, d:] * _PRIMES[2])) & 0xFFFFFFFF
        hashed = hashed % self.sizes[None, d:, None, None, None]
        index = torch.cat([dense_index, hashed], 1) + self.offsets[None, :, None, None, None]  # (N, L, 2, 2, 2)
        w = weight[:, :, 0, :, None, None] * weight[:, :, 1, None, :, None] * weight[:, :, 2, None, None, :]
        values = _Gather.apply(self.params, index.view(-1)).view(x.shape[0] * self.levels, 8, self.features)
        out = torch.bmm(w.reshape(-1, 1, 8), values)  # trilinear interpolation per point and level
        return out.reshape(x.shape[0], self.levels * self.features)


class HashGrid(nn.Module):
    """Hash grid that runs on tiny-cuda-nn when available on the input's device."""

    def __init__(self, levels: int = 16, features: int = 2, log2_table: int = 19,
                 base_res: int = 16, max_res: int = 2048, use_tcnn: bool | None = None) -> None:
        super().__init__()
        self.config = dict(levels=levels, features=features, log2_table=log2_table, base_res=base_res, max_res=max_res)
        if use_tcnn is None:
            use_tcnn = tcnn is not None and torch.cuda.is_available()
        self.uses_tcnn = bool(use_tcnn)
        if self.uses_tcnn:
            growth = math.exp((math.log(max_res) - math.log(base_res)) / max(levels - 1, 1))
            self.impl = tcnn.Encoding(3, {
                "otype": "HashGrid", "n_levels": levels, "n_features_per_level": features,
                "log2_hashmap_size": log2_table, "base_resolution": base_res, "per_level_scale": growth,
            })
        else:
            self.impl = TorchHashGrid(levels, features, log2_table, base_res, max_res)
        self.output_dim = levels * features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.impl(x).float()


def mlp(in_dim: int, hidden: int, out_dim: int, layers: int) -> nn.Sequential:
    """ReLU MLP with `layers` hidden layers (instant-NGP uses width 64)."""
    dims = [in_dim] + [hidden] * layers
    modules: list[nn.Module] = []
    for a, b in zip(dims[:-1], dims[1:]):
        modules += [nn.Linear(a, b), nn.ReLU(inplace=True)]
    modules.append(nn.Linear(dims[-1], out_dim))
    return nn.Sequential(*modules)


def spherical_harmonics(d: torch.Tensor) -> torch.Tensor:
    """Real spherical harmonics up to degree 3 (16 values) of unit directions (N, 3)."""
    x, y, z = d.unbind(-1)
    xx, yy, zz = x * x, y * y, z * z
    return torch.stack([
        torch.full_like(x, 0.28209479177387814),
        -0.48860251190291987 * y, 0.48860251190291987 * z, -0.48860251190291987 * x,
        1.0925484305920792 * x * y, -1.0925484305920792 * y * z,
        0.94617469575755997 * zz - 0.31539156525251999,
        -1.0925484305920792 * x * z, 0.54627421529603959 * (xx - yy),
        0.59004358992664352 * y * (-3.0 * xx + yy), 2.8906114426405538 * x * y * z,
        0.45704579946446572 * y * (1.0 - 5.0 * zz), 0.3731763325901154 * z * (5.0 * zz - 3.0),
        0.45704579946446572 * x * (1.0 - 5.0 * zz), 1.4453057213202769 * z * (xx - yy),
        0.59004358992664352 * x * (-xx + 3.0 * yy),
    ], -1)
