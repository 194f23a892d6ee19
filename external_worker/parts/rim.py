"""The scene's outer rim: where the mesh's box cut the scene (a floor reaching past it). The
mesh is extracted in the box [-1, 1]^3 of the normalised frame, so its rim lies on the box's
walls. An open edge there is no hole to fill, and a part that reaches across the box (a floor,
a wall) is the background, never an object.

Open edges elsewhere are holes: faces no camera saw were removed from the mesh (the gap under a
ball resting on the floor), and what a part's cut leaves open there is filled like a cut."""

from __future__ import annotations

import numpy as np

from ..geometry.frame import SceneFrame
from ..workspace import Files, Stages, Workspace
from ..mesh.topology import edge_keys, open_edges

RIM_VOXELS = 1.5  # a vertex this near a wall lies on it (marching cubes puts the rim on it; decimation moves it)


def wall_contact(normalised: np.ndarray, tolerance: float) -> np.ndarray:
    """(V, 6) which walls of the box [-1, 1]^3 (-x, +x, -y, +y, -z, +z) each vertex lies on."""
    low, high = normalised <= -1 + tolerance, normalised >= 1 - tolerance
    return np.stack([low[:, 0], high[:, 0], low[:, 1], high[:, 1], low[:, 2], high[:, 2]], 1)


def scene_walls(ws: Workspace, vertices: np.ndarray) -> np.ndarray:
    """`wall_contact` of the workspace mesh's vertices (world frame)."""
    with ws.reading(Files.STATE):
        frame = SceneFrame.from_dict(ws.load_state()["frame"])
        voxel = 2 / ws.stage(Stages.MESH)["settings"]["resolution"]
    return wall_contact(frame.normalise_points(vertices), RIM_VOXELS * voxel)


def rim_keys(faces: np.ndarray, walls: np.ndarray) -> np.ndarray:
    """Sorted keys (topology.edge_keys) of the mesh's open edges that run along a wall."""
    edges = open_edges(faces)
    along = (walls[edges[:, 0]] & walls[edges[:, 1]]).any(1)
    return np.unique(edge_keys(edges[along]))


def spans_box(faces: np.ndarray, walls: np.ndarray) -> bool:
    """Whether the faces reach two opposite walls of the box."""
    touched = walls[np.unique(faces)].any(0)
    return bool((touched[0::2] & touched[1::2]).any())
