"""Label maps for the `labels` teacher: one PNG of integer ids per image under `<root>/labels/`,
the ids named by `<root>/labels.json`."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import numpy as np

from ..errors import DatasetError
from ..workspace import Confinement
from .images import GREY_16_BIT_MODES, in_parallel, open_image
from .views import read_json

_LABEL_MODES = ("L", "P") + GREY_16_BIT_MODES
_LABEL_HINT = ("Put one single-channel PNG of integer label ids per image (0 = unlabelled, 8- or "
               "16-bit, same pixel size as the image) at labels/<image folder>/<image stem>.png or "
               "labels/<image stem>.png under the dataset folder, and name the ids in labels.json "
               "at the dataset folder, e.g. {\"1\": \"mug\"}.")


def read_labels(root: Path, names: list[str], stored_size: tuple[int, int], size: tuple[int, int],
                require_labels: bool, confine: Confinement) -> tuple[np.ndarray | None, np.ndarray, dict[int, str]]:
    """The label maps of the images `names` at their loaded `size` (width, height): (N, H, W) ids
    or None without any map, which views have one, and the names of the ids."""
    names_path = root / "labels.json"
    label_names = _read_label_names(names_path, confine) if confine.is_file(names_path) else {}
    maps = _find_label_maps(root, names, confine)
    has_labels = np.array([m is not None for m in maps], bool)
    if not has_labels.any():
        if require_labels:
            raise DatasetError(f"no label maps found under {root / 'labels'} for the "
                               f"{len(names)} images of {root}", _LABEL_HINT)
        return None, has_labels, label_names
    labels = np.zeros((len(names), size[1], size[0]), np.int32)

    def load(index: int) -> None:
        map_path = maps[index]
        if map_path is not None:
            labels[index] = _read_label_map(map_path, root / names[index], stored_size, size, label_names,
                                            confine)

    in_parallel(load, range(len(names)))
    return labels, has_labels, label_names


def _find_label_maps(root: Path, names: list[str], confine: Confinement) -> list[Path | None]:
    """Per image, `labels/<dir>/<stem>.png` or else `labels/<stem>.png` when it exists."""
    found: list[Path | None] = []
    by_stem: dict[Path, str] = {}
    for name in names:
        rel = PurePosixPath(name)
        nested = root / "labels" / rel.parent / f"{rel.stem}.png"
        flat = root / "labels" / f"{rel.stem}.png"
        if ".." not in rel.parts and confine.is_file(nested):
            found.append(nested)
        elif confine.is_file(flat):
            # NeRF-synthetic has train/r_0.png and test/r_0.png: one flat map cannot label both.
            if flat in by_stem:
                raise DatasetError(f"{flat} would label both {by_stem[flat]} and {name}",
                                   f"Put the maps in per-folder subfolders, e.g. "
                                   f"labels/{rel.parent}/{rel.stem}.png.")
            by_stem[flat] = name
            found.append(flat)
        else:
            found.append(None)
    return found


def _read_label_map(path: Path, image_path: Path, stored_size: tuple[int, int], size: tuple[int, int],
                    label_names: dict[int, str], confine: Confinement) -> np.ndarray:
    label_map = open_image(path, confine, _LABEL_HINT)
    if label_map.mode not in _LABEL_MODES:
        raise DatasetError(f"{path}: label map has mode {label_map.mode}, expected a single-channel "
                           "image of label ids", _LABEL_HINT)
    if label_map.size != stored_size:
        raise DatasetError(f"{path}: label map is {label_map.width}x{label_map.height} but its image "
                           f"{image_path} is {stored_size[0]}x{stored_size[1]}", _LABEL_HINT)
    ids = np.asarray(label_map).astype(np.int32)  # palette images give their indices: the ids
    present = np.unique(ids)
    if present[0] < 0:
        raise DatasetError(f"{path}: negative label id {present[0]}", _LABEL_HINT)
    unknown = [int(i) for i in present if i != 0 and i not in label_names]
    if label_names and unknown:
        raise DatasetError(f"{path}: label id {unknown[0]} is not named in labels.json",
                           f"Add \"{unknown[0]}\": \"<name>\" to labels.json, or set those pixels "
                           "to 0 (unlabelled).")
    if size != stored_size:
        # Nearest neighbour: averaging ids would invent labels at boundaries.
        rows = ((np.arange(size[1]) + 0.5) * stored_size[1] / size[1]).astype(int)
        cols = ((np.arange(size[0]) + 0.5) * stored_size[0] / size[0]).astype(int)
        ids = ids[rows[:, None], cols[None, :]]
    return ids


def _read_label_names(path: Path, confine: Confinement) -> dict[int, str]:
    raw = read_json(path, confine)
    if not isinstance(raw, dict):
        raise DatasetError(f"{path}: expected an object mapping label ids to names", _LABEL_HINT)
    names: dict[int, str] = {}
    for key, value in raw.items():
        try:
            label_id = int(key)
        except ValueError:
            raise DatasetError(f"{path}: key {key!r} is not an integer label id", _LABEL_HINT) from None
        if label_id <= 0 or not isinstance(value, str):
            raise DatasetError(f"{path}: entry {key!r}: {value!r} must map an id >= 1 to a name "
                               "(0 means unlabelled)", _LABEL_HINT)
        names[label_id] = value
    return names
