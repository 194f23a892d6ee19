"""The stages on a workspace: import -> NeRF -> mesh -> features -> queries.

Each stage reads what earlier stages left in the workspace and records itself in state.json,
so any stage can run alone (CLI) and a second run resumes instead of starting over.
Used by the command line (`__main__`) and by the server's handlers alike.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np


from .mesh.bake import TEXTURE_SIZES, Bake, bake_texture
from .datasets.dataset import TEST_EVERY, Dataset, check_trainable, load_dataset
from .errors import WorkerError
from .queries.click import ClickPrompt, Geometry, ViewRenderer, faces_in_box, sam_click
from .features.face_codes import FaceCodes
from .config import FeatureConfig, MeshConfig, TrainConfig, TrainSettings
from .features.train import (background_feature, face_codes, face_features_name, load_features, train_features,
                             use_augmentation)
from .mesh.extract import Cameras, Mesh, extract_mesh
from .nerf.train import device, load_field, train_nerf
from .progress import Reporter
from .geometry.frame import SceneFrame
from .queries.relevancy import split_terms
from .teachers.registry import TEACHER_TYPES, LabelsTeacher, SamFeatureTeacher, Teacher, make_teacher
from .workspace import Workspace, cached

MESH_FILE = "mesh.npz"
MESH_EXPORT = "mesh.ply"
DEFAULT_CLICK_VIEWS = 8  # training views a click is carried to (SAM teacher)


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


IMPORT_DEFAULTS = {"downscale": 1, "test_every": TEST_EVERY, "bounds": "auto"}


def import_dataset(dataset_path: str | Path, workspace: Workspace, downscale: int = 1,
                   test_every: int = TEST_EVERY, bounds: str = "auto", require_labels: bool = False) -> Dataset:
    """Validate a dataset and bind the workspace to it (see `load_dataset` for the options).
    Re-importing the same dataset with the same options keeps the trained stages; importing
    another one, or the same with other options, into a used workspace is refused."""
    dataset = load_dataset(dataset_path, downscale=downscale, test_every=test_every, bounds=bounds,
                           require_labels=require_labels)
    check_trainable(dataset)
    state = workspace.load_state()
    source = {"path": str(Path(dataset_path).expanduser().resolve()), "downscale": downscale,
              "test_every": test_every, "bounds": bounds}
    bound = {**IMPORT_DEFAULTS, **state["dataset"]} if "dataset" in state else None
    if bound not in (None, source):
        options = ", ".join(f"{key} {bound[key]}" for key in IMPORT_DEFAULTS)
        raise WorkerError("workspace_in_use", f"the workspace {workspace.root} belongs to {bound['path']} "
                          f"imported with {options}",
                          "Pick an empty workspace folder for a new dataset or other import options.")
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
    source = {**IMPORT_DEFAULTS, **state["dataset"]}  # workspaces made before an option existed
    dataset = load_dataset(source["path"], downscale=source["downscale"], test_every=source["test_every"],
                           bounds=source["bounds"])
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


def bake_name(size: int) -> str:
    return f"bake_{size}.npz"


def texture_name(size: int) -> str:
    return f"texture_{size}.png"


def run_bake(workspace: Workspace, size: int, reporter: Reporter) -> Bake:
    """UV atlas and texture of the workspace's mesh (kept until the mesh changes); also writes
    the texture as a PNG (top row first) in the workspace."""
    if size not in TEXTURE_SIZES:
        raise WorkerError("bad_request", f"texture size {size} is not one of {TEXTURE_SIZES}",
                          "Pick 1024, 2048 or 4096 (512 for a quick look).")
    mesh = load_mesh(workspace)
    stage, mesh_settings = f"bake_{size}", workspace.stage("mesh").get("settings")
    info = workspace.stage(stage)
    if info.get("done") and info.get("mesh") == mesh_settings and workspace.path(bake_name(size)).exists():
        return Bake(**workspace.load_npz(bake_name(size)))
    import trimesh
    from PIL import Image

    frame = SceneFrame.from_dict(workspace.load_state()["frame"])
    field, _ = load_field(workspace)
    vertices = frame.normalise_points(mesh.vertices).astype(np.float32)
    normals = trimesh.Trimesh(vertices, mesh.faces, process=False).vertex_normals
    bake = bake_texture(field, vertices, mesh.faces, np.asarray(normals, np.float32), size, reporter)
    workspace.save_npz(bake_name(size), **bake.to_arrays())
    png = io.BytesIO()
    Image.fromarray(bake.texture[::-1]).save(png, format="PNG")
    workspace.write_bytes(texture_name(size), png.getvalue())
    workspace.update_stage(stage, done=True, mesh=mesh_settings)
    return bake


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
    # A missing file (a workspace from an older version, or deleted by hand) is rebuilt too.
    stored = ws.path(face_features_name(teacher_name)).exists()
    if not (ws.stage(f"face_features_{teacher_name}").get("done") and stored):
        model, teacher = load_features(ws, teacher_name)
        mesh = load_mesh(ws)
        centroids = scene.frame.normalise_points(mesh.vertices[mesh.faces].mean(1))
        ws.save_npz(face_features_name(teacher_name), **face_codes(model, centroids).to_arrays())
        ws.update_stage(f"face_features_{teacher_name}", done=True, n_faces=int(len(mesh.faces)),
                        teacher=teacher.to_dict(), background=background_feature(model).tolist())
    return info


def train_all(workspace: Workspace, settings: TrainSettings, reporter: Reporter) -> tuple[Mesh, dict]:
    """NeRF, mesh and feature field, each resumed or skipped when already done."""
    scene = open_scene(workspace)
    # A missing label map or checkpoint fails now, not after the NeRF.
    teacher = make_teacher(settings.teacher, scene.dataset, settings.sam_checkpoint, settings.clip_model,
                           settings.clip_pretrained)
    use_augmentation(settings.features, teacher, device())
    nerf = run_nerf(scene, settings.nerf, reporter)
    mesh = run_mesh(scene, settings.mesh, reporter)
    run_features(scene, teacher, settings.features, reporter)
    return mesh, {"psnr": nerf.get("psnr"), "n_faces": int(len(mesh.faces)), "teacher": settings.teacher}


@dataclass
class FaceFeatures:
    """One teacher's per-face features with the teacher that reads them."""

    teacher: Teacher
    features: FaceCodes
    background: np.ndarray | None


