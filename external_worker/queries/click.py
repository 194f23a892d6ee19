"""Clicks and boxes answered in 3D: SAM's decoder on features rendered from the mesh (SAN eq. 7),
carried to other views so that one click selects the whole object, back side included.

A prompt arrives as rays from the viewport (clicks, and the four corners of a dragged box). We
look along the first positive click (or the box's centre) with a virtual square camera wide
enough to hold every prompt; its 64 x 64 feature map is the per-face features of the face seen
in each of SAM's cells (faces are smaller than cells, so a z-buffer of face centroids covers the
image), with the field's background feature elsewhere. SAM's prompt encoder and mask decoder
turn it into a mask, which goes to the faces visible in that view. No image encoder runs at
query time.

Cross-view self-prompting (the idea of SA3D, on rendered features), made to survive a segmenter
that errs in some views: up to half of the training cameras a click is carried to are ones that
see the clicked point, each asked on its own for the object under it; the others (the far side)
get a box and a point made from what the views so far selected, kept when their mask matches
it. The views then decide together (`ballot`): a view that disagrees with the others loses its
say, the clicked one included, and each face's probability is the share of the weight of the
views that see it which put it in the mask (less weight near a mask's edge). Faces no view saw
are filled from the faces around them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from scipy import ndimage

from ..errors import WorkerError
from ..features.face_codes import FaceCodes
from ..features.mesh_smoothing import fill_unknown
from ..teachers.sam_model import SAM_FEATURE_SIZE, SamModel
from ..geometry.camera import intrinsics_for, look_at, project, to_camera
from ..geometry.visibility import visible_faces
from .ballot import Ballot
from .faces import Geometry, unit_rays

VIEW_SIZE = 256          # pixels of a virtual view (SAM upsamples its masks to this)
MIN_FOV_DEGREES = 20.0   # the clicked view: at least this wide, wider if the prompts need it
MAX_FOV_DEGREES = 100.0
CLICK_VIEW_WEIGHT = 2.0  # the view the user clicked in counts as two votes
MIN_FACES_IN_VIEW = 20   # fewer selected faces in sight: the view says nothing about the object
EDGE_PIXELS = 2 * VIEW_SIZE / SAM_FEATURE_SIZE  # a view's word weighs fully this far inside or outside its mask
MIN_EDGE_WEIGHT = 0.1    # and this much right at the mask's edge
ANCHOR_SHARE = 0.5       # of the views a click is carried to, at most this share are asked about the clicked point


@dataclass
class ClickPrompt:
    """What the user did in the viewport, as world-frame rays: clicks with labels (1 = object,
    0 = background) and optionally a box as its four corner rays, in order around the box."""

    origins: np.ndarray      # (N, 3)
    directions: np.ndarray   # (N, 3), normalised
    labels: np.ndarray       # (N,) int
    box_origins: np.ndarray | None = None     # (4, 3)
    box_directions: np.ndarray | None = None  # (4, 3)

    def __post_init__(self) -> None:
        self.origins = np.asarray(self.origins, np.float64).reshape(-1, 3)
        self.directions = unit_rays(np.asarray(self.directions, np.float64).reshape(-1, 3), "click")
        self.labels = np.asarray(self.labels, np.int64).reshape(-1)
        if len(self.labels) != len(self.origins) or len(self.directions) != len(self.origins):
            raise WorkerError("bad_prompt", f"{len(self.origins)} click origins, {len(self.directions)} directions "
                              f"and {len(self.labels)} labels", "Send one origin, direction and label per click.")
        if not np.isin(self.labels, (0, 1)).all():
            raise WorkerError("bad_prompt", f"click labels must be 1 (object) or 0 (background), got "
                              f"{self.labels.tolist()}", "Use 1 for a click on the object, 0 for what to leave out.")
        if self.box_origins is not None:
            self.box_origins = np.asarray(self.box_origins, np.float64).reshape(-1, 3)
            self.box_directions = unit_rays(np.asarray(self.box_directions, np.float64).reshape(-1, 3), "box corner")
            if len(self.box_origins) != 4 or len(self.box_directions) != 4:
                raise WorkerError("bad_prompt", f"a box needs 4 corner rays, got {len(self.box_origins)}",
                                  "Send the rays through the box's four corners, in order around it.")
        if not (self.labels == 1).any() and self.box_origins is None:
            raise WorkerError("bad_prompt", "only background clicks were given",
                              "Click on the object (or drag a box around it) before excluding parts of it.")

    @classmethod
    def single(cls, origin: np.ndarray, direction: np.ndarray) -> "ClickPrompt":
        return cls(np.asarray(origin)[None], np.asarray(direction)[None], np.array([1]))

    def main_ray(self) -> tuple[np.ndarray, np.ndarray]:
        """The ray the virtual view looks along: the first object click, else the box's centre."""
        positive = np.flatnonzero(self.labels == 1)
        if len(positive):
            return self.origins[positive[0]], self.directions[positive[0]]
        return self.box_origins.mean(0), unit_rays(self.box_directions.mean(0)[None], "box")[0]


