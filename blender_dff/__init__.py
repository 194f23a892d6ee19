"""DFF: segment captured scenes.

Train a NeRF and a distilled feature field on posed photos (in a separate worker process),
bring the extracted mesh into Blender, select its parts by text and separate them.

This package must stay importable without bpy: the worker imports `blender_dff.wire`.
So bpy and the Blender-side modules are imported inside `register()` / `unregister()` only.
"""

# The add-on's module name as Blender registers it (bl_ext.<repository>.blender_dff when installed
# as an extension): the id of its preferences and of its user folder.
ADDON_ID = __name__

_MODULES = ("ui.translations", "preferences", "properties", "ui.messages", "operators.scene", "operators.train", "operators.select",
            "operators.parts", "operators.worker", "operators.click", "ui.panels", "ui.menus", "worker.state", "worker.session")


def register() -> None:
    import importlib

    for name in _MODULES:
        importlib.import_module(f"{__name__}.{name}").register()


def unregister() -> None:
    import importlib

    for name in reversed(_MODULES):
        importlib.import_module(f"{__name__}.{name}").unregister()
