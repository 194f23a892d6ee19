"""The mesh stage's output as later stages read it from the workspace."""

from __future__ import annotations

from ..geometry.frame import SceneFrame
from ..workspace import Files, Stages, Workspace
from .extract import Mesh


def load_mesh(ws: Workspace) -> Mesh:
    ws.require(Stages.MESH, "the mesh stage")
    arrays = ws.load_npz(Files.MESH)
    return Mesh(arrays["vertices"], arrays["faces"], arrays["vertex_colors"])


def mesh_voxel(ws: Workspace) -> float:
    """Edge of a marching-cubes cell of the workspace's mesh, in world units."""
    frame = SceneFrame.from_dict(ws.load_state()["frame"])
    return 2 * frame.scale / ws.stage(Stages.MESH)["settings"]["resolution"]
