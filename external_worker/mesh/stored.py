"""The mesh stage's output as later stages read it from the workspace."""

from __future__ import annotations

import hashlib

from ..errors import WorkerError
from ..geometry.frame import SceneFrame
from ..workspace import Files, Stages, Workspace
from .extract import Mesh


def load_mesh(ws: Workspace) -> Mesh:
    ws.require(Stages.MESH, "the mesh stage")
    arrays = ws.load_npz(Files.MESH)
    with ws.reading(Files.MESH):
        return Mesh(arrays["vertices"], arrays["faces"], arrays["vertex_colors"])


def mesh_voxel(ws: Workspace) -> float:
    """Edge of a marching-cubes cell of the workspace's mesh, in world units."""
    with ws.reading(Files.STATE):
        frame = SceneFrame.from_dict(ws.load_state()["frame"])
        return 2 * frame.scale / ws.stage(Stages.MESH)["settings"]["resolution"]


def seen_tolerance(ws: Workspace) -> float:
    """Depth (world units) within which a face counts as seen where the z-buffer is nearer: three
    marching-cubes cells, the mesh's own roughness, so a surface does not hide itself."""
    return 3 * mesh_voxel(ws)


def mesh_id(mesh: Mesh) -> str:
    """What identifies one extracted mesh: a digest of its faces and vertices. Blender keeps it
    on the mesh it imported, and every request about faces sends it back: a face count alone
    cannot tell a retrained mesh, or another workspace's, from the one Blender holds."""
    digest = hashlib.sha1(mesh.faces.tobytes())
    digest.update(mesh.vertices.tobytes())
    return digest.hexdigest()[:16]


def current_mesh_id(ws: Workspace) -> str:
    """The id of the workspace's mesh (recorded by the mesh stage; computed for older workspaces)."""
    ws.require(Stages.MESH, "the mesh stage")
    return ws.stage(Stages.MESH).get("mesh_id") or mesh_id(load_mesh(ws))


def check_mesh_id(ws: Workspace, sent: str | None) -> None:
    """Refuse a request about faces made for another mesh than the workspace's (a request
    without an id, from a script, is taken as meant for the current one)."""
    if sent is None:
        return
    current = current_mesh_id(ws)
    if sent != current:
        raise WorkerError("stale_mesh", f"the mesh the request is for ({sent}) is not the mesh of the workspace "
                          f"'{ws.root}' ({current}): it was retrained, or the mesh came from another workspace",
                          "Load Mesh again from this workspace, or set the Workspace to the one the mesh came from.")
