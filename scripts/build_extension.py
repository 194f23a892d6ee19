"""Build the installable Blender extension: dist/blender_dff-<version>.zip.

The zip holds the manifest, the licence and the add-on's files at its root (Blender's extension
layout; the add-on's files include the worker's requirements and the environment probe) and the
`external_worker/` package as a sub-folder, so an installed extension can start its worker
without a repository checkout.

    python scripts/build_extension.py [--out dist/]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import tomllib
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MANIFEST = "blender_manifest.toml"
LICENSE = "LICENSE"  # the GPL-3.0 text the manifest's SPDX:GPL-3.0-or-later refers to
ADDON = "blender_dff"
WORKER = "external_worker"


def _package_files(folder: Path) -> list[Path]:
    """The files of a package folder, sorted, without bytecode caches."""
    return sorted(
        path for path in folder.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
    )


def read_manifest(repo: Path = REPO) -> dict:
    path = repo / MANIFEST
    try:
        manifest = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise SystemExit(f"cannot read the extension manifest '{path}': {exc}") from None
    for key in ("id", "version"):
        if not manifest.get(key):
            raise SystemExit(f"the extension manifest '{path}' has no '{key}'")
    return manifest


def build(out_dir: Path, repo: Path = REPO) -> Path:
    """Write the zip into `out_dir` (atomically) and return its path."""
    manifest = read_manifest(repo)
    for package in (ADDON, WORKER):
        if not (repo / package / "__init__.py").is_file():
            raise SystemExit(f"package '{repo / package}' not found: run from a checkout")
    if not (repo / LICENSE).is_file():
        raise SystemExit(f"the licence '{repo / LICENSE}' is missing: restore it from the repository")
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{manifest['id']}-{manifest['version']}.zip"
    entries = [(repo / MANIFEST, MANIFEST), (repo / LICENSE, LICENSE)]
    entries += [(path, path.relative_to(repo / ADDON).as_posix())
                for path in _package_files(repo / ADDON)]
    entries += [(path, path.relative_to(repo).as_posix())
                for path in _package_files(repo / WORKER)]

    handle, temp = tempfile.mkstemp(prefix=f".{target.name}.", dir=out_dir)
    os.close(handle)
    try:
        with zipfile.ZipFile(temp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for source, name in entries:
                archive.write(source, name)
        os.replace(temp, target)
    except BaseException:
        os.unlink(temp)
        raise
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "dist",
                        help="folder for the zip (default: dist/ in the repository)")
    args = parser.parse_args(argv)
    print(build(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
