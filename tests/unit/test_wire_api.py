"""The add-on and the worker agree with `blender_dff.wire.api`: the same methods, parameters,
defaults, choices and error codes on both sides, and on the command line."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import numpy as np
import pytest

from blender_dff.wire import api
from external_worker import __main__ as cli, pipeline
from external_worker.config import FLAT_SETTINGS, PRESETS, TrainSettings, describe, from_flat
from external_worker.errors import WorkerError
from external_worker.server import server
from external_worker.server.handlers import make_handlers

REPO = Path(__file__).resolve().parents[2]


def _strings(node: ast.AST | None) -> set[str]:
    """The string constants a code argument can be: itself, or either branch of `a if c else b`."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return {node.value}
    if isinstance(node, ast.IfExp):
        return _strings(node.body) | _strings(node.orelse)
    return set()


def _calls(package: str):
    """(path, name of the function called, call) for every call in `package`."""
    for path in sorted((REPO / package).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call):
                func = node.func
                name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
                yield path, name, node


def _arg(call: ast.Call, index: int) -> ast.AST | None:
    return call.args[index] if len(call.args) > index else None


# --- methods ------------------------------------------------------------------------------


def test_the_worker_answers_exactly_the_api_s_methods():
    assert set(make_handlers()) == set(api.METHODS)
    assert all(name == method.name for name, method in api.METHODS.items())
    assert set(server.BUILTIN_METHODS) == {method.name for method in api.BUILTINS}
    assert not set(api.METHODS) & set(server.BUILTIN_METHODS)


def test_every_parameter_is_well_formed():
    for method in api.METHODS.values():
        keys = [param.key for param in method.params]
        assert len(keys) == len(set(keys)), method.name
        for param in method.params:
            where = f"{method.name}.{param.key}"
            assert param.kind in (api.TEXT, api.INT, api.FLAG, api.PATH, api.VECTOR, api.RECORDS), where
            assert not (param.required and param.default is not None), where
            if param.kind == api.INT:
                assert param.low <= param.high, where
                values = [*param.choices] + ([param.default] if param.default is not None else [])
                assert all(param.low <= v <= param.high for v in values), where
            if param.kind == api.TEXT and param.default is not None:
                assert len(param.default) <= param.max_len, where
            if param.choices and param.default is not None:
                assert param.default in param.choices, where
            assert bool(param.fields) == (param.kind == api.RECORDS), where
    downscale = api.IMPORT_DATASET["downscale"]  # the add-on's scales are downscale factors
    assert all(downscale.low <= scale <= downscale.high for scale in api.IMAGE_SCALES)


def test_a_request_with_a_key_the_api_does_not_know_fails_where_it_is_built():
    assert api.GET_MESH.request(workspace="/ws") == {"workspace": "/ws"}
    with pytest.raises(KeyError, match="nerf_step"):
        api.TRAIN.request(workspace="/ws", nerf_step=5)
    with pytest.raises(KeyError, match="query_click.clicks.*orign"):
        api.QUERY_CLICK.request(clicks=[{"orign": [0, 0, 0], "direction": [0, 0, 1]}])


# --- error codes --------------------------------------------------------------------------


def test_every_error_code_the_worker_sends_has_a_title():
    codes = set()
    for path, name, call in _calls("external_worker"):
        if name == "WorkerError":
            codes |= _strings(_arg(call, 0))
        elif name in ("send_error", "error_header"):  # the server's own errors
            codes |= _strings(_arg(call, 1))
        elif name == "__init__" and path.name == "errors.py":  # DatasetError, Cancelled
            codes |= _strings(_arg(call, 0))
    assert {"bad_request", "bad_dataset", "cancelled", "auth_failed", "internal"} <= codes  # the scan sees them
    assert codes <= set(api.ERROR_TITLES), sorted(codes - set(api.ERROR_TITLES))


def test_every_error_code_the_add_on_shows_has_a_title():
    codes = set()
    for path in sorted((REPO / "blender_dff").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Dict):  # {"code": ..., "message": ...} given to show_error
                codes |= {c for key, value in zip(node.keys, node.values)
                          if isinstance(key, ast.Constant) and key.value == "code" for c in _strings(value)}
    for path, name, call in _calls("blender_dff"):
        if name == "failure" or (name == "_fail" and path.name == "client.py"):  # the client's own errors
            codes |= _strings(_arg(call, 0))
        codes |= {c for keyword in call.keywords if keyword.arg == "notices"
                  for element in getattr(keyword.value, "elts", ()) for c in _strings(element)}
    assert {"apply_failed", "worker_exited", "no_hit", "threshold"} <= codes  # the scan sees them
    assert codes <= set(api.ERROR_TITLES), sorted(codes - set(api.ERROR_TITLES))


