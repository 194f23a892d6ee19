"""Cameras to rays (OpenGL convention: a camera looks along -z with y up)."""

from __future__ import annotations

import torch


def pixel_rays(c2w: torch.Tensor, intrinsics: torch.Tensor, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rays through every pixel centre of one camera (OpenGL convention: looks along -z, y up).

    Returns origins and unit directions, each (H * W, 3), rows top to bottom."""
    fx, fy, cx, cy = intrinsics.tolist()
    j, i = torch.meshgrid(torch.arange(width, dtype=torch.float32, device=c2w.device) + 0.5,
                          torch.arange(height, dtype=torch.float32, device=c2w.device) + 0.5, indexing="xy")
    dirs = torch.stack([(j - cx) / fx, -(i - cy) / fy, -torch.ones_like(j)], -1).reshape(-1, 3)
    dirs = dirs @ c2w[:3, :3].T
    dirs = dirs / dirs.norm(dim=-1, keepdim=True)
    return c2w[:3, 3].expand_as(dirs).contiguous(), dirs


def rays_for_pixels(c2w: torch.Tensor, intrinsics: torch.Tensor, cam: torch.Tensor,
                    row: torch.Tensor, col: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rays through pixel centres (row, col) of cameras `cam` (batched, for training)."""
    fx, fy, cx, cy = intrinsics[cam].unbind(-1)
    d = torch.stack([(col + 0.5 - cx) / fx, -(row + 0.5 - cy) / fy, -torch.ones_like(fx)], -1)
    rot = c2w[cam, :3, :3]
    d = (rot @ d[..., None])[..., 0]
    return c2w[cam, :3, 3], d / d.norm(dim=-1, keepdim=True)
