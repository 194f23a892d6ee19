"""What the add-on and the worker must agree on besides the framing (`framing.py`): shared
defaults and the plain words of each error code. bpy-free and torch-free: both sides import it.
"""

from __future__ import annotations

# The CLIP teacher used when none is named: the add-on's Train panel and the command line.
CLIP_MODEL = "ViT-B-16"
CLIP_PRETRAINED = "laion2b_s34b_b88k"
# Model name that builds a small CLIP with random weights (wiring tests only).
TINY_MODEL = "tiny"

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
