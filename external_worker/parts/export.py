"""The split written out for other tools: one .ply per part (vertex colours, closed where
closing worked) and objects.json listing them, every file written whole or not at all."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import trimesh

from ..mesh.extract import Mesh
from ..workspace import Confinement, atomic_path
from .split import Split

LISTING = "objects.json"


def write_objects(out: Path, mesh: Mesh, split: Split, confine: Confinement) -> list[dict]:
    """Write `<name>.ply` for each part with faces and the listing into the folder `out`;
    returns the listing: per part its name, file, faces (of the mesh), fill faces, area (of
    the file's surface, world units squared) and whether it is closed."""
    vertices = np.concatenate([mesh.vertices, split.patch_vertices])
    colours = np.concatenate([np.clip(mesh.vertex_colors * 255 + 0.5, 0, 255).astype(np.uint8), split.patch_colors])
    listing, taken = [], set()
    for index, name in enumerate(split.names):
        own = mesh.faces[split.face_part == index]
        fills = split.patch_faces[split.patch_part == index]
        if len(own) == 0:
            continue
        used, local = np.unique(np.concatenate([own, fills]), return_inverse=True)
        surface = trimesh.Trimesh(vertices[used], local.reshape(-1, 3), vertex_colors=colours[used], process=False)
        file = _file_name(name, taken)
        with atomic_path(confine.check(Path(out) / file)) as tmp:
            tmp.write_bytes(surface.export(file_type="ply"))
        listing.append({"name": name, "file": file, "faces": int(len(own)), "fill_faces": int(len(fills)),
                        "area": float(surface.area), "closed": bool(split.closed[index])})
    with atomic_path(confine.check(Path(out) / LISTING)) as tmp:
        tmp.write_text(json.dumps(listing, indent=2), encoding="utf-8")
    return listing


def _file_name(name: str, taken: set[str]) -> str:
    """A file name for the part `name`: letters, digits, '-', '_' and '.' only, never a path,
    never one already `taken` (which it joins)."""
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "object"
    file, count = f"{stem}.ply", 1
    while file.lower() in taken:
        count += 1
        file = f"{stem}_{count}.ply"
    taken.add(file.lower())
    return file
