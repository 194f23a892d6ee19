"""Volume rendering of the radiance field: samples along rays, compositing, importance resampling,
and whole camera views.

Rays of an unbounded scene (see `field`) run on past the box to CONTRACTED_FAR.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..geometry.camera import pixel_rays
from ..geometry.frame import box_intersection
from .field import NerfField
from .occupancy import OccupancyGrid

CONTRIBUTION_EPS = 1e-4  # samples whose quadrature weight would stay below this are not rendered
CONTRACTED_NEAR = 1e-2  # ray span of unbounded scenes, in units of the box's half-size
CONTRACTED_FAR = 1e3
CONTRACTED_FAR_SHARE = 4  # one sample in this many is spread over the whole ray, the rest in the box
BOX_DIAGONAL = 2 * 3 ** 0.5  # of [-1, 1]^3
PROBE_SEGMENTS = 4  # the probe marches each ray in this many stretches, front to back, and stops
# a ray once its transmittance is below CONTRIBUTION_EPS: nothing behind it could count (nerfacc's
# early stop). A floor or a wall in every view otherwise has the probe evaluate all the occluded
# space behind it.


@dataclass
class RenderOutput:
    rgb: torch.Tensor      # (R, 3)
    opacity: torch.Tensor  # (R,)
    depth: torch.Tensor    # (R,) expected distance along the ray, normalised frame
    weights: torch.Tensor  # (R, S) quadrature weights T_i * alpha_i
    points: torch.Tensor   # (R, S, 3) sample positions
    t: torch.Tensor        # (R, S) their distances along the ray, ascending
    dt: torch.Tensor       # (R, S) the width of the stretch each stands for
    evaluated: int = 0     # samples the full pass sent through the field (with gradients)


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


def probe_density(field: NerfField, grid: OccupancyGrid, origins: torch.Tensor, dirs: torch.Tensor,
                  t: torch.Tensor, dt: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Density (R, S) at the samples `t` that count (`valid`) and fall in occupied cells, marched
    in PROBE_SEGMENTS stretches: a ray whose transmittance has dropped below CONTRIBUTION_EPS
    is not evaluated further (its samples there read 0, as they weigh nothing)."""
    density = torch.zeros_like(t)
    optical_depth = torch.zeros(len(t), device=t.device)  # sum of sigma * dt so far
    stop = -torch.log(torch.tensor(CONTRIBUTION_EPS)).item()
    bounds = torch.linspace(0, t.shape[1], PROBE_SEGMENTS + 1).round().long().tolist()
    for start, end in zip(bounds[:-1], bounds[1:]):
        alive = (optical_depth < stop).nonzero()[:, 0]
        if len(alive) == 0:
            break
        points = origins[alive, None] + t[alive, start:end, None] * dirs[alive, None]
        keep = (grid.lookup(points.reshape(-1, 3)) & valid[alive, start:end].reshape(-1)).nonzero()[:, 0]
        if len(keep) == 0:
            continue
        segment = torch.zeros(len(alive) * (end - start), device=t.device)
        segment[keep] = field.density(points.reshape(-1, 3)[keep])
        segment = segment.view(len(alive), end - start)
        density[alive, start:end] = segment
        optical_depth[alive] += (segment * dt[alive, start:end]).sum(1)
    return density


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
        probe = probe_density(field, grid, origins, dirs, t, edges.diff(dim=-1), valid)
        probe_weights = composite(probe, edges.diff(dim=-1))
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
    return RenderOutput(rgb=color, opacity=opacity, depth=depth, weights=weights, points=points, t=t, dt=dt,
                        evaluated=len(idx))


def distortion_loss(out: RenderOutput) -> torch.Tensor:
    """mip-NeRF 360's distortion loss over the samples inside the box, in units of the box's
    diagonal: sum_ij w_i w_j |t_i - t_j| + 1/3 sum_i w_i^2 dt_i, by cumulative sums (O(S)).
    It is small when each ray's weight sits in one compact surface and grows with haze spread
    along it, the haze a floor in every view invites: floor-coloured density in front of the
    floor costs the photo loss almost nothing, but fills the occupancy grid (every probe sample
    there is evaluated) and the mesh."""
    inside = (out.points.abs().amax(-1) <= 1).to(out.weights.dtype)
    w = out.weights * inside
    t, dt = out.t / BOX_DIAGONAL, out.dt / BOX_DIAGONAL
    before = torch.cumsum(w, -1) - w
    moment_before = torch.cumsum(w * t, -1) - w * t
    spread = 2 * (w * (t * before - moment_before)).sum(-1)
    return (spread + (w ** 2 * dt).sum(-1) / 3).mean()


OPAQUE = 0.5  # accumulated opacity at which a ray has reached a surface


@torch.no_grad()
def surface_depth(field: NerfField, grid: OccupancyGrid, c2w: torch.Tensor, intrinsics: torch.Tensor,
                  height: int, width: int, chunk: int = 8192) -> torch.Tensor:
    """Depth along the view axis (H, W) of the first surface each pixel's ray meets, where its
    accumulated opacity passes OPAQUE: at the far edge of the probe sample that passes it, so a
    surface is never placed behind where it is. The surface may lie beyond the box (a floor
    running on into contracted space); inf where the ray stays transparent. Density only, from
    the probe, without the full pass."""
    origins, dirs = pixel_rays(c2w, intrinsics, height, width)
    distances = []
    for i in range(0, len(origins), chunk):
        o, d = origins[i:i + chunk], dirs[i:i + chunk]
        t, edges, valid = sample_points(o, d, field.config.samples_per_ray, False, field.config.contract)
        widths = edges.diff(dim=-1)
        opaque = torch.cumsum(composite(probe_density(field, grid, o, d, t, widths, valid), widths), -1) >= OPAQUE
        first = opaque.to(torch.uint8).argmax(1, keepdim=True)
        far_edge = edges.gather(1, first + 1)[:, 0]
        distances.append(torch.where(opaque.any(1), far_edge, torch.full_like(far_edge, float("inf"))))
    along_axis = dirs @ -c2w[:3, 2]  # a unit direction's share of the view axis
    return (torch.cat(distances) * along_axis).view(height, width)


@torch.no_grad()
def render_view(field: NerfField, grid: OccupancyGrid, c2w: torch.Tensor, intrinsics: torch.Tensor,
                height: int, width: int, background: float = 1.0, chunk: int = 2048) -> torch.Tensor:
    """Render one camera (normalised frame) to an (H, W, 3) image. Chunks of a few hundred thousand
    samples keep the hash grid's lookups in cache: 8192 rays a chunk rendered 1.7x slower."""
    origins, dirs = pixel_rays(c2w, intrinsics, height, width)
    bg = torch.full((1, 3), background, device=origins.device)
    rgb = [render_rays(field, grid, origins[i:i + chunk], dirs[i:i + chunk], bg).rgb
           for i in range(0, len(origins), chunk)]
    return torch.cat(rgb).view(height, width, 3)
