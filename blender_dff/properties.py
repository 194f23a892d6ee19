"""Per-scene state at `Scene.dff`: paths, training settings, the training curve, the latest query.
A running job's progress is runtime state (`jobs`), which undo must not touch."""

from __future__ import annotations

import bpy
from bpy.props import (
    BoolProperty,
    CollectionProperty,
    EnumProperty,
    FloatProperty,
    IntProperty,
    PointerProperty,
    StringProperty,
)

from .ui import messages
from .scene import selection
from .wire import api as wire_api

# The wire's parameters whose defaults and ranges the properties take.
_IMPORT, _TRAIN, _BAKE = wire_api.IMPORT_DATASET, wire_api.TRAIN, wire_api.BAKE


def _enum_items(choices: tuple, words: dict) -> list[tuple[str, str, str]]:
    """Enum items of the wire's `choices`, named and described by `words`: {choice: (name, description)}."""
    return [(str(choice), *words[choice]) for choice in choices]


_IMAGE_SCALE_ITEMS = _enum_items(wire_api.IMAGE_SCALES, {
    1: ("1/1", "Full size"), 2: ("1/2", "Half size"), 4: ("1/4", "Quarter size"), 8: ("1/8", "Eighth size")})
_BOUNDS_ITEMS = _enum_items(wire_api.BOUNDS, {
    "auto": ("Auto", "Decide from the cameras: 360-degree captures without masks are unbounded"),
    "box": ("Box", "Everything to reconstruct lies inside the box around the object or views"),
    "unbounded": ("Unbounded", "Also model the background beyond the box (scene contraction)"),
})
_TEACHER_ITEMS = _enum_items(wire_api.TEACHERS, {
    "labels": ("Labels", "Per-image label maps shipped with the dataset"),
    "sam": ("SAM", "Segment Anything's image encoder, for clicks (needs a checkpoint)"),
    "clip": ("CLIP", "open_clip's dense features, for text queries (MaskCLIP)"),
})
_PRESET_ITEMS = _enum_items(wire_api.PRESETS, {
    "preview": ("Preview", "A quick look: a few minutes on a CPU, about a minute on a GPU"),
    "standard": ("Standard", "Good quality for the worker's device (on a GPU: instant-NGP's field)"),
    "high": ("High", "Finer field and mesh, several times longer than Standard"),
})
# 512 is left to the command line, for a quick look.
_TEXTURE_SIZE_ITEMS = [(str(size), f"{size // 1024}K", f"{size} x {size}") for size in wire_api.TEXTURE_SIZES
                       if size >= 1024]


def _threshold_changed(self: DFFSceneProperties, context: bpy.types.Context) -> None:
    # Re-thresholds the stored probabilities and recolours the heat map only: moving a slider
    # must not ask the worker.
    if not self.active_query:
        return
    try:
        obj = selection.queried_object(context)
        count = selection.apply_threshold(context, obj, self.active_query, self.threshold)
    except ValueError as exc:
        self.show_error({"code": "threshold", "message": str(exc)})
        return
    self.show_message(f"'{self.active_query}': {count} faces above {self.threshold:.2f}")


def _is_mesh(self: DFFSceneProperties, obj: bpy.types.Object) -> bool:
    return obj.type == 'MESH'


class DFFLabel(bpy.types.PropertyGroup):
    """One label name of the imported dataset (a possible text query)."""


class DFFCurvePoint(bpy.types.PropertyGroup):
    """One point of the training curve: the training PSNR (smoothed) at a step."""

    step: IntProperty(name="Step", min=0)
    psnr: FloatProperty(name="PSNR")


CURVE_POINTS = 256  # the curve keeps at most this many points, thinned evenly as training goes on


