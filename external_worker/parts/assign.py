"""Every face of the mesh in exactly one part, named; the last part is the background.

Each teacher says what the parts are its own way (ASSIGNERS): the labels teacher's classes,
the clip teacher's label set, SAM's own clicks (prompting). Then one set of rules for all:
label specks join what surrounds them (islands); a part named the background, or reaching
across the scene's box (a floor, a wall: rim), joins the background, with the faces no part
holds; parts left without faces are dropped."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import trimesh

from blender_dff.wire.api import BACKGROUND_PART, CANONICAL_NEGATIVES, DEFAULT_CLICK_VIEWS

from ..errors import WorkerError
from ..mesh.stored import seen_tolerance
from ..progress import Reporter, SilentReporter
from ..queries.click import ViewRenderer
from ..queries.faces import FaceFeatures, Geometry, load_face_features, load_geometry
from ..queries.readers import load_reader
from ..queries.relevancy import against_negatives, split_terms
from ..workspace import Files, Workspace
from .islands import merge_islands
from .prompting import self_prompted_parts
from .rim import scene_walls, spans_box
from ..mesh.topology import face_pairs


@dataclass
class Partition:
    names: list[str]        # the objects', then BACKGROUND_PART
    face_part: np.ndarray   # (F,) int32 index into names


@dataclass
class Surface:
    """The workspace's mesh as the split reads it."""

    geometry: Geometry
    pairs: np.ndarray  # faces sharing an edge (topology.face_pairs)
    area: np.ndarray   # (F,)
    walls: np.ndarray  # (V, 6) which walls of the scene's box each vertex lies on (rim.wall_contact)

    @classmethod
    def of(cls, ws: Workspace) -> "Surface":
        g = load_geometry(ws)
        area = trimesh.Trimesh(g.vertices, g.faces, process=False).area_faces
        return cls(g, face_pairs(g.faces), area, scene_walls(ws, g.vertices))


def assign_parts(ws: Workspace, teacher: str, label_set: str = "", reporter: Reporter = SilentReporter()) -> Partition:
    """The parts the `teacher`'s per-face features make of the workspace's mesh."""
    if teacher not in ASSIGNERS:
        raise WorkerError("unknown_teacher", f"no teacher named '{teacher}'", f"Use one of {', '.join(ASSIGNERS)}.")
    surface = Surface.of(ws)
    part, names = ASSIGNERS[teacher](ws, surface, label_set, reporter)
    return finish(surface, part, names)


def self_prompted(ws: Workspace, features: FaceFeatures, decoder, reporter: Reporter = SilentReporter()) -> Partition:
    """The parts a click decoder (SAM's, or an oracle) finds clicking by itself on `features`."""
    surface = Surface.of(ws)
    return finish(surface, *_prompted(ws, surface, features, decoder, reporter))


def finish(surface: Surface, part: np.ndarray, names: list[str] | None) -> Partition:
    """The partition of raw per-face parts (-1: none) named `names` (None: found by clicks,
    numbered once the background is set apart): specks merged, the background gathered last,
    empty parts dropped."""
    part = merge_islands(part, surface.pairs, surface.area)
    count = part.max() + 1 if names is None else len(names)
    faces = surface.geometry.faces
    to_background = [i for i in range(count) if (names is not None and names[i].lower() == BACKGROUND_PART)
                     or spans_box(faces[part == i], surface.walls)]
    kept = [i for i in range(count) if i not in to_background and (part == i).any()]
    index = np.full(count + 1, len(kept), np.int32)  # the last entry: part -1
    index[kept] = np.arange(len(kept))
    named = [f"object {k + 1}" for k in range(len(kept))] if names is None else [names[i] for i in kept]
    return Partition(named + [BACKGROUND_PART], index[part])


def _by_labels(ws: Workspace, surface: Surface, label_set: str, reporter: Reporter) -> tuple[np.ndarray, list[str]]:
    """Each face's most probable label (the label set plays no part: the dataset's labels are it)."""
    reader = load_reader(ws, "labels")
    return reader.codes.rows().argmax(1), list(reader.teacher.class_names)


def _by_label_set(ws: Workspace, surface: Surface, label_set: str, reporter: Reporter) -> tuple[np.ndarray, list[str]]:
    """Each face's most similar label of the set, where that beats the canonical negatives."""
    if not label_set.strip():
        raise WorkerError("empty_query", "the clip teacher splits the mesh by a label set, and none was given",
                          "Type the names of what to cut the scene into, comma-separated, e.g. 'chair, table, floor'.")
    terms = split_terms(label_set, "label set")
    reader = load_reader(ws, "clip")
    encoder = reader.teacher.encoder
    phrases = list(dict.fromkeys([*terms, *CANONICAL_NEGATIVES]))
    similarity = reader.codes.cosine_named(phrases, encoder.encode_text(phrases).cpu().numpy())
    labels = similarity[[phrases.index(t) for t in terms]]
    relevancy = against_negatives(labels, similarity[[phrases.index(n) for n in CANONICAL_NEGATIVES]],
                                  encoder.logit_scale)
    return np.where(relevancy >= 0.5, labels.argmax(0), -1), terms


def _by_clicks(ws: Workspace, surface: Surface, label_set: str, reporter: Reporter) -> tuple[np.ndarray, None]:
    sam = load_face_features(ws, "sam")
    return _prompted(ws, surface, sam, sam.teacher.model, reporter)


def _prompted(ws: Workspace, surface: Surface, features: FaceFeatures, decoder,
              reporter: Reporter) -> tuple[np.ndarray, None]:
    renderer = ViewRenderer(surface.geometry, features.features, features.background, seen_tolerance(ws))
    cameras = ws.load_npz(Files.CAMERAS)
    with ws.reading(Files.CAMERAS):
        eyes = cameras["c2w"][cameras["split"] == "train"][:, :3, 3]
    part = self_prompted_parts(renderer, decoder, surface.pairs, surface.area, eyes, DEFAULT_CLICK_VIEWS, reporter)
    return part, None


Assigner = Callable[[Workspace, Surface, str, Reporter], tuple[np.ndarray, list[str] | None]]
ASSIGNERS: dict[str, Assigner] = {"labels": _by_labels, "clip": _by_label_set, "sam": _by_clicks}
