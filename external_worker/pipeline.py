"""The stages on a workspace: import -> NeRF -> mesh -> features -> queries.

Each stage reads what earlier stages left in the workspace and records itself in state.json,
so any stage can run alone (CLI) and a second run resumes instead of starting over.
Used by the command line (`__main__`) and by the server's handlers alike.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .datasets import Dataset, load_dataset
from .errors import WorkerError
from .click import sam_click
from .features import (FeatureConfig, background_feature, face_features, face_features_name, load_features,
                       train_features)
from .mesh import Cameras, Mesh, MeshConfig, extract_mesh
from .nerf_training import TrainConfig, load_field, train_nerf
from .progress import Reporter
from .raycast import first_hit
from .rays import SceneFrame
from .teachers import TEACHER_TYPES, SamFeatureTeacher, Teacher, make_teacher
from .workspace import Workspace

MESH_FILE = "mesh.npz"
MESH_EXPORT = "mesh.ply"


@dataclass
class Scene:
    """A workspace with its dataset loaded and its normalised frame."""

    workspace: Workspace
    dataset: Dataset
    frame: SceneFrame

    def train_cameras(self) -> Cameras:
        train = self.dataset.split == "train"
        return Cameras(self.frame.normalise_poses(self.dataset.c2w[train]), self.dataset.intrinsics[train],
                       self.dataset.height, self.dataset.width)


@dataclass
class TrainSettings:
    """Everything `train_all` runs, with defaults that suit a small scene on a CPU."""

    nerf: TrainConfig = field(default_factory=TrainConfig)
    mesh: MeshConfig = field(default_factory=MeshConfig)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    teacher: str = "labels"
    sam_checkpoint: str = ""  # for the sam teacher: a checkpoint path, or "tiny" (random, for tests)


def import_dataset(dataset_path: str | Path, workspace: Workspace, downscale: int = 1,
                   require_labels: bool = False) -> Dataset:
    """Validate a dataset and bind the workspace to it. Re-importing the same dataset keeps the
    trained stages; importing another one into a used workspace is refused."""
    dataset = load_dataset(dataset_path, downscale=downscale, require_labels=require_labels)
    state = workspace.load_state()
    source = {"path": str(Path(dataset_path).expanduser().resolve()), "downscale": downscale}
    if state.get("dataset") not in (None, source):
        raise WorkerError("workspace_in_use", f"the workspace {workspace.root} belongs to {state['dataset']['path']}",
                          "Pick an empty workspace folder for a new dataset.")
    state["dataset"] = source
    state["frame"] = SceneFrame.from_aabb(dataset.aabb).to_dict()
    state["stages"].setdefault("import", {}).update(done=True, n_images=len(dataset))
    workspace.save_state(state)
    workspace.save_npz("cameras.npz", c2w=dataset.c2w, intrinsics=dataset.intrinsics,
                       split=dataset.split.astype(str), names=np.array(dataset.names))
    return dataset


def open_scene(workspace: Workspace) -> Scene:
    state = workspace.load_state()
    if "dataset" not in state:
        raise WorkerError("stage_missing", f"the workspace {workspace.root} has no dataset",
                          "Import a dataset into it first.")
    source = state["dataset"]
    dataset = load_dataset(source["path"], downscale=source["downscale"])
    return Scene(workspace, dataset, SceneFrame.from_dict(state["frame"]))


def run_nerf(scene: Scene, config: TrainConfig, reporter: Reporter) -> dict:
    info = scene.workspace.stage("nerf")
    if info.get("done") and info.get("step", 0) >= config.steps:
        return info
    if info.get("done"):  # more steps asked for: continue from the checkpoint
        scene.workspace.update_stage("nerf", done=False)
    return train_nerf(scene.dataset, scene.frame, scene.workspace, config, reporter)


def run_mesh(scene: Scene, config: MeshConfig, reporter: Reporter) -> Mesh:
    """Extract the mesh (skipped when one with the same settings is newer than the NeRF)."""
    ws = scene.workspace
    info = ws.stage("mesh")
    settings = {"resolution": config.resolution, "density_threshold": config.density_threshold,
                "max_faces": config.max_faces, "nerf_step": ws.stage("nerf").get("step")}
    if info.get("done") and info.get("settings") == settings and ws.path(MESH_FILE).exists():
        return load_mesh(ws)
    field, grid = load_field(ws)
    mesh = extract_mesh(field, grid, scene.frame, scene.train_cameras(), config, reporter)
    if len(mesh.faces) == 0:
        raise WorkerError("empty_mesh", "the extracted mesh has no faces",
                          "Train longer, or lower the density threshold of the mesh stage.")
    ws.save_npz(MESH_FILE, **mesh.to_arrays())
    export_ply(ws, mesh)
    # A new mesh invalidates the per-face features of every teacher.
    state = ws.load_state()
    for name in [s for s in state["stages"] if s.startswith("face_features_")]:
        state["stages"].pop(name)
    state["stages"]["mesh"] = {"done": True, "settings": settings, "n_faces": int(len(mesh.faces))}
    ws.save_state(state)
    return mesh


def export_ply(ws: Workspace, mesh: Mesh) -> Path:
    import trimesh

    colors = np.clip(mesh.vertex_colors * 255 + 0.5, 0, 255).astype(np.uint8)
    tm = trimesh.Trimesh(mesh.vertices, mesh.faces, vertex_colors=colors, process=False)
    return ws.write_bytes(MESH_EXPORT, tm.export(file_type="ply"))


def mesh_voxel(ws: Workspace) -> float:
    """Edge of a marching-cubes cell of the workspace's mesh, in world units."""
    frame = SceneFrame.from_dict(ws.load_state()["frame"])
    return 2 * frame.scale / ws.stage("mesh")["settings"]["resolution"]


