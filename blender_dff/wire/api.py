"""What the add-on and the worker must agree on besides the framing (`framing.py`): the methods
and each one's parameters (key, type, default, range or choices), the choices and defaults both
sides share, and the plain words of each error code. The add-on builds its properties and
requests from it, the worker checks requests and sets its command line's defaults with it.
bpy-free and torch-free (stdlib only): both sides import it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# The environment variable holding the token: the worker takes it from there (never from its
# command line, where `ps` shows it), and the add-on reads it for a remote worker left empty.
TOKEN_ENV = "DFF_WORKER_TOKEN"

# --- choices both sides offer -----------------------------------------------------------

TEACHERS = ("labels", "sam", "clip")  # the 2D models a feature field can be distilled from
BOUNDS = ("auto", "box", "unbounded")  # where the scene ends (auto: decided from the cameras)
IMAGE_SCALES = (1, 2, 4, 8)  # image downscale factors the add-on offers (images_N folders)
TEXTURE_SIZES = (512, 1024, 2048, 4096)  # baked texture widths (512 for a quick look)
AUGMENT_MODES = ("auto", "on", "off")  # camera augmentation of feature training
PRESETS = ("preview", "standard", "high")  # training quality; the worker picks the numbers for its device

# --- defaults: each written here once ---------------------------------------------------

DEFAULT_DOWNSCALE = 1
TEST_EVERY = 8  # every 8th view is held out for testing, as in LLFF and NeRF practice
DEFAULT_BOUNDS = "auto"
DEFAULT_NERF_STEPS = 2000
DEFAULT_FEATURE_STEPS = 600
DEFAULT_MESH_RESOLUTION = 256
DEFAULT_MAX_FACES = 0  # 0 keeps every face marching cubes makes
DEFAULT_TEACHER = "labels"
DEFAULT_PRESET = "standard"
DEFAULT_TEXTURE_SIZE = 2048
DEFAULT_CLICK_VIEWS = 8  # training views a click is carried to (SAM teacher)
CANONICAL_NEGATIVES = ("object", "things", "stuff", "texture")  # what a text query must beat (LERF)
# The CLIP teacher used when none is named: the add-on's Train panel and the command line.
CLIP_MODEL = "ViT-B-16"
CLIP_PRETRAINED = "laion2b_s34b_b88k"
# Model name (CLIP) or checkpoint (SAM) that builds a small model with random weights (wiring tests only).
TINY_MODEL = "tiny"

# --- methods and their parameters -------------------------------------------------------

# Kinds of parameter value. PATH: a non-empty text, a path on the worker's machine (confined to
# its root folder); VECTOR: 3 finite numbers; RECORDS: a list of objects, each with `fields`.
TEXT, INT, FLAG, PATH, VECTOR, RECORDS = "text", "int", "flag", "path", "vector", "records"


@dataclass(frozen=True)
class Param:
    """One parameter of a request. A missing one takes `default`; without a default (None) it
    is absent and the stage decides, unless it is `required`."""

    key: str
    kind: str
    default: Any = None
    required: bool = False
    low: int | None = None  # an INT's range, both ends included
    high: int | None = None
    # The values the worker accepts; the stage that uses one checks it, with its own error.
    choices: tuple = ()
    max_len: int = 4096  # characters of a TEXT or PATH, objects of RECORDS
    fields: tuple[Param, ...] = ()  # the parameters of each object of RECORDS


@dataclass(frozen=True)
class Method:
    """A request the worker answers: its name on the wire, its parameters and the arrays it carries."""

    name: str
    params: tuple[Param, ...] = ()
    arrays: tuple[str, ...] = ()

    def __getitem__(self, key: str) -> Param:
        for param in self.params:
            if param.key == key:
                return param
        raise KeyError(f"'{self.name}' has no parameter {key!r}")

    def defaults(self) -> dict[str, Any]:
        """The parameters that have a default, with it, in the record's order."""
        return {p.key: p.default for p in self.params if p.default is not None}

    def request(self, **params: Any) -> dict[str, Any]:
        """The params of a request, their keys (and those of each record) checked against
        the method's: a misspelt key fails where the request is built, not on the worker."""
        _check_keys(self.name, self.params, params)
        return params


def _check_keys(where: str, specs: tuple[Param, ...], values: dict) -> None:
    known = {p.key: p for p in specs}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise KeyError(f"'{where}' has no parameter {', '.join(unknown)}")
    for key, value in values.items():
        if known[key].kind == RECORDS:
            for record in value:
                _check_keys(f"{where}.{key}", known[key].fields, record)


PING = Method("ping")
SHUTDOWN = Method("shutdown")
BUILTINS = (PING, SHUTDOWN)  # answered by the server itself, not by a handler

_WORKSPACE = Param("workspace", PATH, required=True)
_TEACHER = Param("teacher", TEXT, DEFAULT_TEACHER, choices=TEACHERS, max_len=64)
_RAY = (Param("origin", VECTOR, required=True), Param("direction", VECTOR, required=True))  # world frame
# The id of the mesh a request about faces is for (the train and get_mesh replies' "mesh_id"):
# refused when the workspace's mesh is another. Absent: the workspace's current mesh.
_MESH_ID = Param("mesh_id", TEXT, max_len=64)

