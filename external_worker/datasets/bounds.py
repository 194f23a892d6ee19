"""Where the scene is: the one layout policy that decides, for every format, the box the fields
are normalised into and whether content lies beyond it (unbounded: the fields contract that space).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..errors import DatasetError
from ..geometry.camera import pixel_directions
from .views import Views

FORWARD_FACING_COS = math.cos(math.radians(45))  # every camera within 45 degrees of the mean view direction
AABB_HALF_SIZE_FACTOR = 0.45  # estimated scene box half-size, as a fraction of the camera distance
LLFF_FAR_PERCENTILE = 90.0  # a few far bounds of distant background would inflate the box
POINT_BOX_PERCENTILES = (1.0, 99.0)  # a few stray triangulated points would inflate the box
POINT_BOX_MARGIN = 0.1  # of the points' extent, on each side
MIN_POINTS_FOR_BOX = 8  # fewer sparse points say too little about the scene's extent
OPAQUE_ALPHA = 0.5  # a mask pixel above this shows content
BEYOND_BOX_SHARE = 0.01  # more of the opaque pixels than this seeing past the box: content lies beyond it
BEYOND_BOX_STRIDE = 4  # every 4th pixel in each direction is enough to tell


def scene_bounds(views: Views, mode: str) -> tuple[np.ndarray, bool]:
    """The scene box (2, 3) and whether the scene is unbounded:

    - a box the format gives is the box, with content beyond it only where the format says so
      (instant-ngp's aabb_scale > 1);
    - cameras that all look one way (forward-facing) see the whole scene: the box holds their
      view frustums between the depth bounds (LLFF), else the sparse points (COLMAP), else the
      estimate from the camera axes;
    - cameras around the subject (360 degrees): the box holds the point they look at, and photos
      without masks also show the background beyond it, which makes the scene unbounded;
    - masks (RGBA) that show content where a pixel's ray misses the box (a floor or a room that
      reaches past it, as in most real captures) make the scene unbounded whatever the box's
      origin: else that content would be painted onto the box's inside.

    `mode` (the wire's BOUNDS) "box" or "unbounded" overrides whether the scene is unbounded,
    never the box.
    """
    if views.box is not None:
        box, unbounded = views.box, views.unbounded_beyond_box
    elif forward_facing(views.c2w):
        box, unbounded = _box_around_what_is_seen(views), False
    else:
        box, unbounded = box_from_camera_axes(views.c2w, views.root), views.alphas is None
    if not unbounded and views.alphas is not None:
        unbounded = seen_beyond_box(views, box)
    if mode != "auto":
        unbounded = mode == "unbounded"
    return box, unbounded


def seen_beyond_box(views: Views, box: np.ndarray) -> bool:
    """Whether more than BEYOND_BOX_SHARE of the opaque mask pixels (a sparse sample of them) look
    along rays that miss `box` (2, 3) entirely."""
    height, width = views.alphas.shape[1:]
    v, u = np.mgrid[0:height:BEYOND_BOX_STRIDE, 0:width:BEYOND_BOX_STRIDE] + 0.5
    opaque = views.alphas[:, v.astype(int), u.astype(int)] > OPAQUE_ALPHA  # (N, h, w)
    if not opaque.any():
        return False
    directions = pixel_directions(views.intrinsics[:, None, None], u, v)  # (N, h, w, 3), camera frame
    directions = np.einsum("nij,nhwj->nhwi", views.c2w[:, :3, :3], directions)[opaque]
    origins = np.broadcast_to(views.c2w[:, None, None, :3, 3], opaque.shape + (3,))[opaque]
    with np.errstate(divide="ignore", invalid="ignore"):
        t0, t1 = (box[0] - origins) / directions, (box[1] - origins) / directions
    t0, t1 = np.nan_to_num(t0, nan=-np.inf), np.nan_to_num(t1, nan=np.inf)
    enter = np.minimum(t0, t1).max(-1)
    leave = np.maximum(t0, t1).min(-1)
    misses = leave <= np.maximum(enter, 0.0)
    return bool(misses.mean() > BEYOND_BOX_SHARE)


def forward_facing(c2w: np.ndarray) -> bool:
    """Whether all cameras look roughly the same way (LLFF's forward-facing captures)."""
    axes = -c2w[:, :3, 2] / np.linalg.norm(c2w[:, :3, 2], axis=1, keepdims=True)
    mean = axes.mean(0)
    norm = np.linalg.norm(mean)
    return bool(norm > 0 and (axes @ (mean / norm)).min() > FORWARD_FACING_COS)


def _box_around_what_is_seen(views: Views) -> np.ndarray:
    if views.near_far is not None:
        height, width = views.images.shape[1:3]
        return box_from_frustums(views.c2w, views.intrinsics, width, height, views.near_far)
    if views.points is not None and len(views.points) >= MIN_POINTS_FOR_BOX:
        return box_from_points(views.points)
    return box_from_camera_axes(views.c2w, views.root)


def box_from_camera_axes(c2w: np.ndarray, root: Path) -> np.ndarray:
    """Box for captures whose cameras look at the object (360 degree rigs, turntables).

    The centre is the point nearest (least squares) to all optical axes; the half-size is 0.45
    of the median camera distance to it, which holds NeRF-synthetic objects (cameras ~4 away,
    content within +-1.5). Forward-facing captures should give 'aabb' in the JSON instead.
    """
    origins = c2w[:, :3, 3]
    axes = -c2w[:, :3, 2] / np.linalg.norm(c2w[:, :3, 2], axis=1, keepdims=True)
    across = np.eye(3) - axes[:, :, None] * axes[:, None, :]  # projects out each axis direction
    # A tiny pull towards the cameras' centroid keeps the solve well-posed when all axes are parallel.
    pull = 1e-6 * len(c2w)
    centre = np.linalg.solve(across.sum(0) + pull * np.eye(3),
                             np.einsum("nij,nj->i", across, origins) + pull * origins.mean(0))
    half = AABB_HALF_SIZE_FACTOR * float(np.median(np.linalg.norm(origins - centre, axis=1)))
    if not half > 0:
        raise DatasetError(f"{root}: cannot estimate the scene box, all cameras sit at one point",
                           "Add \"aabb\": [[xmin, ymin, zmin], [xmax, ymax, zmax]] to the "
                           "transforms JSON.")
    return np.stack([centre - half, centre + half])


def box_from_frustums(c2w: np.ndarray, intrinsics: np.ndarray, width: int, height: int,
                      near_far: np.ndarray) -> np.ndarray:
    """Box around every camera's view frustum between the smallest near bound and the 90th
    percentile of the far bounds, so all content LLFF's bounds saw lies inside it."""
    near = float(near_far[:, 0].min())
    far = float(np.percentile(near_far[:, 1], LLFF_FAR_PERCENTILE))
    u = np.array([0.0, width, 0.0, width])
    v = np.array([0.0, 0.0, height, height])
    corners = pixel_directions(intrinsics[:, None], u, v)  # (N, 4, 3) image corners at depth 1
    rays = np.einsum("nij,nkj->nki", c2w[:, :3, :3], corners)
    points = np.concatenate([c2w[:, None, :3, 3] + rays * depth for depth in (near, far)], 1)
    return np.stack([points.reshape(-1, 3).min(0), points.reshape(-1, 3).max(0)])


def box_from_points(points: np.ndarray) -> np.ndarray:
    """Box around the sparse points, stray ones left out, with a margin."""
    low, high = np.percentile(points, POINT_BOX_PERCENTILES, axis=0)
    return np.stack([low - POINT_BOX_MARGIN * (high - low), high + POINT_BOX_MARGIN * (high - low)])
