"""The "DFF" tab of the 3D viewport's sidebar: Status, Scene (Import Options, Capture), Train
(Advanced), Select and Texture panels, and running jobs in the status bar.

Labels built from values translate their template (`iface_`) before filling it in."""

from __future__ import annotations

import bpy
from bpy.app.translations import pgettext_iface as iface_

from .. import ADDON_ID, jobs
from ..preferences import DEFAULT_TAB
from ..scene import selection, texture
from ..wire.api import error_title
from ..worker import state as worker_state
from .messages import wrapped_label

HINT_LINES = 3  # the end of a long hint (a worker's log) shows; Details shows all of it


class _DFFPanel:
    bl_space_type = 'VIEW_3D'
    bl_region_type = 'UI'
    bl_category = DEFAULT_TAB


class DFF_PT_status(_DFFPanel, bpy.types.Panel):
    """Outcome of the latest request (a message, or the error in plain words with what to do),
    and why the worker cannot run, if it cannot."""

    bl_label = "DFF"
    bl_options = {'HIDE_HEADER'}

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        props = context.scene.dff
        return bool(props.message or props.error or worker_state.context_problem(context))

    def draw(self, context: bpy.types.Context) -> None:
        props = context.scene.dff
        layout = self.layout
        problem = worker_state.context_problem(context)
        if problem:
            box = layout.box()
            wrapped_label(context, box, f"Worker: {problem}", icon='ERROR')
            box.operator("preferences.addon_show", text="Open Preferences",
                         icon='PREFERENCES').module = ADDON_ID
        if props.error:
            column = layout.column(align=True)
            column.alert = True
            wrapped_label(context, column, error_title(props.error_code), icon='ERROR')
            wrapped_label(context, column, props.error)
            if props.error_hint.strip():
                wrapped_label(context, column, props.error_hint.strip(), icon='INFO', max_lines=HINT_LINES)
            layout.operator("dff.error_details", text="Details", icon='TEXT')
        elif props.message:
            wrapped_label(context, layout, props.message, icon='INFO')


def _split(layout: bpy.types.UILayout) -> bpy.types.UILayout:
    """A column whose properties have their labels on the left, as Blender's own panels."""
    column = layout.column()
    column.use_property_split = True
    column.use_property_decorate = False
    return column


class DFF_PT_scene(_DFFPanel, bpy.types.Panel):
    """Dataset and workspace folders, and the import of the dataset's cameras."""

    bl_label = "Scene"

    def draw(self, context: bpy.types.Context) -> None:
        layout = self.layout
        props = context.scene.dff
        layout.prop(props, "dataset_path")
        layout.prop(props, "workspace_path")
        layout.operator("dff.import_dataset", text="Import Dataset", icon='IMPORT')
        if props.n_images:
            render = context.scene.render
            layout.label(text=iface_("{} images, {}x{}").format(props.n_images, render.resolution_x,
                                                                  render.resolution_y))


class DFF_PT_import_options(_DFFPanel, bpy.types.Panel):
    """How the dataset is read."""

    bl_label = "Import Options"
    bl_parent_id = "DFF_PT_scene"
    bl_options = {'DEFAULT_CLOSED'}

    def draw(self, context: bpy.types.Context) -> None:
        props = context.scene.dff
        options = _split(self.layout)
        options.prop(props, "image_scale")
        options.prop(props, "test_every")
        options.prop(props, "bounds")
        options.prop(props, "set_render_size")


class DFF_PT_capture(_DFFPanel, bpy.types.Panel):
    """Capture the open Blender scene as a dataset."""

    bl_label = "Capture This Scene"
    bl_parent_id = "DFF_PT_scene"
    bl_options = {'DEFAULT_CLOSED'}

    def draw(self, context: bpy.types.Context) -> None:
        props = context.scene.dff
        capture = _split(self.layout)
        capture.prop(props, "capture_source")
        if props.capture_source == 'ORBIT':
            capture.prop(props, "capture_views")
        capture.prop(props, "capture_resolution")
        capture.prop(props, "capture_samples")
        capture.prop(props, "capture_path")
        if not props.capture_path.strip():
            where = ("Into dff_capture beside the .blend" if bpy.data.filepath else
                     "Unsaved file: into a new folder of the add-on's user folder, kept after Blender quits")
            wrapped_label(context, self.layout, iface_(where))
        self.layout.operator("dff.capture_scene", text="Capture Scene", icon='RENDER_STILL')


class DFF_PT_train(_DFFPanel, bpy.types.Panel):
    """Training settings, progress and cancel."""

    bl_label = "Train"

    def draw(self, context: bpy.types.Context) -> None:
        layout = self.layout
        props = context.scene.dff
        settings = _split(layout)
        settings.enabled = not jobs.running(context.scene)
        settings.prop(props, "teacher")
        if props.teacher == 'sam':
            settings.prop(props, "sam_checkpoint")
        elif props.teacher == 'clip':
            settings.prop(props, "clip_model")
            settings.prop(props, "clip_pretrained")
        settings.prop(props, "preset")
        row = layout.row(align=True)
        row.operator("dff.train", text="Train", icon='PLAY')
        row.operator("dff.load_mesh", text="Load Mesh", icon='MESH_DATA')
        _split(layout).prop(props, "mesh_object")
        preview = props.preview_image
        if preview is not None and preview.preview is not None:
            layout.label(text="Render | photo (first training view)")
            layout.template_icon(icon_value=preview.preview.icon_id, scale=8.0)
        curve = props.curve_image
        if curve is not None and curve.preview is not None and len(props.training_curve) > 1:
            first, last = props.training_curve[0], props.training_curve[-1]
            layout.label(text=iface_("Training PSNR {:.1f} -> {:.1f} dB, steps {}-{}").format(
                first.psnr, last.psnr, first.step, last.step))
            layout.template_icon(icon_value=curve.preview.icon_id, scale=8.0)
        job = jobs.of(context.scene)
        if job is not None:
            draw_job(layout, job)
            if job.details():
                layout.label(text=job.details())


