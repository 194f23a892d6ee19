"""The stages on a workspace: import -> NeRF -> mesh -> features -> queries, and the split.

Each stage reads what earlier stages left in the workspace and records itself in state.json,
so any stage can run alone (CLI) and a second run resumes instead of starting over.
Used by the command line (`__main__`) and by the server's handlers alike.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from blender_dff.wire.api import DEFAULT_BOUNDS, DEFAULT_DOWNSCALE, IMPORT_DATASET, SPLIT, TEST_EVERY, TEXTURE_SIZES

from .mesh.bake import Bake, Triangles, bake_texture
from .datasets.dataset import Dataset, check_trainable, load_dataset
from .errors import WorkerError
from .config import FeatureConfig, MeshConfig, NerfConfig, TrainConfig, TrainSettings, describe
from .features.augment import use_augmentation
from .features.face_votes import lift_classes
from .features.field import background_feature, face_codes
from .features.train import load_features, train_features
from .mesh.extract import Mesh, extract_mesh
from .mesh.stored import load_mesh, mesh_id, seen_tolerance
from .training import device
from .nerf.train import load_field, train_nerf
from .parts.assign import assign_parts
from .parts.rim import rim_keys, scene_walls
from .parts.split import Split, split_mesh
from .progress import Reporter, SilentReporter
from .geometry.camera import Cameras
from .geometry.frame import SceneFrame
from .teachers.registry import Teacher, make_teacher
from .workspace import Files, Stages, Workspace

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


IMPORT_DEFAULTS = IMPORT_DATASET.defaults()  # downscale, test_every, bounds


def import_dataset(dataset_path: str | Path, workspace: Workspace, downscale: int = DEFAULT_DOWNSCALE,
                   test_every: int = TEST_EVERY, bounds: str = DEFAULT_BOUNDS,
                   require_labels: bool = False) -> Dataset:
    """Validate a dataset and bind the workspace to it (see `load_dataset` for the options).
    Re-importing the same dataset with the same options keeps the trained stages; importing
    another one, or the same with other options, into a used workspace is refused. The
    workspace's confinement holds the dataset's files too."""
    dataset = load_dataset(dataset_path, downscale=downscale, test_every=test_every, bounds=bounds,
                           require_labels=require_labels, confine=workspace.confine)
    check_trainable(dataset)
    state = workspace.load_state()
    source = {"path": str(workspace.confine.check(dataset_path)), "downscale": downscale,
              "test_every": test_every, "bounds": bounds}
    bound = {**IMPORT_DEFAULTS, **state["dataset"]} if "dataset" in state else None
    if bound not in (None, source):
        options = ", ".join(f"{key} {bound[key]}" for key in IMPORT_DEFAULTS)
        raise WorkerError("workspace_in_use", f"the workspace {workspace.root} belongs to {bound['path']} "
                          f"imported with {options}",
                          "Pick an empty workspace folder for a new dataset or other import options.")
    state["dataset"] = source
    state["frame"] = SceneFrame.from_aabb(dataset.aabb).to_dict()
    state["stages"].setdefault(Stages.IMPORT, {}).update(done=True, n_images=len(dataset))
    workspace.save_state(state)
    workspace.save_npz(Files.CAMERAS, c2w=dataset.c2w, intrinsics=dataset.intrinsics,
                       split=dataset.split.astype(str), names=np.array(dataset.names))
    return dataset


def open_scene(workspace: Workspace) -> Scene:
    state = workspace.load_state()
    if "dataset" not in state:
        raise WorkerError("stage_missing", f"the workspace {workspace.root} has no dataset",
                          "Import a dataset into it first.")
    source = {**IMPORT_DEFAULTS, **state["dataset"]}  # workspaces made before an option existed
    # The path is checked again: state.json, or the folder it names, may have changed since the import.
    dataset = load_dataset(source["path"], downscale=source["downscale"], test_every=source["test_every"],
                           bounds=source["bounds"], confine=workspace.confine)
    return Scene(workspace, dataset, SceneFrame.from_dict(state["frame"]))


def run_nerf(scene: Scene, config: TrainConfig, reporter: Reporter, field: NerfConfig | None = None) -> dict:
    """Train the radiance field (`field`: its architecture, for a new one), or resume it."""
    info = scene.workspace.stage(Stages.NERF)
    if info.get("done") and info.get("step", 0) >= config.steps:
        return info
    if info.get("done"):  # more steps asked for: continue from the checkpoint
        scene.workspace.update_stage(Stages.NERF, done=False)
    return train_nerf(scene.dataset, scene.frame, scene.workspace, config, reporter, field)


def run_mesh(scene: Scene, config: MeshConfig, reporter: Reporter) -> Mesh:
    """Extract the mesh (skipped when one with the same settings is newer than the NeRF)."""
    ws = scene.workspace
    info = ws.stage(Stages.MESH)
    settings = {"resolution": config.resolution, "density_threshold": config.density_threshold,
                "max_faces": config.max_faces, "nerf_step": ws.stage(Stages.NERF).get("step")}
    if info.get("done") and info.get("settings") == settings and ws.path(Files.MESH).exists():
        return load_mesh(ws)
    field, grid = load_field(ws)
    mesh = extract_mesh(field, grid, scene.frame, scene.train_cameras(), config, reporter)
    if len(mesh.faces) == 0:
        raise WorkerError("empty_mesh", "the extracted mesh has no faces",
                          "Train longer, or lower the density threshold of the mesh stage.")
    ws.save_npz(Files.MESH, **mesh.to_arrays())
    export_ply(ws, mesh)
    # A new mesh invalidates the per-face features of every teacher.
    state = ws.load_state()
    for name in [s for s in state["stages"] if s.startswith(Stages.FACE_FEATURES_PREFIX)]:
        state["stages"].pop(name)
    state["stages"][Stages.MESH] = {"done": True, "settings": settings, "n_faces": int(len(mesh.faces)),
                                    "mesh_id": mesh_id(mesh)}
    ws.save_state(state)
    return mesh


def export_ply(ws: Workspace, mesh: Mesh) -> Path:
    import trimesh

    colors = np.clip(mesh.vertex_colors * 255 + 0.5, 0, 255).astype(np.uint8)
    tm = trimesh.Trimesh(mesh.vertices, mesh.faces, vertex_colors=colors, process=False)
    return ws.write_bytes(Files.MESH_PLY, tm.export(file_type="ply"))


TEXTURE_ROWS = "top_first"  # row order of the stored texture, recorded with each bake


def bake_key(triangles: Triangles | None) -> str:
    """The key of a bake's files (`Files.bake`, `Files.texture`): empty for the workspace's mesh."""
    return "" if triangles is None else triangles.key


def run_bake(workspace: Workspace, size: int, reporter: Reporter, triangles: Triangles | None = None) -> Bake:
    """UV atlas and texture of the workspace's mesh, or of one object's own `triangles` on an
    atlas of their own; kept until what it was made from changes (the mesh; for triangles, the
    radiance field). Also writes the texture as a PNG (top row first) in the workspace."""
    if size not in TEXTURE_SIZES:
        raise WorkerError("bad_request", f"texture size {size} is not one of {TEXTURE_SIZES}",
                          "Pick 1024, 2048 or 4096 (512 for a quick look).")
    if triangles is None:
        mesh = load_mesh(workspace)
        vertices, faces = mesh.vertices, mesh.faces
        made_from = {"mesh": workspace.stage(Stages.MESH).get("settings")}
    else:
        vertices, faces = triangles.vertices, triangles.faces
        made_from = {"nerf_step": workspace.require(Stages.NERF, "the 'train' stage").get("step")}
    key = bake_key(triangles)
    stage, stored = Stages.bake(size, key), Files.bake(size, key)
    info = workspace.stage(stage)
    # Kept while every value it was made from is the one recorded with it.
    if info.get("done") and made_from.items() <= info.items() and workspace.path(stored).exists():
        with workspace.reading(stored):
            bake = Bake(**workspace.load_npz(stored))
        if info.get("rows") != TEXTURE_ROWS:  # baked when textures were stored bottom row first
            bake.texture = np.ascontiguousarray(bake.texture[::-1])
        return bake
    import trimesh
    from PIL import Image

    frame = SceneFrame.from_dict(workspace.load_state()["frame"])
    field, _ = load_field(workspace)
    vertices = frame.normalise_points(vertices).astype(np.float32)
    normals = trimesh.Trimesh(vertices, faces, process=False).vertex_normals
    bake = bake_texture(field, vertices, faces, np.asarray(normals, np.float32), size, reporter)
    workspace.save_npz(stored, **bake.to_arrays())
    png = io.BytesIO()
    Image.fromarray(bake.texture).save(png, format="PNG")
    workspace.write_bytes(Files.texture(size, key), png.getvalue())
    workspace.update_stage(stage, done=True, rows=TEXTURE_ROWS, **made_from)
    return bake


def run_features(scene: Scene, teacher: Teacher, config: FeatureConfig, reporter: Reporter) -> dict:
    """Distil a teacher into its feature field, then evaluate it at the mesh's face centroids."""
    ws = scene.workspace
    teacher_name = teacher.name
    stage = Stages.features(teacher_name)
    info = ws.stage(stage)
    if not (info.get("done") and info.get("step", 0) >= config.steps):
        if info.get("done"):
            ws.update_stage(stage, done=False)
        info = train_features(scene.dataset, scene.frame, ws, load_field(ws), teacher, config, reporter)
        ws.update_stage(Stages.face_features(teacher_name), done=False)
    # A missing file (a workspace from an older version, or deleted by hand) is rebuilt too.
    stored = ws.path(Files.face_features(teacher_name)).exists()
    if not (ws.stage(Stages.face_features(teacher_name)).get("done") and stored):
        model, teacher = load_features(ws, teacher_name)
        mesh = load_mesh(ws)
        centroids = scene.frame.normalise_points(mesh.vertices[mesh.faces].mean(1))
        codes = face_codes(model, centroids)
        if teacher.votes_on_faces:
            views = np.flatnonzero(scene.dataset.split == "train")
            codes = lift_classes(scene.dataset, mesh, codes, teacher.targets(scene.dataset, views),
                                 seen_tolerance(ws), reporter)
        ws.save_npz(Files.face_features(teacher_name), **codes.to_arrays())
        ws.update_stage(Stages.face_features(teacher_name), done=True, n_faces=int(len(mesh.faces)),
                        teacher=teacher.to_dict(), background=background_feature(model).tolist())
    return info