# --- the worker's checks of params --------------------------------------------------------

RAY = {"origin": [0.0, 0.0, 5.0], "direction": [0.0, 0.0, -1.0]}


@pytest.mark.parametrize("method, params, code, message, hint", [
    ("import_dataset", {"dataset": 5}, "bad_request",
     "parameter 'dataset' must be a string of at most 4096 characters", "Got int."),
    ("import_dataset", {"dataset": ""}, "bad_request", "parameter 'dataset' is empty", "Give a folder path."),
    ("import_dataset", {"dataset": "/elsewhere", "workspace": "ws"}, "path_not_allowed",
     "/elsewhere is outside the worker's root folder", "Put the data under the root folder"),
    ("import_dataset", {"dataset": "data", "workspace": "ws", "downscale": 0}, "bad_request",
     "parameter 'downscale' must be an integer in [1, 64]", "Got 0."),
    ("import_dataset", {"dataset": "data", "workspace": "ws", "test_every": True}, "bad_request",
     "parameter 'test_every' must be an integer in [0, 1000000]", "Got True."),
    ("train", {"workspace": "ws", "nerf_steps": 0}, "bad_request",
     "parameter 'nerf_steps' must be an integer in [1, 1000000]", "Got 0."),
    ("train", {"workspace": "ws", "teacher": "x" * 65}, "bad_request",
     "parameter 'teacher' must be a string of at most 64 characters", "Got str."),
    ("train", {"workspace": "ws", "teacher": "sam", "sam_checkpoint": "/elsewhere/sam.pth"}, "path_not_allowed",
     "/elsewhere/sam.pth is outside", ""),
    ("train", {"workspace": "ws", "clip_model": "local-dir:/models"}, "bad_request",
     "clip_model 'local-dir:/models' names a folder", "Give a model name"),
    ("train", {"workspace": "ws", "clip_pretrained": "/elsewhere/clip.bin"}, "path_not_allowed",
     "/elsewhere/clip.bin is outside", ""),
    ("bake", {"workspace": "ws", "size": 0}, "bad_request", "parameter 'size' must be an integer in [1, 65536]", ""),
    ("query_text", {"workspace": "ws"}, "bad_request",
     "parameter 'text' must be a string of at most 1000 characters", "Got NoneType."),
    ("query_click", {"workspace": "ws"}, "bad_request",
     "parameter 'clicks' must be a list of 1 to 64 objects", "Got NoneType of length -."),
    ("query_click", {"workspace": "ws", "clicks": []}, "bad_request",
     "parameter 'clicks' must be a list of 1 to 64 objects", "Got list of length 0."),
    ("query_click", {"workspace": "ws", "clicks": [], "box": [RAY] * 5}, "bad_request",
     "parameter 'box' must be a list of 1 to 4 objects", "Got list of length 5."),
    ("query_click", {"workspace": "ws", "clicks": [{**RAY, "origin": [0, 0]}]}, "bad_request",
     "parameter 'origin' must be a list of 3 finite numbers", "Got [0, 0]."),
    ("query_click", {"workspace": "ws", "clicks": [{**RAY, "object": "yes"}]}, "bad_request",
     "parameter 'object' must be true or false", "Got 'yes'."),
    ("query_click", {"workspace": "ws", "clicks": [RAY], "views": 33}, "bad_request",
     "parameter 'views' must be an integer in [0, 32]", "Got 33."),
    ("query_similar", {"workspace": "ws"}, "bad_request", "array 'selected' must be a 1-D bool array", ""),
    ("split", {"workspace": "ws", "close": "yes"}, "bad_request", "parameter 'close' must be true or false",
     "Got 'yes'."),
    ("split", {"workspace": "ws", "label_set": "x" * 1001}, "bad_request",
     "parameter 'label_set' must be a string of at most 1000 characters", "Got str."),
])
def test_the_worker_refuses_bad_params_before_any_stage_runs(tmp_path, monkeypatch, method, params, code,
                                                             message, hint):
    from external_worker.errors import WorkerError

    monkeypatch.chdir(tmp_path)  # relative paths lie in the root
    with pytest.raises(WorkerError) as error:
        make_handlers(tmp_path)[method](params, {}, None)
    assert error.value.code == code
    assert error.value.message.startswith(message) and error.value.hint.startswith(hint)


# --- defaults: the worker and its command line ---------------------------------------------


def _setting(settings: TrainSettings, key: str):
    record, name = FLAT_SETTINGS[key]
    return getattr(getattr(settings, record) if record else settings, name)