def load_face_features(workspace: Workspace, teacher: str) -> FaceFeatures:
    info = workspace.require(f"face_features_{teacher}", f"feature training with the '{teacher}' teacher")
    if not workspace.path(face_features_name(teacher)).exists():
        raise WorkerError("stage_missing", f"the per-face features of the '{teacher}' teacher are missing from "
                          f"{workspace.root}", "Press Train again: only the per-face step runs.")

    def load(path: Path) -> FaceFeatures:
        # Kept per process, so the teacher (a SAM model) is loaded once, not per click.
        background = np.asarray(info["background"], np.float32) if "background" in info else None
        with np.load(path, allow_pickle=False) as arrays:
            codes = FaceCodes(**{k: arrays[k] for k in ("code", "weight", "bias", "norm")})
        return FaceFeatures(TEACHER_TYPES[teacher].from_dict(info["teacher"]), codes, background)

    return cached(workspace.path(face_features_name(teacher)), load)


def load_geometry(workspace: Workspace) -> Geometry:
    workspace.require("mesh", "the mesh stage")
    return cached(workspace.path(MESH_FILE), lambda path: Geometry.of(**{
        k: v for k, v in workspace.load_npz(MESH_FILE).items() if k in ("vertices", "faces")}))


def query_text(workspace: Workspace, text: str, teacher: str = "labels", negatives: list[str] | None = None,
               label_set: list[str] | None = None) -> np.ndarray:
    """Per-face relevancy (F,) float32 of `text` (comma-separated phrases select their union),
    against `negatives` or within `label_set` (see relevancy); above 0.5 the query wins."""
    terms = split_terms(text)
    ff = load_face_features(workspace, teacher)
    return ff.teacher.query_text(terms, ff.features, negatives, label_set).astype(np.float32)