def train_all(workspace: Workspace, settings: TrainSettings, reporter: Reporter) -> tuple[Mesh, dict]:
    """NeRF, mesh and feature field, each resumed or skipped when already done."""
    scene = open_scene(workspace)
    # A missing label map or checkpoint fails now, not after the NeRF.
    teacher = make_teacher(settings.teacher, scene.dataset, settings.sam_checkpoint, settings.clip_model,
                           settings.clip_pretrained, device=device())
    use_augmentation(settings.features, teacher, device())
    reporter.progress("nerf", 0, settings.nerf.steps, message=describe(settings))
    nerf = run_nerf(scene, settings.nerf, reporter, settings.field)
    mesh = run_mesh(scene, settings.mesh, reporter)
    run_features(scene, teacher, settings.features, reporter)
    return mesh, {"psnr": nerf.get("psnr"), "n_faces": int(len(mesh.faces)), "teacher": settings.teacher,
                  "mesh_id": mesh_id(mesh)}


def run_split(workspace: Workspace, teacher: str = SPLIT["teacher"].default, label_set: str = SPLIT["label_set"].default,
              close: bool = SPLIT["close"].default, fill_holes: bool = SPLIT["fill_holes"].default,
              reporter: Reporter = SilentReporter()) -> Split:
    """The mesh cut into the objects the teacher's per-face features make of it (parts.assign),
    each closed (`close`), and the holes they leave in the background filled (`fill_holes`)."""
    partition = assign_parts(workspace, teacher, label_set, reporter)
    mesh = load_mesh(workspace)
    rim = rim_keys(mesh.faces, scene_walls(workspace, mesh.vertices))
    return split_mesh(mesh, partition, rim, close, fill_holes, reporter)