class DFF_PT_train_advanced(_DFFPanel, bpy.types.Panel):
    """Steps and resolutions by hand instead of the preset's, and the face budget."""

    bl_label = "Advanced"
    bl_parent_id = "DFF_PT_train"
    bl_options = {'DEFAULT_CLOSED'}

    def draw(self, context: bpy.types.Context) -> None:
        props = context.scene.dff
        settings = _split(self.layout)
        settings.enabled = not jobs.running(context.scene)
        settings.prop(props, "custom_settings")
        if props.custom_settings:
            settings.prop(props, "nerf_steps")
            settings.prop(props, "feature_steps")
            settings.prop(props, "mesh_resolution")
        settings.prop(props, "max_faces")


def draw_job(layout: bpy.types.UILayout, job: jobs.Job, prefix: str = "", scene: str = "") -> None:
    """A job's progress bar and its Cancel button (`scene`: the job's scene when it is not the
    window's)."""
    row = layout.row(align=True)
    row.progress(factor=job.fraction, type='BAR', text=prefix + job.title())
    row.operator("dff.cancel", text="", icon='CANCEL').scene = scene


def draw_status_bar(self: bpy.types.Header, context: bpy.types.Context) -> None:
    """Every running job in Blender's status bar, so training stays visible with the sidebar
    closed or in another workspace (as Blender's extension manager shows its downloads)."""
    for scene, job in jobs.all_jobs():
        other = "" if scene == context.scene else scene.name
        draw_job(self.layout, job, f"DFF ({other}): " if other else "DFF: ", other)


class DFF_PT_select(_DFFPanel, bpy.types.Panel):
    """Text query, click, similar, threshold, separate (the selection, or all parts) and linking your own mesh."""

    bl_label = "Select"

    def draw(self, context: bpy.types.Context) -> None:
        layout = self.layout
        props = context.scene.dff
        row = layout.row(align=True)
        row.prop(props, "query_text", text="")
        row.operator("dff.select_text", text="Select", icon='VIEWZOOM')
        if props.teacher == 'clip':
            layout.prop(props, "text_mode", expand=True)
            layout.prop(props, "label_set" if props.text_mode == 'LABEL_SET' else "negatives", text="")
        if props.labels:
            flow = layout.grid_flow(columns=3, even_columns=True, align=True)
            for label in props.labels:
                flow.operator("dff.select_text", text=label.name).text = label.name
        row = layout.row(align=True)
        row.operator("dff.click_select", text="Click", icon='RESTRICT_SELECT_OFF')
        row.operator("dff.select_similar", text="Similar", icon='SELECT_EXTEND')
        row = layout.row(align=True)
        row.prop(props, "threshold", slider=True)
        row.operator("dff.show_heat_map", text="", icon='COLOR')
        row = layout.row(align=True)
        row.operator("dff.separate", text="Separate", icon='MOD_EXPLODE')
        row.operator("dff.separate_all", text="Separate All", icon='OUTLINER_COLLECTION')
        layout.operator("dff.link_mesh", text="Link Your Mesh", icon='LINKED')


class DFF_PT_texture(_DFFPanel, bpy.types.Panel):
    """Bake the radiance field's colour into a texture of the DFF mesh, or of the active part alone."""

    bl_label = "Texture"
    bl_options = {'DEFAULT_CLOSED'}

    def draw(self, context: bpy.types.Context) -> None:
        props = context.scene.dff
        _split(self.layout).prop(props, "texture_size")
        self.layout.operator("dff.bake_texture", text=_bake_label(context), icon='TEXTURE')


def _bake_label(context: bpy.types.Context) -> str:
    """Bake Texture's button: it names the object when that is baked alone, on its own atlas."""
    try:
        target = selection.query_target(context)
    except ValueError:  # no DFF mesh: the button is greyed out and says why
        target = None
    if target is not None and texture.bakes_own_atlas(context, target):
        return iface_("Bake '{}'").format(target.name)
    return iface_("Bake Texture")


_CLASSES = (DFF_PT_status, DFF_PT_scene, DFF_PT_import_options, DFF_PT_capture, DFF_PT_train,
            DFF_PT_train_advanced, DFF_PT_select, DFF_PT_texture)

_register_classes, _unregister_classes = bpy.utils.register_classes_factory(_CLASSES)


def set_tab(name: str) -> None:
    """Move the panels to the sidebar tab `name` (empty: the default), as the preferences say."""
    name = name.strip() or DEFAULT_TAB
    if all(cls.bl_category == name for cls in _CLASSES):
        return
    registered = DFF_PT_scene.is_registered
    if registered:  # children before parents, then parents first again
        _unregister_classes()
    for cls in _CLASSES:
        cls.bl_category = name
    if registered:
        _register_classes()


def register() -> None:
    addon = bpy.context.preferences.addons.get(ADDON_ID)
    set_tab(addon.preferences.tab_name if addon is not None and addon.preferences is not None else "")
    _register_classes()
    bpy.types.STATUSBAR_HT_header.append(draw_status_bar)


def unregister() -> None:
    bpy.types.STATUSBAR_HT_header.remove(draw_status_bar)
    _unregister_classes()
