"""A decomposition without clicks, for a teacher that only answers clicks (SAM): the split
clicks for itself. It takes the largest region of faces no part holds yet, clicks its most
interior face from the training camera that sees it most squarely, and the faces the click
selects (carried to other training views, as a user's click is) that no part holds become a
new part. A selection that covers FOUND_AGAIN of an earlier part found that object again (a
click on what earlier masks left of an object, or on its other side): what it adds joins that
part, and parts it finds again together are one object, merged; until what is left is small,
or there are MAX_PARTS parts.

The decoder is a parameter: SAM's on its rendered features, or an ideal segmenter reading the
labels teacher's (teachers.oracles.LabelOracle) to measure the 3D part alone."""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

from ..progress import Reporter
from ..queries.click import ClickPrompt, ViewRenderer, sam_click
from ..mesh.topology import components

MAX_PARTS = 32
MAX_CLICKS = 2 * MAX_PARTS  # a click that selects nothing new still counts
LEFT_SHARE = 0.02  # of the mesh's area: what no part holds may stay background
MIN_PART_SHARE = 0.001  # of the mesh's area: a smaller selection, or region, is no object
FOUND_AGAIN = 0.25  # of a part's area: a selection covering that much of it found the same object
CAMERAS_TRIED = 8  # the cameras facing the clicked face most squarely, tried in turn for a clear view


def self_prompted_parts(renderer: ViewRenderer, decoder, pairs: np.ndarray, area: np.ndarray, eyes: np.ndarray,
                        views: int, reporter: Reporter) -> np.ndarray:
    """(F,) part of each face (-1: none) from clicks the split makes itself. `pairs`: faces
    sharing an edge (topology.face_pairs); `eyes` (N, 3): the training cameras' positions."""
    g = renderer.geometry
    part = np.full(len(area), -1)
    given_up = np.zeros(len(area), bool)  # around clicks that found nothing new: not clicked again
    parts = 0
    for click in range(MAX_CLICKS):
        left = (part < 0) & ~given_up
        if parts >= MAX_PARTS or area[left].sum() < LEFT_SHARE * area.sum():
            break
        reporter.progress("split", click, MAX_CLICKS, message=f"{parts} objects found: clicking")
        region = _largest_region(left, pairs, area)
        if area[region].sum() < MIN_PART_SHARE * area.sum():
            break
        face, depth = _most_interior(g.centroids, region, pairs)
        # Not clicked again, whatever the click finds: the faces around it, as far as half the way to the region's border.
        given_up |= region & (np.linalg.norm(g.centroids - g.centroids[face], axis=1) <= depth / 2)
        given_up[face] = True
        eye = _camera_seeing(g, face, region, eyes)
        if eye is None:
            continue
        probability, _ = sam_click(decoder, renderer, ClickPrompt.single(eye, g.centroids[face] - eye), eyes, views)
        selected = probability > 0.5
        new = selected & (part < 0)
        if area[new].sum() < MIN_PART_SHARE * area.sum():
            continue
        again = _found_again(part, selected, area, parts)
        if len(again):
            part[new] = again[0]
            part[np.isin(part, again[1:])] = again[0]
        else:
            part[new] = parts
            parts += 1
    return part


def _found_again(part: np.ndarray, selected: np.ndarray, area: np.ndarray, parts: int) -> np.ndarray:
    """The parts (ascending) of which the selection covers FOUND_AGAIN of the area."""
    held = selected & (part >= 0)
    covered = np.bincount(part[held], area[held], minlength=parts)
    return np.flatnonzero(covered >= FOUND_AGAIN * np.maximum(np.bincount(part[part >= 0], area[part >= 0],
                                                                          minlength=parts), 1e-30))


def _largest_region(faces: np.ndarray, pairs: np.ndarray, area: np.ndarray) -> np.ndarray:
    """(F,) bool: the connected set of `faces` with the largest area."""
    inside = pairs[faces[pairs[:, 0]] & faces[pairs[:, 1]]]
    piece = components(len(faces), inside)
    piece_area = np.bincount(piece, np.where(faces, area, 0.0))
    return faces & (piece == piece_area.argmax())


def _most_interior(centroids: np.ndarray, region: np.ndarray, pairs: np.ndarray) -> tuple[int, float]:
    """The face of `region` farthest from its border (faces beside another region, or beside
    an open edge: those with fewer than three neighbours in it), and how far that is."""
    inside = pairs[region[pairs[:, 0]] & region[pairs[:, 1]]]
    neighbours = np.bincount(inside.ravel(), minlength=len(region))
    members = np.flatnonzero(region)
    border = members[neighbours[members] < 3]
    if len(border) == 0:  # a closed surface on its own
        return int(members[0]), 0.0
    distance, _ = cKDTree(centroids[border]).query(centroids[members])
    return int(members[distance.argmax()]), float(distance.max())


def _camera_seeing(g, face: int, region: np.ndarray, eyes: np.ndarray) -> np.ndarray | None:
    """The training camera facing `face` most squarely whose ray to it first meets `region`."""
    towards = eyes - g.centroids[face]
    facing = towards @ g.normals[face] / np.linalg.norm(towards, axis=1).clip(1e-12)
    for i in np.argsort(-facing)[:CAMERAS_TRIED]:
        if facing[i] <= 0:
            break
        hit, _ = g.hit(eyes[i], -towards[i])
        if hit >= 0 and region[hit]:
            return eyes[i]
    return None