class DFFSceneProperties(bpy.types.PropertyGroup):
    """Everything the DFF panels show and the operators use, stored in the .blend."""

    dataset_path: StringProperty(
        name="Dataset",
        description="Folder with the posed photos (transforms.json, COLMAP or LLFF)",
        subtype='DIR_PATH',
    )
    workspace_path: StringProperty(
        name="Workspace",
        description="Folder where the worker keeps checkpoints, mesh and features; "
                    "empty for <dataset>/dff_workspace",
        subtype='DIR_PATH',
    )
    image_scale: EnumProperty(
        name="Image Scale", description="Train on the photos at this fraction of their size "
                                        "(images_N folders are used when the dataset has them)",
        items=_IMAGE_SCALE_ITEMS,
        default=str(_IMPORT["downscale"].default),
    )
    test_every: IntProperty(
        name="Hold Out Every", description="Keep every Nth photo out of training to measure quality "
                                           "(0: train on all; datasets with a test split keep theirs)",
        default=_IMPORT["test_every"].default, min=_IMPORT["test_every"].low, soft_max=64)
    bounds: EnumProperty(
        name="Bounds", description="Whether the scene ends at its box",
        items=_BOUNDS_ITEMS,
        default=_IMPORT["bounds"].default,
    )
    set_render_size: BoolProperty(
        name="Set Render Size", default=True,
        description="Make the scene's render resolution the photos' on import (needed to look "
                    "through the imported cameras at the photos' framing)")
    capture_path: StringProperty(
        name="Capture Folder",
        description="Empty folder the captured views are rendered into; empty for dff_capture "
                    "beside the .blend (or in the temporary folder for an unsaved file)",
        subtype='DIR_PATH',
    )
    capture_source: EnumProperty(
        name="Views", description="Where the capture's cameras come from",
        items=[('ORBIT', "Orbit", "Cameras on a hemisphere around the selected meshes (or all meshes)"),
               ('SCENE', "Scene Cameras", "The scene's own cameras, at the render aspect ratio")],
        default='ORBIT',
    )
    capture_views: IntProperty(
        name="Orbit Views", description="Number of training views of an orbit (plus 1 in 8 for testing)",
        default=60, min=4, soft_max=300)
    capture_resolution: IntProperty(
        name="Resolution", description="Longest side of the captured images, in pixels",
        default=256, min=16, soft_max=2048)
    capture_samples: IntProperty(
        name="Samples", description="Cycles samples per pixel of the captured views",
        default=32, min=1, soft_max=1024)
    n_images: IntProperty(name="Images", min=0)
    labels: CollectionProperty(type=DFFLabel)

    teacher: EnumProperty(
        name="Teacher",
        description="2D model whose features the 3D feature field imitates",
        items=_TEACHER_ITEMS,
        default=_TRAIN["teacher"].default,
    )
    clip_model: StringProperty(
        name="CLIP Model",
        description="open_clip model name (a ViT, e.g. ViT-B-16, ViT-L-14, or a multilingual one "
                    "such as xlm-roberta-base-ViT-B-32 for non-English queries)",
        default=_TRAIN["clip_model"].default,
    )
    clip_pretrained: StringProperty(
        name="Pretrained",
        description="open_clip pretrained tag (downloaded once, needs Allow Online Access) or "
                    "the path of a checkpoint file",
        default=_TRAIN["clip_pretrained"].default,
    )
    sam_checkpoint: StringProperty(
        name="SAM Checkpoint",
        description="segment-anything checkpoint file (vit_h, vit_l or vit_b; the type is read "
                    "from the file)",
        subtype='FILE_PATH',
    )
    preset: EnumProperty(
        name="Quality",
        description="How long to train and how fine the field and the mesh are; the worker picks "
                    "the numbers for its GPU or CPU",
        items=_PRESET_ITEMS,
        default=_TRAIN["preset"].default,
    )
    custom_settings: BoolProperty(
        name="Custom Settings",
        description="Set the steps and the mesh resolution here instead of taking the preset's",
        default=False,
    )
    # Sent only with Custom Settings; the defaults are the CPU's Standard preset.
    nerf_steps: IntProperty(
        name="NeRF Steps", description="Training steps of the radiance field",
        default=wire_api.DEFAULT_NERF_STEPS, min=_TRAIN["nerf_steps"].low, soft_max=100000)
    feature_steps: IntProperty(
        name="Feature Steps", description="Training steps of the feature field",
        default=wire_api.DEFAULT_FEATURE_STEPS, min=_TRAIN["feature_steps"].low, soft_max=100000)
    mesh_resolution: IntProperty(
        name="Mesh Resolution", description="Marching-cubes grid size per axis",
        default=wire_api.DEFAULT_MESH_RESOLUTION, min=_TRAIN["mesh_resolution"].low,
        max=_TRAIN["mesh_resolution"].high)
    max_faces: IntProperty(
        name="Face Budget", description="Decimate the mesh to at most this many faces (0 keeps "
                                        "every face marching cubes makes)",
        default=_TRAIN["max_faces"].default, min=_TRAIN["max_faces"].low, soft_max=2_000_000)

    texture_size: EnumProperty(
        name="Texture Size", description="Width and height of the baked texture",
        items=_TEXTURE_SIZE_ITEMS,
        default=str(_BAKE["size"].default),
    )

    training_curve: CollectionProperty(type=DFFCurvePoint, name="Training Curve")
    # The scene's own data, by pointer: another scene's import, training or bake leaves it alone
    # (Blender suffixes the names of a second scene's copies).
    cameras: PointerProperty(name="Cameras", type=bpy.types.Collection,
                             description="The collection holding this scene's imported cameras")
    preview_image: PointerProperty(name="Training Preview", type=bpy.types.Image)
    curve_image: PointerProperty(name="Training Curve", type=bpy.types.Image)
    message: StringProperty(name="Message", description="Outcome of the latest request")
    error_code: StringProperty(name="Error Code")
    error: StringProperty(name="Error")
    error_hint: StringProperty(name="Hint")

    mesh_object: PointerProperty(
        name="Mesh", description="The mesh extracted by the worker", type=bpy.types.Object,
        poll=_is_mesh)
    query_object: PointerProperty(
        name="Queried", description="The DFF mesh (or part of it) the latest query selected on",
        type=bpy.types.Object, poll=_is_mesh)
    query_text: StringProperty(
        name="Query", description="What to select, e.g. 'chair' or 'cup, saucer' (their union)")
    text_mode: EnumProperty(
        name="Compare",
        description="What a text query is weighed against (CLIP teacher)",
        items=[('NEGATIVES', "Negatives", "Relevancy against generic words (LERF): selected "
                "where the query beats every one of them"),
               ('LABEL_SET', "Label Set", "Softmax over a list of labels (DFF): selected where "
                "the query wins")],
        default='NEGATIVES',
    )
    negatives: StringProperty(
        name="Negatives", description="Comma-separated phrases a query must beat",
        default=", ".join(wire_api.CANONICAL_NEGATIVES))
    label_set: StringProperty(
        name="Labels", description="Comma-separated labels of the scene, e.g. 'chair, table, "
                                   "floor, wall' (the query joins them)")
    active_query: StringProperty(
        name="Active Query", description="Query whose probabilities the mesh holds")
    threshold: FloatProperty(
        name="Threshold", description="Faces with a higher probability are selected",
        default=0.5, min=0.0, max=1.0, subtype='FACTOR', update=_threshold_changed)

    def show_message(self, text: str) -> None:
        """Record the outcome of a request (and clear the previous error)."""
        self.message = text
        self.error_code = self.error = self.error_hint = ""
        print(f"DFF: {text}")

    def show_error(self, error: dict) -> None:
        """Record a structured error {code, message, hint} for the panel."""
        self.error_code = str(error.get("code", ""))
        self.error = str(error.get("message", ""))
        self.error_hint = str(error.get("hint") or "")
        self.message = ""
        print(f"DFF error [{self.error_code}]: {self.error} {self.error_hint}".rstrip())
        messages.report('ERROR', f"{wire_api.error_title(self.error_code)}: {self.error}")

    def record_curve(self, step: int, psnr: float) -> None:
        """Add a point to the training curve (kept in the file: the curve outlives the job)."""
        curve = self.training_curve
        if len(curve) and step <= curve[-1].step:
            curve.clear()  # training started over; a resumed run goes on from the last step
        if len(curve) >= CURVE_POINTS:
            for i in range(len(curve) - 2, 0, -2):  # every other point, keeping the first and last
                curve.remove(i)
        point = curve.add()
        point.step, point.psnr = step, psnr


_CLASSES = (DFFLabel, DFFCurvePoint, DFFSceneProperties)


def register() -> None:
    for cls in _CLASSES:
        bpy.utils.register_class(cls)
    bpy.types.Scene.dff = PointerProperty(type=DFFSceneProperties)


def unregister() -> None:
    del bpy.types.Scene.dff
    for cls in reversed(_CLASSES):
        bpy.utils.unregister_class(cls)
