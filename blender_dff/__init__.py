"""DFF: segment captured scenes.

Train a NeRF and a distilled feature field on posed photos (in a separate worker process),
bring the extracted mesh into Blender, select its parts by text and separate them.

This package must stay importable without bpy: the worker imports `blender_dff.protocol`.
So bpy and the Blender-side modules are imported inside `register()` / `unregister()` only.
"""

_MODULES = ("preferences", "properties", "messages", "operators", "worker_operators", "click_tool", "panels",
            "worker_setup", "worker_session")


def register() -> None:
    import importlib

    for name in _MODULES:
        importlib.import_module(f"{__name__}.{name}").register()


def unregister() -> None:
    import importlib

    for name in reversed(_MODULES):
        importlib.import_module(f"{__name__}.{name}").unregister()
