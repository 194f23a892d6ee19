"""The add-on's translations of its interface, registered with Blender (`bpy.app.translations`).

Blender translates operator labels, property names and descriptions and layout texts by
itself once a locale has them here; labels built from values translate their template with
`pgettext_iface` before filling it in. English only so far: a translator adds a locale as
{(context, English text): translation}, e.g. ("*", "Train DFF"): "...".
"""

from __future__ import annotations

import bpy

from .. import ADDON_ID

TRANSLATIONS: dict[str, dict[tuple[str, str], str]] = {"en_US": {}}


def register() -> None:
    bpy.app.translations.register(ADDON_ID, TRANSLATIONS)


def unregister() -> None:
    bpy.app.translations.unregister(ADDON_ID)
