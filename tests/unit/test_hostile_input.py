"""Input made to break the worker: paths leading out of the server's root folder, files that
crash decoders, degenerate captures, a stopped run and the modes of the files written."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

from external_worker import __main__ as cli
from external_worker.errors import WorkerError
from external_worker.server.handlers import make_handlers
from external_worker.workspace import FILE_MODE, Files, Stages, Workspace

from capture_files import frame, ring_poses, save_image, single_transforms, write_json

REPO = Path(__file__).resolve().parents[2]
SIZE = 8  # the smallest image side the worker trains on


def capture(root: Path, size: int = SIZE, count: int = 4, alpha: int | None = None, **meta) -> Path:
    """A transforms.json capture of `count` views around the origin, r_<i>.png beside it."""
    rng = np.random.default_rng(0)
    frames = []
    for i, pose in enumerate(ring_poses(count)):
        pixels = rng.integers(0, 256, (size, size, 3 if alpha is None else 4), dtype=np.uint8)
        if alpha is not None:
            pixels[..., 3] = alpha
        save_image(root / f"r_{i}.png", pixels)
        frames.append(frame(f"r_{i}.png", pose))
    single_transforms(root, frames, **meta)
    return root


def set_file_path(root: Path, index: int, file_path: str) -> None:
    meta = json.loads((root / "transforms.json").read_text())
    meta["frames"][index]["file_path"] = file_path
    write_json(root / "transforms.json", meta)


# --- paths leading out of the root ------------------------------------------------------------


@pytest.fixture
def served(tmp_path):
    """(handlers confined to root/, root/, a capture in root/ds, outside/ holding secret.png)."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    capture(root / "ds")
    save_image(outside / "secret.png", np.zeros((SIZE, SIZE, 3), np.uint8))
    shutil.copytree(root / "ds", outside / "ds")
    return make_handlers(root), root, outside


def refusal(handlers, method: str, params: dict) -> str:
    with pytest.raises(WorkerError) as error:
        handlers[method](params, {}, None)
    assert error.value.code == "path_not_allowed", error.value.to_dict()
    return error.value.message


def import_params(root: Path) -> dict:
    return {"dataset": str(root / "ds"), "workspace": str(root / "ws")}


def refused_alike(handlers, method: str, params: dict, outside: Path, forget) -> None:
    """Refused while what lies outside exists, and refused in the same words once it is gone."""
    existing = refusal(handlers, method, params)
    forget()
    assert refusal(handlers, method, params) == existing
    assert not outside.exists()


@pytest.mark.parametrize("file_path", ["absolute", "../../outside/secret.png"])
def test_a_frame_path_leading_out_of_the_root_is_refused(served, file_path):
    handlers, root, outside = served
    set_file_path(root / "ds", 1, str(outside / "secret.png") if file_path == "absolute" else file_path)
    refused_alike(handlers, "import_dataset", import_params(root), outside, lambda: shutil.rmtree(outside))


def test_an_image_linked_out_of_the_root_is_refused(served):
    handlers, root, outside = served
    (root / "ds" / "r_2.png").unlink()
    (root / "ds" / "r_2.png").symlink_to(outside / "secret.png")
    refused_alike(handlers, "import_dataset", import_params(root), outside, lambda: shutil.rmtree(outside))


def test_a_labels_folder_linked_out_of_the_root_is_refused(served):
    handlers, root, outside = served
    save_image(outside / "labels" / "r_0.png", np.ones((SIZE, SIZE), np.uint8), "L")
    (root / "ds" / "labels").symlink_to(outside / "labels", target_is_directory=True)
    refused_alike(handlers, "import_dataset", import_params(root), outside, lambda: shutil.rmtree(outside))


def test_a_link_inside_the_root_is_followed(served):
    handlers, root, _ = served
    shutil.move(root / "ds" / "r_2.png", root / "kept.png")
    (root / "ds" / "r_2.png").symlink_to(root / "kept.png")
    result, _ = handlers["import_dataset"](import_params(root), {}, None)
    assert result["n_images"] == 4 and result["names"][2] == "r_2.png"


def test_state_json_naming_an_outside_dataset_is_refused(served):
    handlers, root, outside = served
    handlers["import_dataset"](import_params(root), {}, None)
    state_path = root / "ws" / Files.STATE
    state = json.loads(state_path.read_text())
    state["dataset"]["path"] = str(outside / "ds")
    state_path.write_text(json.dumps(state))
    refused_alike(handlers, "train", {"workspace": str(root / "ws")}, outside, lambda: shutil.rmtree(outside))


def test_a_dataset_folder_swapped_for_a_link_after_the_import_is_refused(served):
    handlers, root, outside = served
    handlers["import_dataset"](import_params(root), {}, None)
    shutil.rmtree(root / "ds")
    (root / "ds").symlink_to(outside / "ds", target_is_directory=True)
    refused_alike(handlers, "train", {"workspace": str(root / "ws")}, outside, lambda: shutil.rmtree(outside))