def test_the_worker_s_settings_default_to_the_api_s():
    train_keys = {param.key for param in api.TRAIN.params if param.kind != api.PATH}
    assert train_keys <= set(FLAT_SETTINGS)  # from_flat reads every setting the wire sends
    defaults = TrainSettings()
    for key in train_keys:
        if api.TRAIN[key].default is not None:
            assert _setting(defaults, key) == api.TRAIN[key].default, key
    # The numbers the wire leaves to the preset: the records' defaults are the CPU's standard one,
    # and the add-on's custom fields start from them.
    assert (defaults.nerf.steps, defaults.features.steps, defaults.mesh.resolution) == (
        api.DEFAULT_NERF_STEPS, api.DEFAULT_FEATURE_STEPS, api.DEFAULT_MESH_RESOLUTION)
    assert api.DEFAULT_PRESET == "standard" and from_flat(api.TRAIN.defaults(), device_kind="cpu") == defaults
    assert _setting(defaults, "augment") in api.AUGMENT_MODES


def test_from_flat_reads_a_mapping_a_namespace_and_keywords_alike():
    flat = {"nerf_steps": 5, "probe_samples": 16, "teacher": "sam", "workspace": "/ws", "max_faces": None}
    settings = from_flat(flat, feature_steps=7)
    assert (settings.nerf.steps, settings.field.samples_per_ray, settings.features.steps) == (5, 16, 7)
    assert settings.teacher == "sam" and settings.mesh.max_faces == TrainSettings().mesh.max_faces
    assert from_flat(cli.parse_args(["train", "--workspace", "/ws", "--steps", "5"])).nerf.steps == 5
    args = cli.parse_args(["train", "--workspace", "/ws", "--preset", "preview"])
    assert from_flat(args, device_kind="cpu").nerf.steps == PRESETS["cpu"]["preview"]["nerf_steps"]


def test_the_stages_default_to_the_api_s():
    def defaults(function) -> dict:
        return {name: p.default for name, p in inspect.signature(function).parameters.items()
                if p.default is not inspect.Parameter.empty}

    imports = {key: value for key, value in defaults(pipeline.import_dataset).items() if key in pipeline.IMPORT_DEFAULTS}
    assert imports == pipeline.IMPORT_DEFAULTS == api.IMPORT_DATASET.defaults()
    from external_worker.datasets.dataset import load_dataset
    from external_worker.queries import prompt, relevancy, similar, text

    assert {k: v for k, v in defaults(load_dataset).items() if k in imports} == imports
    assert defaults(text.query_text)["teacher"] == defaults(similar.query_similar)["teacher"] == api.DEFAULT_TEACHER
    assert defaults(prompt.query_click) == {"teacher": api.DEFAULT_TEACHER, "views": api.QUERY_CLICK["views"].default}
    assert relevancy.CANONICAL_NEGATIVES == api.CANONICAL_NEGATIVES
    assert {key: value for key, value in defaults(pipeline.run_split).items() if key != "reporter"} == api.SPLIT.defaults()


@pytest.mark.parametrize("device_kind", ["cpu", "cuda"])
@pytest.mark.parametrize("preset", api.PRESETS)
def test_each_preset_maps_to_the_settings_it_claims_on_each_device(preset, device_kind):
    settings = from_flat({"preset": preset}, device_kind=device_kind)
    claimed = {**{key: _setting(TrainSettings(), key) for key in PRESETS["cpu"]["high"]},
               **PRESETS[device_kind][preset]}
    assert {key: _setting(settings, key) for key in claimed} == claimed
    assert (settings.preset, settings.device_kind) == (preset, device_kind)
    line = describe(settings)
    assert line.startswith(f"{preset} preset on {device_kind}:") and f"{settings.nerf.steps} NeRF steps" in line
    given = from_flat({"preset": preset, "nerf_steps": 7, "mesh_resolution": 0}, device_kind=device_kind)
    assert given.nerf.steps == 7 and given.mesh.resolution == settings.mesh.resolution  # 0 leaves it to the preset


def test_presets_grow_with_quality_and_a_gpu_gets_more_than_a_cpu():
    def work(settings: TrainSettings) -> float:
        return settings.nerf.steps * settings.nerf.rays_per_batch * 2 ** settings.field.log2_table
    for device_kind in ("cpu", "cuda"):
        costs = [work(from_flat({"preset": name}, device_kind=device_kind)) for name in api.PRESETS]
        assert costs == sorted(costs) and len(set(costs)) == len(costs), device_kind
    for name in api.PRESETS:
        assert work(from_flat({"preset": name}, device_kind="cuda")) > work(from_flat({"preset": name}, device_kind="cpu"))
    assert api.TRAIN["preset"].choices == api.PRESETS and set(PRESETS["cuda"]) == set(api.PRESETS)


