"""The click query's entry point: which faces the clicks and box select."""

from __future__ import annotations

import numpy as np

from blender_dff.wire.api import DEFAULT_CLICK_VIEWS

from ..errors import WorkerError
from ..mesh.stored import seen_tolerance
from ..workspace import Workspace
from .click import ClickPrompt, faces_in_box
from .faces import load_geometry
from .readers import CastPrompt, ClickResult, load_reader


def query_click(workspace: Workspace, prompt: ClickPrompt, teacher: str = "labels",
                views: int = DEFAULT_CLICK_VIEWS) -> ClickResult:
    """The object under clicks and a box given as world-frame rays, as the teacher's reader
    answers it (see readers): with `sam`, SAM's decoder on features rendered from the mesh,
    carried to `views` training views; with `labels`, the labels of the faces clicked."""
    g = load_geometry(workspace)
    reader = load_reader(workspace, teacher)
    if not reader.answers_clicks:
        raise WorkerError("unsupported_query", f"the {teacher} teacher answers text, not clicks",
                          "Train the sam teacher (or labels) for the Click tool, or type a query.")
    cast = [g.hit(o, d) for o, d in zip(prompt.origins, prompt.directions)]
    hits, depths = [face for face, _ in cast], np.array([t for _, t in cast], np.float64)
    main_hit = next((h for h, label in zip(hits, prompt.labels) if label == 1), -1)
    tolerance = seen_tolerance(workspace)
    in_box = None
    if prompt.box_origins is not None:
        in_box = faces_in_box(g, prompt, tolerance)
        if not in_box.any():
            raise WorkerError("no_hit", "the box holds nothing of the mesh", "Drag the box around part of the mesh.")
    elif main_hit < 0:
        raise WorkerError("no_hit", "nothing of the mesh under the cursor", "Click on the mesh.")
    return reader.click(workspace, CastPrompt(prompt, g, hits, depths, main_hit, in_box, tolerance), views)