def test_a_workspace_file_linked_out_of_the_root_is_refused(served):
    handlers, root, outside = served
    handlers["import_dataset"](import_params(root), {}, None)
    Workspace(root / "ws").update_stage(Stages.MESH, done=True)
    np.savez(outside / "mesh.npz", vertices=np.eye(3), faces=np.array([[0, 1, 2]]), vertex_colors=np.eye(3))
    (root / "ws" / Files.MESH).symlink_to(outside / "mesh.npz")
    refused_alike(handlers, "get_mesh", {"workspace": str(root / "ws")}, outside, lambda: shutil.rmtree(outside))


@pytest.mark.parametrize("path", ["~no_such_user_dff/ds", "loop/ds", "x" * 300])
def test_paths_that_cannot_be_followed_are_refused_not_crashed_on(served, path):
    handlers, root, _ = served
    (root / "loop").symlink_to(root / "loop")
    refusal(handlers, "import_dataset", {"dataset": str(root / path) if path[0] != "~" else path,
                                         "workspace": str(root / "ws")})


# --- the command line: exit 2 with the file named, never a traceback -------------------------


def run_cli(capsys, *args: str) -> tuple[int, str]:
    code = cli.main(list(args))
    return code, capsys.readouterr().err


def refused_by_cli(capsys, named: Path | str, *args: str) -> str:
    code, err = run_cli(capsys, *args)
    assert code == 2 and "Traceback" not in err and str(named) in err and "hint: " in err, err
    return err


def huge_png(path: Path, side: int = 15000) -> Path:
    """A valid 1x1 PNG whose header claims side x side pixels (PIL's decompression-bomb guard)."""
    save_image(path, np.zeros((1, 1, 3), np.uint8))
    data = bytearray(path.read_bytes())
    data[16:24] = struct.pack(">II", side, side)  # IHDR width, height
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    path.write_bytes(bytes(data))
    return path


def test_an_image_claiming_billions_of_pixels_is_named(tmp_path, capsys):
    ds = capture(tmp_path / "ds")
    huge_png(ds / "r_0.png")
    err = refused_by_cli(capsys, ds / "r_0.png", "import", "--dataset", str(ds), "--workspace", str(tmp_path / "ws"))
    assert "too large" in err


def test_poses_bounds_of_strings_is_named(tmp_path, capsys):
    for i in range(3):
        save_image(tmp_path / "images" / f"{i}.png", np.zeros((SIZE, SIZE, 3), np.uint8))
    np.save(tmp_path / "poses_bounds.npy", np.full((3, 17), "x"))
    refused_by_cli(capsys, tmp_path / "poses_bounds.npy", "import", "--dataset", str(tmp_path),
                   "--workspace", str(tmp_path / "ws"))


@pytest.fixture
def imported(tmp_path, capsys) -> Workspace:
    """A workspace with a tiny capture imported from the command line."""
    ws = tmp_path / "ws"
    assert run_cli(capsys, "import", "--dataset", str(capture(tmp_path / "ds")), "--workspace", str(ws))[0] == 0
    return Workspace(ws)


def test_a_truncated_checkpoint_is_named(imported, capsys):
    imported.update_stage(Stages.NERF, done=True, step=1)
    imported.path(Files.NERF).write_bytes(b"PK\x03\x04 cut short")
    err = refused_by_cli(capsys, imported.path(Files.NERF), "mesh", "--workspace", str(imported.root))
    assert "delete it" in err