def test_an_unknown_preset_is_refused_with_the_choices():
    with pytest.raises(WorkerError, match="preview, standard, high") as caught:
        from_flat({"preset": "ultra"}, device_kind="cpu")
    assert caught.value.code == "bad_request"


# Command-line flag -> the wire's parameter it stands for.
CLI_PARAMS = {"--downscale": api.IMPORT_DATASET["downscale"], "--test-every": api.IMPORT_DATASET["test_every"],
              "--bounds": api.IMPORT_DATASET["bounds"], "--teacher": api.TRAIN["teacher"],
              "--sam-checkpoint": api.TRAIN["sam_checkpoint"], "--clip-model": api.TRAIN["clip_model"],
              "--clip-pretrained": api.TRAIN["clip_pretrained"], "--size": api.BAKE["size"],
              "--preset": api.TRAIN["preset"], "--label-set": api.SPLIT["label_set"]}


def test_the_command_line_s_defaults_and_choices_are_the_api_s():
    seen = set()
    for command in cli.COMMANDS:
        for flags, keywords in command.options:
            param = CLI_PARAMS.get(flags[0])
            if param is None:
                continue
            seen.add(flags[0])
            assert keywords.get("default") == param.default, (command.name, flags)
            assert set(keywords.get("choices", ())) <= set(param.choices or keywords.get("choices", ())), flags
    assert seen == set(CLI_PARAMS)
    args = cli.parse_args(["run", "--dataset", "/data", "--workspace", "/ws"])
    assert from_flat(args, device_kind="cpu") == TrainSettings()  # no option given: every setting's default
    args = cli.parse_args(["run", "--dataset", "/data", "--workspace", "/ws", "--steps", "5", "--rays", "64",
                           "--resolution", "32", "--max-faces", "9", "--feature-steps", "7", "--augment", "off"])
    settings = from_flat(args, device_kind="cuda")  # each training option given lands in its setting
    assert (settings.nerf.steps, settings.nerf.rays_per_batch, settings.mesh.resolution) == (5, 64, 32)
    assert (settings.mesh.max_faces, settings.features.steps, settings.features.augment) == (9, 7, "off")
    split = api.SPLIT.defaults()  # the split's flags: --no-close and --no-fill turn the wire's defaults off
    args = cli.parse_args(["split", "--workspace", "/ws", "--out", "/out"])
    assert {key: getattr(args, key) for key in split} == split
    args = cli.parse_args(["split", "--workspace", "/ws", "--out", "/out", "--no-close", "--no-fill"])
    assert (args.close, args.fill_holes) == (False, False) and split["close"] and split["fill_holes"]


# --- the add-on ---------------------------------------------------------------------------

# Scene property -> the wire's parameter it fills, and for an enum, the wire's choices it offers.
PROPERTY_PARAMS = {"image_scale": (api.IMPORT_DATASET["downscale"], api.IMAGE_SCALES),
                   "test_every": (api.IMPORT_DATASET["test_every"], None),
                   "bounds": (api.IMPORT_DATASET["bounds"], api.BOUNDS),
                   "teacher": (api.TRAIN["teacher"], api.TEACHERS),
                   "clip_model": (api.TRAIN["clip_model"], None),
                   "clip_pretrained": (api.TRAIN["clip_pretrained"], None),
                   "nerf_steps": (api.TRAIN["nerf_steps"], None),
                   "feature_steps": (api.TRAIN["feature_steps"], None),
                   "mesh_resolution": (api.TRAIN["mesh_resolution"], None),
                   "max_faces": (api.TRAIN["max_faces"], None),
                   "texture_size": (api.BAKE["size"], api.TEXTURE_SIZES),
                   "preset": (api.TRAIN["preset"], api.PRESETS)}
# Custom Settings fields whose parameter the preset fills when absent: they start at these.
CUSTOM_DEFAULTS = {"nerf_steps": api.DEFAULT_NERF_STEPS, "feature_steps": api.DEFAULT_FEATURE_STEPS,
                   "mesh_resolution": api.DEFAULT_MESH_RESOLUTION}


