"""The layout rules the code is kept to: small modules, data flowing one way through the
worker's stages, a wire package both sides can import, and no dispatch on teacher classes."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
MAX_LINES = 400
# The worker's stages in the order data flows; a module may import its own stage and earlier
# ones. Base modules (settings, errors, progress, the workspace folder, the shared training
# helpers) come before every stage.
WORKER_ORDER = ["errors", "progress", "workspace", "training", "config",
                "geometry", "datasets", "nerf", "mesh", "teachers", "features", "queries",
                "parts", "pipeline", "evaluation", "server", "__main__"]
BASE = set(WORKER_ORDER[:WORKER_ORDER.index("geometry")])


def _modules(package: str) -> list[Path]:
    return sorted((REPO / package).rglob("*.py"))


def _imports(path: Path, when_loaded: bool = False) -> list[str]:
    """The absolute names of the modules `path` imports (relative imports resolved); with
    `when_loaded`, only those that run when it is loaded, not those inside functions or classes."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    if when_loaded:
        tree = ast.Module(body=[node for node in tree.body if not isinstance(node, (ast.FunctionDef, ast.ClassDef))],
                          type_ignores=[])
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    package = parts if parts[-1] == "__init__" else parts[:-1]
    package = [p for p in package if p != "__init__"]
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[:len(package) - node.level + 1] + ([base] if base else []))
            names.append(base)
            names += [f"{base}.{alias.name}" for alias in node.names]
    return names


def _stage(module: str) -> str:
    """external_worker.nerf.train -> nerf; external_worker.config -> config."""
    return module.split(".")[1] if module.count(".") else ""


@pytest.mark.parametrize("package", ["blender_dff", "external_worker"])
def test_no_module_is_over_the_size_limit(package):
    long = {str(p.relative_to(REPO)): n for p in _modules(package)
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: {long}"


def test_worker_stages_import_only_earlier_stages():
    backwards = []
    for path in _modules("external_worker"):
        me = _stage(".".join(path.relative_to(REPO).with_suffix("").parts))
        if me not in WORKER_ORDER:
            continue  # the package's __init__
        for name in _imports(path):
            if not name.startswith("external_worker."):
                continue
            other = _stage(name)
            if other in WORKER_ORDER and WORKER_ORDER.index(other) > WORKER_ORDER.index(me):
                backwards.append(f"{path.relative_to(REPO)} imports {name}")
            if me in BASE and other not in BASE:
                backwards.append(f"base module {path.relative_to(REPO)} imports the stage {name}")
    assert not backwards, "\n".join(backwards)


def test_the_worker_never_imports_bpy_and_reads_only_the_wire_of_the_add_on():
    wrong = [f"{p.relative_to(REPO)}: {name}" for p in _modules("external_worker") for name in _imports(p)
             if name.split(".")[0] in ("bpy", "bmesh", "mathutils")
             or (name.startswith("blender_dff") and not name.startswith("blender_dff.wire"))]
    assert not wrong, wrong


def test_the_wire_package_needs_neither_blender_nor_torch():
    wrong = [f"{p.relative_to(REPO)}: {name}" for p in _modules("blender_dff/wire") for name in _imports(p)
             if name.split(".")[0] in ("bpy", "bmesh", "mathutils", "torch", "external_worker")
             or (name.startswith("blender_dff.") and not name.startswith("blender_dff.wire"))]
    assert not wrong, wrong


def test_no_code_dispatches_on_a_teacher_class():
    teacher_classes = set()
    for path in _modules("external_worker/teachers"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        teacher_classes |= {node.name for node in ast.walk(tree) if isinstance(node, ast.ClassDef)}
    dispatch = []
    for path in _modules("external_worker"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "isinstance" and len(node.args) == 2:
                named = {n.id for n in ast.walk(node.args[1]) if isinstance(n, ast.Name)}
                named |= {n.attr for n in ast.walk(node.args[1]) if isinstance(n, ast.Attribute)}
                if named & teacher_classes:
                    dispatch.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert not dispatch, f"isinstance on teacher classes: {dispatch}"



def _module_file(name: str) -> Path | None:
    """The file of a project module by its dotted name, or None for a package outside it."""
    base = REPO.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def test_the_add_on_tests_load_no_torch():
    """The add-on tests run on every Blender version in environments without torch (the worker
    they start runs in the main one), so loading them must not import torch, however indirectly."""
    loaded = sorted((REPO / "tests" / "addon").glob("test_*.py")) + [
        REPO / "tests" / name for name in ("conftest.py", "addon_helpers.py", "capture_files.py", "dummy_wheel.py")]
    chains = []
    seen: set[Path] = set()
    todo = [(path, str(path.relative_to(REPO))) for path in loaded]
    while todo:
        path, chain = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for name in _imports(path, when_loaded=True):
            if name.split(".")[0] == "torch":
                chains.append(f"{chain} -> torch")
            parents = [".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)]
            for module in parents + [name] + ["tests." + name, "scripts." + name]:
                if (found := _module_file(module)) is not None:  # a package's __init__ loads first
                    todo.append((found, f"{chain} -> {module}"))
    assert not chains, "\n".join(sorted(set(chains)))