IMPORT_DATASET = Method("import_dataset", (
    Param("dataset", PATH, required=True),
    _WORKSPACE,
    Param("downscale", INT, DEFAULT_DOWNSCALE, low=1, high=64),
    Param("test_every", INT, TEST_EVERY, low=0, high=1_000_000),
    Param("bounds", TEXT, DEFAULT_BOUNDS, choices=BOUNDS, max_len=16),
))
TRAIN = Method("train", (
    _WORKSPACE,
    Param("preset", TEXT, DEFAULT_PRESET, choices=PRESETS),
    # Absent: the preset's value for the worker's device.
    Param("nerf_steps", INT, low=1, high=1_000_000),
    Param("mesh_resolution", INT, low=16, high=1024),
    Param("max_faces", INT, DEFAULT_MAX_FACES, low=0, high=100_000_000),
    Param("feature_steps", INT, low=1, high=1_000_000),
    _TEACHER,
    Param("sam_checkpoint", TEXT, ""),  # a checkpoint file (a path), or TINY_MODEL
    Param("clip_model", TEXT, CLIP_MODEL, max_len=200),
    Param("clip_pretrained", TEXT, CLIP_PRETRAINED, max_len=1000),  # a tag, or a checkpoint file
))
BAKE = Method("bake", (
    _WORKSPACE,
    Param("size", INT, DEFAULT_TEXTURE_SIZE, low=1, high=1 << 16, choices=TEXTURE_SIZES),
    _MESH_ID,
), arrays=("vertices", "faces"))  # optional: one object's own triangles (world frame) to bake on their own atlas
GET_MESH = Method("get_mesh", (_WORKSPACE,))
QUERY_TEXT = Method("query_text", (
    _WORKSPACE,
    Param("text", TEXT, required=True, max_len=1000),
    Param("negatives", TEXT),  # comma-separated phrases; absent: CANONICAL_NEGATIVES
    Param("label_set", TEXT, ""),  # comma-separated labels: a softmax over them instead
    _TEACHER,
    _MESH_ID,
))
QUERY_CLICK = Method("query_click", (
    _WORKSPACE,
    # At least one click, unless a box is given.
    Param("clicks", RECORDS, (), max_len=64, fields=(*_RAY, Param("object", FLAG, True))),
    Param("box", RECORDS, max_len=4, fields=_RAY),  # the rays through its corners, in order around it
    _TEACHER,
    Param("views", INT, DEFAULT_CLICK_VIEWS, low=0, high=32),
    _MESH_ID,
))
QUERY_SIMILAR = Method("query_similar", (_WORKSPACE, _TEACHER, _MESH_ID),
                       arrays=("selected",))  # one bool per face of the workspace's mesh
# The whole mesh cut into named objects, every face in exactly one (the last is BACKGROUND_PART).
# Reply: "names", "closed" (one flag per name: watertight with its patch faces; the background's
# is false while the scene's outer rim is open), "n_faces"; arrays "face_part" (one object index
# per face, int32), and the faces that close the objects and fill the background's holes:
# "patch_vertices" (new vertices, world frame, float32), "patch_colors" (their RGB, uint8),
# "patch_faces" (int32 indices into the mesh's vertices followed by the patch's), "patch_part"
# (int32, the object each patch face belongs to).
SPLIT = Method("split", (
    _WORKSPACE,
    _TEACHER,
    Param("label_set", TEXT, "", max_len=1000),  # clip: the names to cut into, comma-separated
    Param("close", FLAG, True),       # close each object's open boundary
    Param("fill_holes", FLAG, True),  # fill where the objects met the background
    _MESH_ID,
))
BACKGROUND_PART = "background"

# Every method a handler answers, by name.
METHODS = {m.name: m for m in (IMPORT_DATASET, TRAIN, BAKE, GET_MESH, QUERY_TEXT, QUERY_CLICK, QUERY_SIMILAR,
                               SPLIT)}

# --- errors -----------------------------------------------------------------------------

# Error code -> what it means, in plain words, as the add-on shows it above the message.
ERROR_TITLES = {
    "apply_failed": "Blender could not apply the worker's answer",
    "auth_failed": "The worker refused the token",
    "bad_checkpoint": "The model checkpoint cannot be used",
    "bad_clip_model": "The CLIP model cannot be used",
    "bad_dataset": "The dataset cannot be read",
    "bad_message": "The worker received a malformed message",
    "bad_prompt": "The click or box cannot be used",
    "bad_request": "The request was refused",
    "bad_workspace": "The workspace folder cannot be used",
    "busy": "The worker is busy with another job",
    "cancelled": "Cancelled",
    "capture_failed": "Rendering the capture failed",
    "closed": "The worker connection was closed",
    "empty_mesh": "The mesh came out empty",
    "empty_query": "The query is empty",
    "empty_selection": "Nothing is selected",
    "import_failed": "The import could not start",
    "internal": "The worker hit an unexpected error",
    "no_hit": "Nothing of the mesh is under the cursor",
    "path_not_allowed": "The worker may not open that path",
    "query_too_long": "The query is too long",
    "stage_missing": "An earlier stage has not run yet",
    "stale_mesh": "The mesh is not the workspace's current mesh",
    "threshold": "The threshold could not be applied",
    "unknown_label": "No such label in the dataset",
    "unknown_method": "The worker does not know this request",
    "unknown_model_type": "Unknown model type",
    "unknown_teacher": "Unknown teacher",
    "unsupported_query": "This teacher cannot answer this query",
    "worker_exited": "The worker stopped",
    "worker_start_failed": "The worker could not be started",
    "version_mismatch": "The worker is another version of DFF",
    "workspace_in_use": "The workspace is in use by another job",
}


def error_title(code: str) -> str:
    """The plain words of `code`; an unknown code reads as its words."""
    return ERROR_TITLES.get(code) or code.replace("_", " ").capitalize() or "Error"