def test_a_truncated_mesh_is_named(imported, capsys):
    imported.save_npz(Files.MESH, vertices=np.eye(3), faces=np.array([[0, 1, 2]]), vertex_colors=np.eye(3))
    imported.update_stage(Stages.MESH, done=True)
    data = imported.path(Files.MESH).read_bytes()
    imported.path(Files.MESH).write_bytes(data[:len(data) // 2])
    refused_by_cli(capsys, imported.path(Files.MESH), "bake", "--workspace", str(imported.root), "--size", "512")


def test_a_checkpoint_from_another_version_is_named(imported, capsys):
    imported.update_stage(Stages.NERF, done=True, step=1)
    imported.save_torch(Files.NERF, {"config": {}, "step": 1})  # no weights
    err = refused_by_cli(capsys, imported.path(Files.NERF), "mesh", "--workspace", str(imported.root))
    assert "KeyError" in err


def test_a_mesh_without_faces_is_named(imported, capsys):
    imported.save_npz(Files.MESH, vertices=np.eye(3), vertex_colors=np.eye(3))
    imported.update_stage(Stages.MESH, done=True)
    refused_by_cli(capsys, imported.path(Files.MESH), "bake", "--workspace", str(imported.root), "--size", "512")


def test_a_stage_missing_its_settings_is_named(imported):
    from external_worker.mesh.stored import mesh_voxel

    imported.update_stage(Stages.MESH, done=True)  # no "settings"
    with pytest.raises(WorkerError) as raised:
        mesh_voxel(imported)
    assert raised.value.code == "bad_workspace" and str(imported.path(Files.STATE)) in raised.value.message


def test_a_state_without_its_scene_frame_is_named(imported, capsys):
    state = imported.load_state()
    del state["frame"]
    imported.path(Files.STATE).write_text(json.dumps(state))
    refused_by_cli(capsys, imported.path(Files.STATE), "train", "--workspace", str(imported.root), "--steps", "1")


@pytest.fixture
def read_only(monkeypatch):
    """Every new file refused as a read-only folder refuses it (chmod does not stop root)."""
    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    return lambda: monkeypatch.setattr("tempfile.mkstemp", refuse)


def test_a_read_only_workspace_is_named_on_import(tmp_path, capsys, read_only):
    ds = capture(tmp_path / "ds")
    read_only()
    err = refused_by_cli(capsys, tmp_path / "ws" / Files.STATE, "import", "--dataset", str(ds),
                         "--workspace", str(tmp_path / "ws"))
    assert "Permission denied" in err


def test_a_read_only_workspace_is_named_on_train(imported, capsys, read_only):
    read_only()
    refused_by_cli(capsys, imported.root / Files.NERF, "train", "--workspace", str(imported.root), "--steps", "1",
                   "--rays", "32")


def test_a_read_only_out_file_is_named(imported, capsys, read_only, tmp_path):
    from external_worker.config import from_flat

    args = cli.parse_args(["mesh", "--workspace", str(imported.root)])
    mesh = from_flat(args).mesh
    imported.save_npz(Files.MESH, vertices=np.eye(3), faces=np.array([[0, 1, 2]]), vertex_colors=np.eye(3))
    imported.write_bytes(Files.MESH_PLY, b"ply\n")
    imported.update_stage(Stages.MESH, done=True, settings={
        "resolution": mesh.resolution, "density_threshold": mesh.density_threshold, "max_faces": mesh.max_faces,
        "nerf_step": None})
    read_only()
    refused_by_cli(capsys, tmp_path / "out" / "mesh.ply", "mesh", "--workspace", str(imported.root),
                   "--out", str(tmp_path / "out" / "mesh.ply"))


# --- degenerate captures: refused at import ---------------------------------------------------


@pytest.mark.parametrize("case, named, message", [
    ("1x1 images", "r_0.png", "1x1 pixels"),
    ("downscale 1000", "r_0.png", "1x1 pixels"),
    ("transparent", "r_0.png", "transparent everywhere"),
    ("camera_angle_x pi", "transforms.json", "'camera_angle_x' must be a field of view"),
    ("camera_angle_x 4", "transforms.json", "'camera_angle_x' must be a field of view"),
])
def test_degenerate_captures_are_refused_at_import(tmp_path, capsys, case, named, message):
    options = {"1x1 images": {"size": 1}, "transparent": {"alpha": 0}, "camera_angle_x pi": {"camera_angle_x": np.pi},
               "camera_angle_x 4": {"camera_angle_x": 4.0}}.get(case, {"size": 16})
    ds = capture(tmp_path / "ds", **options)
    downscale = ["--downscale", "1000"] if case == "downscale 1000" else []
    err = refused_by_cli(capsys, ds / named, "import", "--dataset", str(ds), "--workspace", str(tmp_path / "ws"),
                         *downscale)
    assert message in err
    assert not (tmp_path / "ws" / Files.STATE).exists()


# --- Ctrl-C keeps the steps done --------------------------------------------------------------


class Interrupt:
    def __init__(self, at: int | None) -> None:
        self.at, self.steps = at, []

    def progress(self, stage, step, total, metrics=None, message=None, preview=None) -> None:
        if stage == "nerf" and step:
            self.steps.append(step)
        if step == self.at:
            raise KeyboardInterrupt


def test_an_interrupted_run_resumes_where_it_stopped(imported):
    from external_worker import pipeline
    from external_worker.config import NerfConfig, TrainConfig

    config = TrainConfig(steps=3, rays_per_batch=32, checkpoint_every=1000)
    field = NerfConfig(levels=2, log2_table=8, max_res=16, hidden=8, samples_per_ray=16, importance_samples=8)
    with pytest.raises(KeyboardInterrupt):
        pipeline.run_nerf(pipeline.open_scene(imported), config, Interrupt(at=2), field)
    assert imported.load_torch(Files.NERF)["step"] == 2 and imported.stage(Stages.NERF)["step"] == 2
    again = Interrupt(at=None)
    pipeline.run_nerf(pipeline.open_scene(imported), config, again, field)
    assert again.steps == [3]


# --- file modes -------------------------------------------------------------------------------


def test_files_written_get_the_mode_of_the_umask(tmp_path):
    """0o666 less the umask, as open() gives, not mkstemp's 0o600."""
    ws = Workspace(tmp_path / "ws")
    umask = os.umask(0o022)
    os.umask(umask)
    assert FILE_MODE == 0o666 & ~umask
    assert ws.write_bytes("a.bin", b"x").stat().st_mode & 0o777 == FILE_MODE
    ds = capture(tmp_path / "ds")
    subprocess.run([sys.executable, "-m", "external_worker", "import", "--dataset", str(ds), "--workspace",
                    str(tmp_path / "other")], cwd=REPO, check=True, capture_output=True, timeout=300,
                   preexec_fn=lambda: os.umask(0o027))
    for name in (Files.STATE, Files.CAMERAS):
        assert (tmp_path / "other" / name).stat().st_mode & 0o777 == 0o640, name
