"""Switching one object into object or edit mode, from operators and from reply handlers."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import bpy


def set_mode(context: bpy.types.Context, obj: bpy.types.Object, mode: str) -> None:
    """Make `obj` the only selected, active object of the view layer, in `mode`
    ('OBJECT' or 'EDIT'). Any other object in edit mode leaves it first, so edit mode
    never spans several objects."""
    view_layer = context.view_layer
    try:
        obj.select_set(True)  # also brings the view layer up to date with new objects
    except RuntimeError:
        raise ValueError(
            f"'{obj.name}' is not in the view layer '{view_layer.name}': link it to the "
            "scene, or switch to its scene") from None
    active = view_layer.objects.active
    if active is not None and active != obj and active.mode != 'OBJECT':
        _mode_set(context, active, 'OBJECT')
    for other in view_layer.objects.selected:
        if other != obj:
            other.select_set(False)
    obj.hide_set(False)
    view_layer.objects.active = obj
    if obj.mode != mode:
        _mode_set(context, obj, mode)


def _mode_set(context: bpy.types.Context, obj: bpy.types.Object, mode: str) -> None:
    # Reply handlers run from a timer, whose context has no active object of its own.
    with context.temp_override(active_object=obj, object=obj):
        bpy.ops.object.mode_set(mode=mode)


@contextmanager
def mesh_data_writable(context: bpy.types.Context, obj: bpy.types.Object) -> Iterator[None]:
    """Write `obj`'s mesh data in bulk (edit mode keeps its own copy, which would overwrite the
    write): an object in edit mode leaves it for the write and returns to it after. The user's
    selection and active object are left as they are (a reply may land minutes later)."""
    editing = obj.mode == 'EDIT'
    if editing:
        _mode_set(context, obj, 'OBJECT')
    try:
        yield
    finally:
        if editing:
            _mode_set(context, obj, 'EDIT')