def test_the_add_on_s_properties_default_to_the_api_s_and_stay_in_its_ranges(addon):
    rna = type(addon).bl_rna.properties
    for name, (param, choices) in PROPERTY_PARAMS.items():
        prop = rna[name]
        if choices is not None:  # an enum of the wire's choices, by their text
            items = [item.identifier for item in prop.enum_items]
            assert set(items) <= {str(choice) for choice in choices}, name
            assert prop.default == str(param.default), name
            if param.kind == api.INT:
                assert all(param.low <= int(item) <= param.high for item in items), name
        elif prop.type == 'INT':  # its slider within the wire's range
            assert prop.default == (CUSTOM_DEFAULTS[name] if param.default is None else param.default), name
            assert param.low <= prop.hard_min and prop.soft_max <= param.high, name
        else:
            assert prop.default == param.default, name
    assert [item.identifier for item in rna["teacher"].enum_items] == list(api.TEACHERS)
    assert [item.identifier for item in rna["bounds"].enum_items] == list(api.BOUNDS)
    assert rna["negatives"].default == ", ".join(api.CANONICAL_NEGATIVES)


def _check_sent(method_name: str, params: dict, arrays: dict) -> None:
    """`params` are keys of the method's record, each value of its kind and in its range."""
    method = api.METHODS[method_name]
    # A bake sends one object's own triangles, or nothing for the workspace's mesh.
    assert set(arrays) in ({*method.arrays}, *([set()] if method is api.BAKE else [])), method_name
    assert {p.key for p in method.params if p.required} <= set(params), method_name
    _check_values(method_name, method.params, params)


def _check_values(where: str, specs: tuple[api.Param, ...], values: dict) -> None:
    known = {spec.key: spec for spec in specs}
    assert set(values) <= set(known), (where, sorted(set(values) - set(known)))
    for key, value in values.items():
        spec, at = known[key], f"{where}.{key}"
        if spec.kind in (api.TEXT, api.PATH):
            assert isinstance(value, str) and len(value) <= spec.max_len, at
            assert not spec.choices or value in spec.choices, at
        elif spec.kind == api.INT:
            assert isinstance(value, int) and not isinstance(value, bool), at
            assert spec.low <= value <= spec.high and (not spec.choices or value in spec.choices), at
        elif spec.kind == api.FLAG:
            assert isinstance(value, bool), at
        elif spec.kind == api.VECTOR:
            assert len(value) == 3 and np.isfinite(value).all(), at
        else:
            assert len(value) <= spec.max_len, at
            for record in value:
                _check_values(at, spec.fields, record)


def test_every_request_the_add_on_sends_is_one_the_api_describes(worker, tmp_path):
    import bpy
    from addon_helpers import cube_arrays, mesh_reply
    from blender_dff import jobs
    from blender_dff.scene.mesh_import import apply_mesh

    props = bpy.context.scene.dff
    props.dataset_path, props.sam_checkpoint = str(tmp_path), str(tmp_path / "sam_vit_b.pth")
    assert bpy.ops.dff.import_dataset() == {'FINISHED'}
    for teacher in api.TEACHERS:  # each sends its own parameters
        jobs.clear()
        props.teacher = teacher
        assert bpy.ops.dff.train() == {'FINISHED'}
    assert bpy.ops.dff.load_mesh() == {'FINISHED'}

    apply_mesh(bpy.context, mesh_reply(*cube_arrays()))
    props.mesh_object.data.polygons[0].select = True
    jobs.clear()
    assert bpy.ops.dff.bake_texture() == {'FINISHED'}
    part = props.mesh_object.copy()  # another DFF mesh, active: baked on its own
    bpy.context.scene.collection.objects.link(part)
    bpy.context.view_layer.objects.active = part
    jobs.clear()
    assert bpy.ops.dff.bake_texture() == {'FINISHED'} and worker.sent[-1].arrays
    bpy.context.view_layer.objects.active = None
    for mode in ('NEGATIVES', 'LABEL_SET'):
        props.text_mode, props.label_set = mode, "mug, cup"
        assert bpy.ops.dff.select_text(text="mug") == {'FINISHED'}
    assert bpy.ops.dff.select_similar() == {'FINISHED'}
    ray = {"name": "", "origin": (0.0, 0.0, 5.0), "direction": (0.0, 0.0, -1.0), "on_object": True}
    corners = [{**ray, "origin": (x, y, 5.0)} for x, y in ((-1, -1), (1, -1), (1, 1), (-1, 1))]
    assert bpy.ops.dff.click_select(clicks=[ray], box=corners) == {'FINISHED'}
    assert bpy.ops.dff.click_select(box=corners) == {'FINISHED'}
    jobs.clear()
    assert bpy.ops.dff.separate_all() == {'FINISHED'}  # the clip teacher: with its label set

    assert {sent.method for sent in worker.sent} == set(api.METHODS)  # every method, at least once
    for sent in worker.sent:
        _check_sent(sent.method, sent.params, sent.arrays)