def load_mesh(ws: Workspace) -> Mesh:
    ws.require("mesh", "the mesh stage")
    arrays = ws.load_npz(MESH_FILE)
    return Mesh(arrays["vertices"], arrays["faces"], arrays["vertex_colors"])


def run_features(scene: Scene, teacher: Teacher, config: FeatureConfig, reporter: Reporter) -> dict:
    """Distil a teacher into its feature field, then evaluate it at the mesh's face centroids."""
    ws = scene.workspace
    teacher_name = teacher.name
    stage = f"features_{teacher_name}"
    info = ws.stage(stage)
    if not (info.get("done") and info.get("step", 0) >= config.steps):
        if info.get("done"):
            ws.update_stage(stage, done=False)
        info = train_features(scene.dataset, scene.frame, ws, load_field(ws), teacher, config, reporter)
        ws.update_stage(f"face_features_{teacher_name}", done=False)
    if not ws.stage(f"face_features_{teacher_name}").get("done"):
        model, teacher = load_features(ws, teacher_name)
        mesh = load_mesh(ws)
        centroids = scene.frame.normalise_points(mesh.vertices[mesh.faces].mean(1))
        ws.save_npy(face_features_name(teacher_name), face_features(model, centroids))
        ws.update_stage(f"face_features_{teacher_name}", done=True, n_faces=int(len(mesh.faces)),
                        teacher=teacher.to_dict(), background=background_feature(model).tolist())
    return info


def train_all(workspace: Workspace, settings: TrainSettings, reporter: Reporter) -> tuple[Mesh, dict]:
    """NeRF, mesh and feature field, each resumed or skipped when already done."""
    scene = open_scene(workspace)
    # A missing label map or checkpoint fails now, not after the NeRF.
    teacher = make_teacher(settings.teacher, scene.dataset, settings.sam_checkpoint)
    nerf = run_nerf(scene, settings.nerf, reporter)
    mesh = run_mesh(scene, settings.mesh, reporter)
    run_features(scene, teacher, settings.features, reporter)
    return mesh, {"psnr": nerf.get("psnr"), "n_faces": int(len(mesh.faces)), "teacher": settings.teacher}


def _face_features(workspace: Workspace, teacher: str):
    info = workspace.require(f"face_features_{teacher}", f"feature training with the '{teacher}' teacher")
    features = np.load(workspace.path(face_features_name(teacher)), allow_pickle=False)
    return TEACHER_TYPES[teacher].from_dict(info["teacher"]), features, info


def query_text(workspace: Workspace, text: str, teacher: str = "labels") -> np.ndarray:
    """Per-face probability (F,) float32 that a face belongs to `text`."""
    teacher_obj, features, _ = _face_features(workspace, teacher)
    return teacher_obj.query_text(text, features).astype(np.float32)


def query_click(workspace: Workspace, origin: np.ndarray, direction: np.ndarray,
                teacher: str = "labels") -> tuple[str, int, np.ndarray]:
    """The object under a clicked ray (world frame): its name, the face hit, per-face probability."""
    mesh = load_mesh(workspace)
    teacher_obj, features, info = _face_features(workspace, teacher)
    face, _ = first_hit(mesh.vertices, mesh.faces, origin, direction)
    if face < 0:
        raise WorkerError("no_hit", "nothing of the mesh under the cursor", "Click on the mesh.")
    if isinstance(teacher_obj, SamFeatureTeacher):
        probability = sam_click(teacher_obj.model, features, np.asarray(info["background"]), mesh.vertices,
                                mesh.faces, origin, direction, tolerance=3 * mesh_voxel(workspace))
        return "click", face, probability
    name, probability = teacher_obj.query_face(face, features)
    return name, face, probability.astype(np.float32)


def query_similar(workspace: Workspace, selected: np.ndarray, teacher: str = "labels") -> np.ndarray:
    """DFF's patch query: cosine similarity (clipped to [0, 1]) of every face's feature with the
    mean feature of the selected faces."""
    teacher_obj, features, _ = _face_features(workspace, teacher)
    if selected.shape != (len(features),):
        raise WorkerError("bad_request", f"'selected' has shape {selected.shape}, the mesh has {len(features)} faces",
                          "Send one boolean per face of the workspace's mesh.")
    if not selected.any():
        raise WorkerError("empty_selection", "no faces are selected", "Select some faces first.")
    embedded = teacher_obj.embed(features)
    embedded /= np.linalg.norm(embedded, axis=1, keepdims=True).clip(1e-8)
    mean = embedded[selected].mean(0)
    mean /= max(np.linalg.norm(mean), 1e-8)
    return np.clip(embedded @ mean, 0, 1).astype(np.float32)
