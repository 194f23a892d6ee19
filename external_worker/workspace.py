"""The workspace folder of one scene: everything a stage produces, written atomically; and the
`Confinement` that holds the files the worker opens for a client to the server's root folder.

Its files and the stage keys of state.json are named here only (`Files`, `Stages`):
    state.json              dataset path, scene frame, what each stage has done
    cameras.npz             imported cameras (world frame)
    nerf.pt                 radiance field + occupancy grid + optimiser (resumable)
    mesh.npz / mesh.ply     extracted mesh (world frame) with vertex colours
    features_<teacher>.pt   feature field of one teacher (resumable)
    face_features_<teacher>.npz   per-face features as fp16 codes of the field's last layer
                            (`features.face_codes.FaceCodes`), one row per mesh face
    bake_<size>.npz / texture_<size>.png   UV atlas and baked texture (top row first)
    bake_<size>_<key>.npz / texture_<size>_<key>.png   the same for one object's own triangles
                            (key: a digest of them, `mesh.bake.Triangles.key`)
"""

from __future__ import annotations

import io
import json
import math
import os
import tempfile
import threading
import zipfile
from collections import OrderedDict
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

import numpy as np

from .errors import WorkerError

STATE_VERSION = 1
CACHED_FILES = 4  # per process: the mesh and one teacher's face features, with room to switch
DAMAGED_HINT = ("The file is damaged (a full disk, a copy cut short): delete it and run the stage that "
                "writes it again, or import into a new workspace folder.")
STATE_HINT = "Delete the workspace folder (or pick another one) and import the dataset again."


def _file_mode() -> int:
    """The mode open() gives a new file: 0o666 less the umask, which only setting it can read.
    Read once, at import: the umask belongs to the whole process, other threads included."""
    umask = os.umask(0o077)
    os.umask(umask)
    return 0o666 & ~umask


FILE_MODE = _file_mode()


