"""The CUDA path computes what the CPU path computes: the field, the probe and the full render,
and a training step. Skipped without a CUDA GPU (scripts/gpu_check.sh runs them where there is one)."""

from __future__ import annotations

import copy

import pytest
import torch

from external_worker.config import NerfConfig
from external_worker.nerf.field import NerfField
from external_worker.nerf.occupancy import OccupancyGrid
from external_worker.nerf.render import render_rays

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")
CONFIG = NerfConfig(levels=8, log2_table=14, max_res=128, samples_per_ray=64, importance_samples=16)


def _rays(count: int = 2048):
    generator = torch.Generator().manual_seed(0)
    origins = torch.randn(count, 3, generator=generator) * 0.2 + torch.tensor([0.0, 0.0, 3.0])
    dirs = torch.nn.functional.normalize(torch.randn(count, 3, generator=generator) * 0.3
                                         + torch.tensor([0.0, 0.0, -1.0]), dim=-1)
    return origins, dirs


def _pair():
    torch.manual_seed(0)
    cpu = NerfField(CONFIG)
    with torch.no_grad():
        for table in cpu.grid.parameters():
            table.uniform_(-1, 1)  # a field with content, not the near-empty initial one
    return cpu, copy.deepcopy(cpu).cuda()


def test_the_field_reads_the_same_density_and_colour_on_the_gpu():
    cpu, gpu = _pair()
    points = torch.rand(4096, 3) * 2 - 1
    dirs = torch.nn.functional.normalize(torch.randn(4096, 3), dim=-1)
    sigma_cpu, rgb_cpu = cpu(points, dirs)
    sigma_gpu, rgb_gpu = gpu(points.cuda(), dirs.cuda())
    assert torch.allclose(sigma_cpu, sigma_gpu.cpu(), rtol=1e-3, atol=1e-3)
    assert torch.allclose(rgb_cpu, rgb_gpu.cpu(), atol=1e-4)


def test_a_render_and_its_gradients_match_the_cpu_s():
    cpu, gpu = _pair()
    origins, dirs = _rays()
    background = torch.full((1, 3), 0.5)
    out_cpu = render_rays(cpu, OccupancyGrid(32), origins, dirs, background)
    out_gpu = render_rays(gpu, OccupancyGrid(32).cuda(), origins.cuda(), dirs.cuda(), background.cuda())
    assert torch.allclose(out_cpu.rgb, out_gpu.rgb.cpu(), atol=1e-3)
    assert torch.allclose(out_cpu.opacity, out_gpu.opacity.cpu(), atol=1e-3)
    out_cpu.rgb.sum().backward()
    out_gpu.rgb.sum().backward()
    grad_cpu, grad_gpu = cpu.color_net[0].weight.grad, gpu.color_net[0].weight.grad.cpu()
    assert torch.allclose(grad_cpu, grad_gpu, rtol=1e-2, atol=1e-3)


def test_the_occupancy_grid_updates_on_the_gpu():
    _, gpu = _pair()
    grid = OccupancyGrid(32).cuda()
    grid.update(gpu.density, threshold=0.5, decay=0.8)
    assert grid.occupied.device.type == "cuda" and 0 < grid.occupied.float().mean().item() < 1