@dataclass
class ClickResult:
    query: str               # what the selection is called: a label name, or "click"
    hit_face: int            # the face under the first click (-1 for a box alone)
    probability: np.ndarray  # (F,) float32
    views: int               # views that voted (1 without cross-view prompting)


def query_click(workspace: Workspace, prompt: ClickPrompt, teacher: str = "labels",
                views: int = DEFAULT_CLICK_VIEWS) -> ClickResult:
    """The object under clicks and a box given as world-frame rays.

    With `sam`, SAM's decoder runs on features rendered from the mesh, in the clicked view and
    in `views` training views turned towards the object. With `labels`, the labels of the faces
    hit by the object clicks (and most often inside the box) are selected, minus those of the
    background clicks."""
    g = load_geometry(workspace)
    ff = load_face_features(workspace, teacher)
    if not isinstance(ff.teacher, (LabelsTeacher, SamFeatureTeacher)):
        raise WorkerError("unsupported_query", f"the {teacher} teacher answers text, not clicks",
                          "Train the sam teacher (or labels) for the Click tool, or type a query.")
    cast = [g.hit(o, d) for o, d in zip(prompt.origins, prompt.directions)]
    hits, depths = [face for face, _ in cast], np.array([t for _, t in cast], np.float64)
    main_hit = next((h for h, label in zip(hits, prompt.labels) if label == 1), -1)
    tolerance = 3 * mesh_voxel(workspace)
    if prompt.box_origins is not None:
        in_box = faces_in_box(g, prompt, tolerance)
        if not in_box.any():
            raise WorkerError("no_hit", "the box holds nothing of the mesh", "Drag the box around part of the mesh.")
    elif main_hit < 0:
        raise WorkerError("no_hit", "nothing of the mesh under the cursor", "Click on the mesh.")
    if isinstance(ff.teacher, SamFeatureTeacher):
        renderer = ViewRenderer(g, ff.features, ff.background, tolerance)
        cameras = workspace.load_npz("cameras.npz")
        eyes = cameras["c2w"][cameras["split"] == "train"][:, :3, 3]
        probability, used = sam_click(ff.teacher.model, renderer, prompt, eyes, views, depths)
        return ClickResult("click", main_hit, probability, used)
    label_of = ff.teacher.face_labels(ff.features)
    wanted = {int(label_of[h]) for h, label in zip(hits, prompt.labels) if label == 1 and h >= 0}
    if prompt.box_origins is not None:
        wanted.add(int(np.bincount(label_of[in_box]).argmax()))
    wanted -= {int(label_of[h]) for h, label in zip(hits, prompt.labels) if label == 0 and h >= 0}
    if not wanted:
        raise WorkerError("empty_selection", "the background clicks removed every object that was clicked",
                          "Click on the object without Ctrl, or on another object.")
    name, probability = ff.teacher.query_labels(sorted(wanted), ff.features)
    return ClickResult(name, main_hit, probability.astype(np.float32), 1)


def query_similar(workspace: Workspace, selected: np.ndarray, teacher: str = "labels") -> np.ndarray:
    """DFF's patch query: cosine similarity (clipped to [0, 1]) of every face's feature with the
    mean feature of the selected faces."""
    ff = load_face_features(workspace, teacher)
    if selected.shape != (len(ff.features),):
        raise WorkerError("bad_request", f"'selected' has shape {selected.shape}, the mesh has {len(ff.features)} "
                          "faces", "Send one boolean per face of the workspace's mesh.")
    if not selected.any():
        raise WorkerError("empty_selection", "no faces are selected", "Select some faces first.")
    embedded = ff.teacher.embed(ff.features.rows(np.flatnonzero(selected)))
    mean = (embedded / np.linalg.norm(embedded, axis=1, keepdims=True).clip(1e-8)).mean(0)
    mean /= max(np.linalg.norm(mean), 1e-8)
    return np.clip(ff.teacher.similarity(ff.features, mean), 0, 1).astype(np.float32)