def _project(points: np.ndarray, c2w: np.ndarray, fov: float, size: int = VIEW_SIZE) -> np.ndarray:
    """(x, y) pixels of world points in a square view."""
    u, v, _ = project(points, c2w, intrinsics_for(size, fov))
    return np.stack([u, v], axis=1)


def _fov_holding(c2w: np.ndarray, points: np.ndarray, margin: float = 1.3) -> float:
    """Field of view (degrees) of a camera that sees `points` with a margin around them."""
    local = to_camera(points, c2w)
    depth = np.maximum(-local[:, 2], 1e-9)
    half = np.degrees(np.arctan(np.abs(local[:, :2]).max(1) / depth)).max(initial=0.0)
    return float(np.clip(2 * half * margin, MIN_FOV_DEGREES, MAX_FOV_DEGREES))


class ViewRenderer:
    """Feature maps and face visibility of square virtual views of one mesh."""

    def __init__(self, geometry: Geometry, face_features: FaceCodes, background: np.ndarray,
                 tolerance: float) -> None:
        self.geometry = geometry
        self.face_features = face_features
        self.background = np.asarray(background, np.float32)
        self.tolerance = tolerance

    def faces_seen(self, c2w: np.ndarray, fov: float, size: int = VIEW_SIZE) -> tuple[np.ndarray, np.ndarray]:
        """Faces visible in a square view (F,) and their pixel index (row * size + col)."""
        g = self.geometry
        return visible_faces(g.centroids, g.normals, c2w, intrinsics_for(size, fov), size, size, self.tolerance)

    def feature_map(self, c2w: np.ndarray, cell_intrinsics: np.ndarray, rows: int = SAM_FEATURE_SIZE,
                    cols: int = SAM_FEATURE_SIZE) -> torch.Tensor:
        """(C, 64, 64) features of a camera whose intrinsics are given in feature cells: the
        nearest visible face of each cell of the top-left rows x cols, the background feature
        elsewhere (SAM pads images at the bottom and right)."""
        cells = SAM_FEATURE_SIZE
        g = self.geometry
        visible, pixel = visible_faces(g.centroids, g.normals, c2w, cell_intrinsics, rows, cols, self.tolerance)
        faces = np.flatnonzero(visible)
        depth = np.linalg.norm(g.centroids[faces] - c2w[:3, 3], axis=1)
        by_depth = faces[np.argsort(depth)]
        cell, first = np.unique(pixel[by_depth], return_index=True)  # the nearest face of each cell
        out = np.empty((self.background.shape[0], cells, cells), np.float32)
        out[:] = self.background[:, None, None]
        out[:, cell // cols, cell % cols] = self.face_features.rows(by_depth[first]).T
        return torch.from_numpy(out)

    def mask_faces(self, decoder: SamModel, c2w: np.ndarray, fov: float, seen: tuple[np.ndarray, np.ndarray],
                   points: np.ndarray | None, labels: np.ndarray | None,
                   box: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """Which faces SAM's best mask covers (F,), given the view's `faces_seen`, and how much
        the view's word on each face weighs (F,): 0 for faces it does not see, less near the
        mask's edge, where a mask made from a 64 x 64 feature map is unsure by a cell or two."""
        features = self.feature_map(c2w, intrinsics_for(SAM_FEATURE_SIZE, fov)).to(decoder.device)
        multimask = box is None and (points is None or len(points) == 1)  # one click is ambiguous
        masks, _ = decoder.decode(features, (VIEW_SIZE, VIEW_SIZE), points, labels, box, multimask=multimask)
        mask = np.asarray(masks[0], bool)
        to_edge = np.where(mask, ndimage.distance_transform_edt(mask), ndimage.distance_transform_edt(~mask))
        certainty = np.clip(to_edge / EDGE_PIXELS, MIN_EDGE_WEIGHT, 1.0).reshape(-1)
        visible, pixel = seen
        in_mask = np.zeros(len(visible), bool)
        in_mask[visible] = mask.reshape(-1)[pixel[visible]]
        weight = np.zeros(len(visible))
        weight[visible] = certainty[pixel[visible]]
        return in_mask, weight


def faces_in_box(geometry: Geometry, prompt: ClickPrompt, tolerance: float) -> np.ndarray:
    """Faces seen inside the prompt's box from its centre ray (F,) bool."""
    origin, direction = prompt.main_ray()
    c2w = look_at(origin, direction)
    depth = geometry.hit(origin, direction)[1]
    depth = depth if np.isfinite(depth) else np.linalg.norm(geometry.centroids.mean(0) - origin)
    corners = prompt.box_origins + depth * prompt.box_directions
    fov = _fov_holding(c2w, corners, margin=1.1)
    xy = _project(corners, c2w, fov)
    (x0, y0), (x1, y1) = xy.min(0), xy.max(0)
    visible, pixel = visible_faces(geometry.centroids, geometry.normals, c2w, intrinsics_for(VIEW_SIZE, fov),
                                   VIEW_SIZE, VIEW_SIZE, tolerance)
    col, row = pixel % VIEW_SIZE, pixel // VIEW_SIZE
    return visible & (col >= x0) & (col <= x1) & (row >= y0) & (row <= y1)


def sam_click(decoder: SamModel, renderer: ViewRenderer, prompt: ClickPrompt, cameras: np.ndarray,
              views: int, click_depths: np.ndarray | None = None) -> tuple[np.ndarray, int]:
    """Per-face probability of the prompted object, and how many views voted.

    `cameras` (M, 3) are positions to look from when carrying the mask to other views (the
    training cameras); `views` is how many of them to use (0: the clicked view alone).
    `click_depths` are the distances at which the clicks meet the mesh (inf: missed), when the
    caller has cast them already."""
    g = renderer.geometry
    if click_depths is None:
        click_depths = np.array([g.hit(o, d)[1] for o, d in zip(prompt.origins, prompt.directions)])
    origin, direction = prompt.main_ray()
    c2w = look_at(origin, direction)
    hit = np.isfinite(click_depths) & (prompt.labels == 1)
    depth = click_depths[hit][0] if hit.any() else g.hit(origin, direction)[1]
    depth = depth if np.isfinite(depth) else np.linalg.norm(g.centroids.mean(0) - origin)
    clicked = prompt.origins + np.where(np.isfinite(click_depths), click_depths, depth)[:, None] * prompt.directions
    corners = [] if prompt.box_origins is None else [prompt.box_origins + depth * prompt.box_directions]
    fov = _fov_holding(c2w, np.concatenate([clicked, *corners]))
    points = _project(clicked, c2w, fov)
    box = None
    if corners:
        xy = _project(corners[0], c2w, fov)
        box = np.concatenate([xy.min(0), xy.max(0)])
    seen_here = renderer.faces_seen(c2w, fov)
    in_mask, weight = renderer.mask_faces(decoder, c2w, fov, seen_here, points, prompt.labels, box)
    ballot = Ballot(len(g.faces))
    ballot.add(in_mask, weight, CLICK_VIEW_WEIGHT)
    anchor_face = g.hit(origin, direction)[0] if hit.any() else -1
    anchor = clicked[np.flatnonzero(hit)[0]] if anchor_face >= 0 else None
    asked: list[np.ndarray] = []
    if anchor is not None:
        # The views that see the clicked point are each asked for the object under it, on their
        # own: where one view's segmenter errs (the object missed, merged with its neighbour, a
        # blob under the click; the clicked view's included), the others outvote it.
        around = g.centroids[in_mask] if in_mask.any() else anchor[None]

        def anchor_view(eye: np.ndarray) -> tuple[np.ndarray, float]:
            view = look_at(eye, anchor - eye)
            return view, _fov_holding(view, around, margin=1.5)

        def sees_anchor(eye: np.ndarray) -> bool:
            # In the feature map's own cells: a nearer object sharing the clicked point's cell
            # (a chair's leg in front of the floor clicked beside it) would answer for it.
            return bool(renderer.faces_seen(*anchor_view(eye), SAM_FEATURE_SIZE)[0][anchor_face])

        asked = _views_around(anchor[None], origin, cameras, int(np.ceil(views * ANCHOR_SHARE)), sees_anchor)
        for eye in asked:
            view, view_fov = anchor_view(eye)
            ballot.add(*renderer.mask_faces(decoder, view, view_fov, renderer.faces_seen(view, view_fov),
                                            _project(anchor[None], view, view_fov), np.array([1]), None))
        if asked:  # the far side is looked at from the other cameras
            cameras = cameras[~(cameras[:, None] == np.array(asked)[None]).all(2).any(1)]
    # The other views (the far side) are prompted with what the views so far selected: a box and a point.
    for eye in _views_around(g.centroids[ballot.selected()], origin, cameras, views - len(asked)):
        selected = ballot.selected()
        if selected.sum() < MIN_FACES_IN_VIEW:
            break
        centre = g.centroids[selected].mean(0)
        view = look_at(eye, centre - eye)
        view_fov = _fov_holding(view, g.centroids[selected], margin=1.5)
        seen_here = renderer.faces_seen(view, view_fov)
        in_sight = seen_here[0] & selected
        if in_sight.sum() < MIN_FACES_IN_VIEW:
            continue  # hidden from here
        box, point = _prompt_from_faces(g, in_sight, view, view_fov)
        view_mask, weight = renderer.mask_faces(decoder, view, view_fov, seen_here, point[None], np.array([1]), box)
        if ballot.agrees(view_mask, weight):  # else the prompt fell on something else (an occluder)
            ballot.add(view_mask, weight)
    votes, seen, used = ballot.consensus()
    probability = votes / np.maximum(seen, 1e-9)
    if views <= 0:
        return probability.astype(np.float32), used  # the clicked view alone: what it sees, nothing else
    # Faces none of the views saw (an underside, a back) take the value of the faces around them.
    return fill_unknown(probability, seen > 0, g.adjacency).astype(np.float32), used


def _views_around(selected_centroids: np.ndarray, clicked_from: np.ndarray, cameras: np.ndarray,
                  count: int, accept: Callable[[np.ndarray], bool] | None = None) -> list[np.ndarray]:
    """Up to `count` camera positions spread around the object, nearest to the clicked view first
    (so that the selection grows from what the user saw). With `accept`, only cameras it admits,
    asked lazily in the order they would be picked (so that few are asked)."""
    if count <= 0 or len(selected_centroids) == 0 or len(cameras) == 0:
        return []
    centre = selected_centroids.mean(0)
    directions = cameras - centre
    directions /= np.linalg.norm(directions, axis=1, keepdims=True).clip(1e-12)
    clicked = (clicked_from - centre) / max(np.linalg.norm(clicked_from - centre), 1e-12)
    chosen: list[int] = []
    closeness = directions @ clicked  # farthest-point sampling of directions, from the clicked one
    untried = np.ones(len(cameras), bool)
    while len(chosen) < count and untried.any():
        pick = int(np.argmin(np.where(untried, closeness, np.inf)))
        untried[pick] = False
        if accept is None or accept(cameras[pick]):
            chosen.append(pick)
            closeness = np.maximum(closeness, directions @ directions[pick])
    order = sorted(chosen, key=lambda i: -float(directions[i] @ clicked))
    return [cameras[i] for i in order]


def _prompt_from_faces(g: Geometry, faces: np.ndarray, c2w: np.ndarray, fov: float) -> tuple[np.ndarray, np.ndarray]:
    """A box around the faces as a view sees them, and the point deepest inside them. The box
    holds the largest connected region of them only: a few stray faces elsewhere in the view (a
    neighbour's rim that an earlier mask bled onto) would widen it into a box of the floor."""
    cells = SAM_FEATURE_SIZE
    scale = VIEW_SIZE / cells
    xy = _project(g.centroids[faces], c2w, fov, cells)
    col = np.clip(xy[:, 0].astype(int), 0, cells - 1)
    row = np.clip(xy[:, 1].astype(int), 0, cells - 1)
    occupied = np.zeros((cells, cells), bool)
    occupied[row, col] = True
    occupied = ndimage.binary_closing(occupied, iterations=1) | occupied
    regions, _ = ndimage.label(occupied)
    occupied = regions == np.bincount(regions.ravel())[1:].argmax() + 1
    depth = ndimage.distance_transform_edt(np.pad(occupied, 1))[1:-1, 1:-1]
    r, c = np.unravel_index(int(depth.argmax()), depth.shape)
    rows, cols = np.nonzero(occupied)
    box = np.array([cols.min(), rows.min(), cols.max() + 1, rows.max() + 1], np.float64) * scale
    return box, (np.array([c, r], np.float64) + 0.5) * scale
