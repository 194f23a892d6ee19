"""Imperfect teachers for measuring robustness on scenes with ground truth: label maps corrupted
per view the way a real 2D segmenter errs (SAM's masks, CLIP's argmax), so that a benchmark can
tell whether lifting many views into one 3D field averages the errors away.

Each view is corrupted on its own, from a generator seeded by (seed, view): the same seed gives
the same maps whatever views are asked for, and in any order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

UNLABELLED = 0
WARP_CELLS = 6  # the boundary warp's control grid per image side: bends a few pixels long, not speckle


@dataclass(frozen=True)
class Corruption:
    """How a segmenter errs in each view, each error with its own rate."""

    jitter: float = 0.0        # boundaries moved by a smooth random warp: its standard deviation, share of the smaller side
    missed: float = 0.0        # chance that an object is missed in a view: it takes the label around it
    merged: float = 0.0        # chance that an object is merged into an object it touches in a view
    blobs: float = 0.0         # stray blobs of a wrong label per view (Poisson mean)
    blob_radius: float = 0.05  # a blob's mean radius, as a share of the image's smaller side

    @classmethod
    def at_level(cls, level: float) -> "Corruption":
        """All four errors at once, scaled by `level` (0: the truth). Level 1 is a teacher whose
        maps score a mean 2D IoU of about 0.8 against the truth on the generated grounded scene
        at 128 px (`scripts/bench_quality.py` prints it)."""
        return cls(jitter=level / 128, missed=0.05 * level, merged=0.05 * level, blobs=1.0 * level)


def corrupt_label_map(labels: np.ndarray, corruption: Corruption, rng: np.random.Generator,
                      background: frozenset[int] = frozenset()) -> np.ndarray:
    """A copy of one (H, W) label map (0 = unlabelled) with the corruption's errors: objects
    missed or merged first, then the boundaries warped, then blobs painted on top. `background`
    ids (a floor, a wall) are never missed or merged into, but objects may be missed into them."""
    out = labels.copy()
    for label in np.unique(labels):
        if label == UNLABELLED or label in background:
            continue
        missed, merged = rng.random(2)
        # Read from the map as corrupted so far: two touching objects merge, they do not swap.
        if missed < corruption.missed:
            out[out == label] = _around(out, label, exclude=frozenset())
        elif merged < corruption.merged:
            neighbour = _around(out, label, exclude=background | {UNLABELLED})
            if neighbour != UNLABELLED:  # an object touching no other object cannot be merged
                out[out == label] = neighbour
    if corruption.jitter > 0:
        out = _warp(out, corruption.jitter * min(labels.shape), rng)
    present = np.unique(labels[labels != UNLABELLED])
    if len(present):
        for _ in range(rng.poisson(corruption.blobs)):
            out[_ellipse(labels.shape, corruption.blob_radius, rng)] = rng.choice(present)
    return out


def corrupt_label_maps(maps: np.ndarray, views: np.ndarray, corruption: Corruption, seed: int,
                       background: frozenset[int] = frozenset()) -> np.ndarray:
    """A copy of (N, H, W) label maps with the maps of `views` corrupted (view v by a generator
    seeded with (seed, v)); the others are left as they are."""
    out = maps.copy()
    for v in views:
        out[v] = corrupt_label_map(maps[v], corruption, np.random.default_rng((seed, int(v))), background)
    return out


def label_map_iou(predicted: np.ndarray, truth: np.ndarray) -> float:
    """Mean 2D IoU of label maps (N, H, W) against the true ones: over every (view, object) pair
    whose object is in the view's true map (an object missed there counts 0)."""
    scores = []
    for p, t in zip(predicted, truth):
        for label in np.unique(t[t != UNLABELLED]):
            a, b = p == label, t == label
            scores.append((a & b).sum() / (a | b).sum())
    return float(np.mean(scores)) if scores else float("nan")


def _around(labels: np.ndarray, label: int, exclude: frozenset[int]) -> int:
    """The most common label on the one-pixel ring around `label`'s pixels, leaving out
    `exclude` (UNLABELLED when nothing else is there)."""
    mask = labels == label
    ring = labels[ndimage.binary_dilation(mask) & ~mask]
    ring = ring[~np.isin(ring, list(exclude))]
    return int(np.bincount(ring).argmax()) if ring.size else UNLABELLED


def _warp(labels: np.ndarray, pixels: float, rng: np.random.Generator) -> np.ndarray:
    """The map resampled (nearest label) through a smooth random displacement of `pixels`
    standard deviation: every boundary moves, by different amounts along its length."""
    height, width = labels.shape
    zoom = (height / WARP_CELLS, width / WARP_CELLS)
    dy, dx = (ndimage.zoom(rng.normal(0, pixels, (WARP_CELLS, WARP_CELLS)), zoom, order=1)[:height, :width]
              for _ in range(2))
    rows = np.clip(np.round(np.arange(height)[:, None] + dy), 0, height - 1).astype(int)
    cols = np.clip(np.round(np.arange(width)[None, :] + dx), 0, width - 1).astype(int)
    return labels[rows, cols]


def _ellipse(shape: tuple[int, int], radius: float, rng: np.random.Generator) -> np.ndarray:
    """(H, W) mask of a randomly placed, sized and turned ellipse."""
    height, width = shape
    centre = rng.random(2) * (height, width)
    a, b = radius * min(shape) * rng.uniform(0.5, 1.5, 2)
    angle = rng.uniform(0, np.pi)
    y, x = np.mgrid[:height, :width] - centre[:, None, None]
    u, v = x * np.cos(angle) + y * np.sin(angle), -x * np.sin(angle) + y * np.cos(angle)
    return (u / a) ** 2 + (v / b) ** 2 <= 1
