"""Where the add-on's folders are: dataset, workspace and capture, as the worker receives them.

Nothing the add-on makes may live where Blender deletes it (`bpy.app.tempdir` goes on exit) or
where it cannot write (a read-only or shared dataset): those cases go under the extension's own
user folder. A remote worker gets its paths as typed: they name folders on its machine.
"""

from __future__ import annotations

import hashlib
import ntpath
import os
import posixpath
import time

import bpy

from . import ADDON_ID

WORKSPACE_DEFAULT = "dff_workspace"
CAPTURE_DEFAULT = "dff_capture"


class UserError(ValueError):
    """Bad input from the user; the operator reports the message."""


def data_folder(sub: str) -> str:
    """A folder of ours that Blender keeps: the extension's user folder, or, for an add-on
    registered outside the extension system, one in Blender's user data files."""
    try:
        return bpy.utils.extension_path_user(ADDON_ID, path=sub, create=True)
    except ValueError:  # not installed as an extension (a script or test registered it)
        return bpy.utils.user_resource('DATAFILES', path=os.path.join(ADDON_ID, sub), create=True)


def local_folder(path: str, what: str) -> str:
    """`path` (relative to the .blend when it starts with //) as an absolute local path."""
    if not path.strip():
        raise UserError(f"set the {what} folder first")
    return os.path.normpath(os.path.abspath(bpy.path.abspath(path)))


def worker_file(path: str, remote: bool) -> str:
    """A file path for the worker: as typed for a remote one, else absolute here."""
    return path.strip() if remote else bpy.path.abspath(path.strip())


def _remote_join(folder: str, name: str) -> str:
    """`folder`/`name` in the path style of the worker's machine, as `folder` shows it."""
    windows = "\\" in folder and "/" not in folder
    return (ntpath if windows else posixpath).join(folder.rstrip("/\\"), name)


def default_workspace(dataset: str) -> str:
    """<dataset>/dff_workspace when the dataset folder can be written, else a folder of ours
    named after the dataset (its path's hash keeps two datasets of one name apart)."""
    if os.access(dataset, os.W_OK):
        return os.path.join(dataset, WORKSPACE_DEFAULT)
    digest = hashlib.sha1(dataset.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return os.path.join(data_folder("workspaces"), f"{os.path.basename(dataset) or 'dataset'}-{digest}")


def resolve_paths(props: bpy.types.PropertyGroup, remote: bool) -> tuple[str, str]:
    """(dataset, workspace) as the worker must receive them. An empty workspace gets its
    default, stored so that the panel shows it and the .blend remembers it."""
    if remote:  # folders on the worker's machine: nothing to check or resolve here
        dataset = props.dataset_path.strip()
        if not dataset:
            raise UserError("set the dataset folder first (a path on the worker's machine)")
        if not props.workspace_path.strip():
            props.workspace_path = _remote_join(dataset, WORKSPACE_DEFAULT)
        return dataset, props.workspace_path.strip()
    dataset = local_folder(props.dataset_path, "dataset")
    if not os.path.isdir(dataset):
        raise UserError(f"dataset folder not found: '{dataset}'")
    if not props.workspace_path.strip():
        props.workspace_path = default_workspace(dataset)
    return dataset, local_folder(props.workspace_path, "workspace")


def workspace(props: bpy.types.PropertyGroup, remote: bool) -> str:
    """The workspace folder, which an import created (or a run before)."""
    if not props.workspace_path.strip() and props.dataset_path.strip():
        return resolve_paths(props, remote)[1]
    if remote:
        if not props.workspace_path.strip():
            raise UserError("set the workspace folder first (a path on the worker's machine)")
        return props.workspace_path.strip()
    return local_folder(props.workspace_path, "workspace")


def capture_folder(props: bpy.types.PropertyGroup) -> str:
    """The capture folder: as set; else dff_capture beside the saved .blend; for an unsaved
    file (whose temporary folder Blender deletes on exit) a new folder of ours."""
    if props.capture_path.strip():
        return local_folder(props.capture_path, "capture")
    if bpy.data.filepath:
        return os.path.join(os.path.dirname(bpy.data.filepath), CAPTURE_DEFAULT)
    return os.path.join(data_folder("captures"), time.strftime("capture-%Y%m%d-%H%M%S"))