class Confinement:
    """Where the files the worker opens for a client may lie: inside `root` (the server's --root)
    once links are followed, or anywhere when `root` is None (the command line, a worker on
    loopback without --root). Every path a request names, and every file a dataset or a
    workspace leads to, passes `check` before it is opened or probed."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = None if root is None else Path(root).resolve()

    def check(self, path: str | Path) -> Path:
        """`path` with its links followed, refused with `path_not_allowed` when it lies outside
        the root or cannot be followed. An outside path gets the same refusal whether it exists
        or not, and the refusal names it as given, not where its links lead."""
        try:
            resolved = Path(path).expanduser().resolve()
        except (OSError, RuntimeError) as exc:  # a link loop, an unknown ~user
            if self.root is not None:  # the loop may lie outside: say no more than for any outside path
                raise self._outside(path) from None
            raise self._unfollowable(path, exc) from None
        if self.root is not None and not resolved.is_relative_to(self.root):
            raise self._outside(path)
        try:
            os.lstat(resolved)
        except (FileNotFoundError, NotADirectoryError):
            pass  # absent: the caller says what it looked for
        except OSError as exc:  # a name too long, a folder on the way that may not be searched
            raise self._unfollowable(path, exc) from None
        return resolved

    def is_file(self, path: Path) -> bool:
        """Whether `path` is a file, asked only once it is known to be allowed: a link out of the
        root is refused whether or not its target exists."""
        return self.check(path).is_file()

    def is_dir(self, path: Path) -> bool:
        return self.check(path).is_dir()

    def _outside(self, path: str | Path) -> WorkerError:
        return WorkerError("path_not_allowed", f"{path} is outside the worker's root folder {self.root} (or has "
                           "links that cannot be followed)",
                           "Put the data under the root folder the worker was started with, with no "
                           "absolute path, '..' or link leading out of it.")

    @staticmethod
    def _unfollowable(path: str | Path, exc: Exception) -> WorkerError:
        return WorkerError("path_not_allowed", f"{path}: cannot follow the path ({exc})",
                           "Fix the path: a link loop, an unknown ~user or a name longer than the "
                           "system allows cannot be opened.")


class Files:
    """The files a workspace holds."""

    STATE = "state.json"
    CAMERAS = "cameras.npz"
    NERF = "nerf.pt"
    MESH = "mesh.npz"
    MESH_PLY = "mesh.ply"

    @staticmethod
    def features(teacher: str) -> str:
        return f"features_{teacher}.pt"

    @staticmethod
    def face_features(teacher: str) -> str:
        return f"face_features_{teacher}.npz"

    @staticmethod
    def bake(size: int, key: str = "") -> str:
        """`key`: one object's triangles, baked on their own; empty: the workspace's mesh."""
        return f"bake_{size}{_key_suffix(key)}.npz"

    @staticmethod
    def texture(size: int, key: str = "") -> str:
        return f"texture_{size}{_key_suffix(key)}.png"


class Stages:
    """The stage keys of state.json: what each stage has done, with its settings."""

    IMPORT = "import"
    NERF = "nerf"
    MESH = "mesh"
    FACE_FEATURES_PREFIX = "face_features_"

    @staticmethod
    def features(teacher: str) -> str:
        return f"features_{teacher}"

    @staticmethod
    def face_features(teacher: str) -> str:
        return f"{Stages.FACE_FEATURES_PREFIX}{teacher}"

    @staticmethod
    def bake(size: int, key: str = "") -> str:
        return f"bake_{size}{_key_suffix(key)}"


def _key_suffix(key: str) -> str:
    return f"_{key}" if key else ""


T = TypeVar("T")
_cache: OrderedDict[tuple, Any] = OrderedDict()
_cache_lock = threading.Lock()


def cached(path: Path, load: Callable[[Path], T]) -> T:
    """`load(path)`, kept in memory while the file is unchanged (same size and modification
    time): queries would otherwise re-read a mesh and 100+ MB of face features per click."""
    stat = path.stat()
    key = (str(path), stat.st_mtime_ns, stat.st_size)
    with _cache_lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
    value = load(path)
    with _cache_lock:
        _cache[key] = value
        while len(_cache) > CACHED_FILES:
            _cache.popitem(last=False)
    return value


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it over `path` only if the block succeeds.
    The file gets the mode a plain open() would give it (mkstemp makes it private to the user).
    A folder that cannot be written (read-only, full) is a WorkerError naming the file."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix, dir=path.parent)
    except OSError as exc:
        raise _cannot_write(path, exc) from exc
    os.close(fd)
    try:
        os.chmod(tmp, FILE_MODE)
        yield Path(tmp)
        os.replace(tmp, path)
    except OSError as exc:
        raise _cannot_write(path, exc) from exc
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _cannot_write(path: Path, exc: OSError) -> WorkerError:
    return WorkerError("bad_workspace", f"cannot write {path} ({exc.strerror or exc})",
                       "Make its folder writable (and free some disk space), or pick another folder.")


class Workspace:
    """One scene's folder. Creating it does not touch the disk until something is saved.
    `confine` holds every file of it (state.json, checkpoints, meshes) to the client's root."""

    def __init__(self, root: str | Path, confine: Confinement | None = None) -> None:
        self.confine = confine or Confinement()
        self.root = self.confine.check(root)

    def path(self, name: str) -> Path:
        return self.confine.check(self.root / name)

    # --- state.json -------------------------------------------------------------------
    def load_state(self) -> dict[str, Any]:
        path = self.path(Files.STATE)
        if not path.exists():
            return {"version": STATE_VERSION, "stages": {}}
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise WorkerError("bad_workspace", f"{path} cannot be read ({exc})", STATE_HINT) from exc
        problem = _state_problem(state)
        if problem:
            raise WorkerError("bad_workspace", f"{path} {problem}", STATE_HINT)
        return state

    def save_state(self, state: dict[str, Any]) -> None:
        self.write_bytes(Files.STATE, json.dumps(state, indent=2).encode("utf-8"))

    def update_stage(self, stage: str, **info: Any) -> dict[str, Any]:
        state = self.load_state()
        state["stages"].setdefault(stage, {}).update(info)
        self.save_state(state)
        return state

    def stage(self, stage: str) -> dict[str, Any]:
        return self.load_state()["stages"].get(stage, {})

    def require(self, stage: str, what_to_run: str) -> dict[str, Any]:
        info = self.stage(stage)
        if not info.get("done"):
            raise WorkerError("stage_missing", f"the workspace {self.root} has no finished '{stage}' stage",
                              f"Run {what_to_run} first.")
        return info

    # --- files ------------------------------------------------------------------------
    def write_bytes(self, name: str, data: bytes) -> Path:
        target = self.path(name)
        with atomic_path(target) as tmp:
            tmp.write_bytes(data)
        return target

    def save_npz(self, name: str, **arrays: np.ndarray) -> Path:
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        return self.write_bytes(name, buffer.getvalue())

    def load_npz(self, name: str) -> dict[str, np.ndarray]:
        path = self.path(name)
        try:
            with np.load(path, allow_pickle=False) as data:
                return {k: data[k] for k in data.files}
        except (OSError, EOFError, ValueError, zipfile.BadZipFile) as exc:
            raise WorkerError("bad_workspace", f"{path} cannot be read ({exc})", DAMAGED_HINT) from exc

    @contextmanager
    def reading(self, name: str) -> Iterator[None]:
        """Use a stored file's contents in this block: a key, type or shape it lacks (a file from
        another version, or edited by hand) is an error naming the file, not a traceback."""
        try:
            yield
        except (KeyError, TypeError, ValueError, IndexError, RuntimeError) as exc:
            code, hint = ("bad_workspace", STATE_HINT) if name == Files.STATE else ("bad_checkpoint", DAMAGED_HINT)
            raise WorkerError(code, f"{self.path(name)} does not hold what this version expects "
                                    f"({type(exc).__name__}: {exc})", hint) from exc

    def save_torch(self, name: str, obj: Any) -> Path:
        import torch

        buffer = io.BytesIO()
        torch.save(obj, buffer)
        return self.write_bytes(name, buffer.getvalue())

    def load_torch(self, name: str) -> Any:
        import torch

        path = self.path(name)
        try:
            # weights_only: a checkpoint can never run code when loaded.
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - torch.load fails with many types (zip, EOF, pickle)
            raise WorkerError("bad_checkpoint", f"{path} cannot be read ({exc})", DAMAGED_HINT) from exc


def _state_problem(state: Any) -> str | None:
    """What makes a parsed state.json unusable, or None: the stages, and the dataset and scene
    frame that an import records together."""
    if not isinstance(state, dict) or not isinstance(state.get("stages"), dict):
        return "is not an object with a 'stages' object"
    if not all(isinstance(info, dict) for info in state["stages"].values()):
        return "has a stage that is not an object"
    if "dataset" not in state and "frame" not in state:
        return None  # nothing imported yet
    dataset = state.get("dataset")
    if not isinstance(dataset, dict) or not isinstance(dataset.get("path"), str):
        return "has no dataset path"
    frame = state.get("frame")
    center = frame.get("center") if isinstance(frame, dict) else None
    scale = frame.get("scale") if isinstance(frame, dict) else None
    numbers = isinstance(center, list) and len(center) == 3 and all(_finite(v) for v in center)
    if not (numbers and _finite(scale) and scale > 0):
        return "has no scene frame (a 'center' of 3 numbers and a positive 'scale')"
    return None


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
