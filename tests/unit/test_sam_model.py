"""SAM's model wrapper (SamModel) against segment-anything's own SamPredictor, on a tiny random SAM (no downloads)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from segment_anything import SamPredictor

from external_worker.teachers import sam_model
from external_worker.errors import WorkerError
from external_worker.teachers.sam_model import SamModel, build_tiny_sam, load_sam, model_type_of_checkpoint

HEIGHT, WIDTH = 48, 64


@pytest.fixture(scope="module")
def model() -> SamModel:
    return SamModel(build_tiny_sam(seed=0))


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def predictor(model: SamModel, image: np.ndarray) -> SamPredictor:
    predictor = SamPredictor(model.sam)
    predictor.set_image(image)
    return predictor


def test_tiny_sam_has_the_real_feature_shape_and_is_seeded() -> None:
    images = np.random.default_rng(1).random((2, 20, 30, 3), dtype=np.float32)
    features = SamModel(build_tiny_sam(seed=0)).encode(images, batch_size=1)
    assert features.shape == (2, 256, 64, 64)
    assert not torch.allclose(features[0], features[1])
    torch.manual_seed(123)
    expected_draw = torch.rand(1)
    torch.manual_seed(123)
    first = build_tiny_sam(seed=0).state_dict()
    assert torch.equal(torch.rand(1), expected_draw), "the caller's random stream is left alone"
    same = build_tiny_sam(seed=0).state_dict()
    other = build_tiny_sam(seed=1).state_dict()
    assert all(torch.equal(first[k], same[k]) for k in first)
    assert not all(torch.equal(first[k], other[k]) for k in first)


def test_features_match_sam_predictor(model: SamModel, image: np.ndarray, predictor: SamPredictor) -> None:
    ours = model.encode(image / 255.0)
    assert ours.shape == (1, 256, 64, 64)
    torch.testing.assert_close(ours, predictor.features, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("prompt", [
    dict(points=np.array([[20.0, 10.0]]), point_labels=np.array([1])),
    dict(points=np.array([[20.0, 10.0], [50.0, 40.0]]), point_labels=np.array([1, 0])),
    dict(box=np.array([5.0, 4.0, 40.0, 30.0])),
    dict(points=np.array([[20.0, 10.0]]), point_labels=np.array([0]), box=np.array([5.0, 4.0, 40.0, 30.0])),
])
def test_masks_match_sam_predictor(model: SamModel, predictor: SamPredictor, prompt: dict) -> None:
    want_masks, want_scores, _ = predictor.predict(prompt.get("points"), prompt.get("point_labels"),
                                                   prompt.get("box"), multimask_output=True)
    masks, scores = model.decode(predictor.features[0], (HEIGHT, WIDTH), **prompt)
    assert masks.shape == (3, HEIGHT, WIDTH) and masks.dtype == bool
    assert np.all(np.diff(scores) <= 0), "best mask first"
    order = np.argsort(-want_scores)
    np.testing.assert_allclose(scores, want_scores[order], atol=1e-5)
    np.testing.assert_array_equal(masks, want_masks[order])


def test_single_mask_and_original_size(model: SamModel, predictor: SamPredictor) -> None:
    masks, scores = model.decode(predictor.features[0], (HEIGHT, WIDTH), box=np.array([0, 0, 30, 20]),
                                   multimask=False)
    assert masks.shape == (1, HEIGHT, WIDTH) and scores.shape == (1,)
    masks, _ = model.decode(predictor.features[0].numpy(), (96, 128), points=np.array([[100, 10]]),
                              point_labels=np.array([0]))
    assert masks.shape == (3, 96, 128)


@pytest.mark.parametrize("prompt", [
    dict(),
    dict(points=np.array([[1.0, 2.0]])),
    dict(points=np.array([[1.0, 2.0]]), point_labels=np.array([2])),
    dict(points=np.array([1.0, 2.0]), point_labels=np.array([1])),
    dict(box=np.array([1.0, 2.0, 3.0])),
])
def test_bad_prompts_are_refused(model: SamModel, predictor: SamPredictor, prompt: dict) -> None:
    with pytest.raises(WorkerError) as e:
        model.decode(predictor.features[0], (HEIGHT, WIDTH), **prompt)
    assert e.value.code == "bad_prompt" and e.value.hint


def test_preprocess_pads_bottom_right_and_resizes_floats_like_pil(model: SamModel, image: np.ndarray) -> None:
    photo, size = model.preprocess(image / 255.0)
    assert size == (768, 1024) and photo.shape == (1, 3, 1024, 1024)
    assert torch.all(photo[..., 768:, :] == 0) and photo[..., :768, :].abs().sum(1).min() > 0
    # Not k/255 values (a rendered view): the torch path, which must agree with PIL's resizing.
    rendered, size = model.preprocess(torch.from_numpy(np.minimum(image / 255.0 + 0.3 / 255, 1.0)))
    assert size == (768, 1024)
    pixel = model.sam.pixel_std.view(1, 3, 1, 1)
    difference = ((rendered - photo) * pixel)[..., :768, :]  # in grey levels
    assert difference.mean().item() == pytest.approx(0.3, abs=0.1)
    assert difference.abs().max().item() < 3
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        model.preprocess(image * 2.0)


@pytest.mark.parametrize("height, width, region", [(48, 64, (48, 64)), (30, 64, (30, 64)), (100, 37, (64, 24)),
                                                  (1000, 1000, (64, 64))])
def test_valid_feature_region(model: SamModel, height: int, width: int, region: tuple[int, int]) -> None:
    assert model.valid_feature_region(height, width) == region


def _fake_checkpoint(path, width: int, blocks: int) -> None:
    """Only the tensors whose shapes tell the model type, kept tiny."""
    state = {"image_encoder.patch_embed.proj.weight": torch.zeros(width, 1, 1, 1)}
    state.update({f"image_encoder.blocks.{i}.norm1.weight": torch.zeros(1) for i in range(blocks)})
    torch.save(state, path)


@pytest.mark.parametrize("width, blocks, model_type", [(768, 12, "vit_b"), (1024, 24, "vit_l"), (1280, 32, "vit_h")])
def test_model_type_of_checkpoint(tmp_path, width: int, blocks: int, model_type: str) -> None:
    _fake_checkpoint(tmp_path / "sam.pth", width, blocks)
    assert model_type_of_checkpoint(tmp_path / "sam.pth") == model_type


def test_unusable_checkpoints_name_the_file(tmp_path) -> None:
    (tmp_path / "garbage.pth").write_bytes(b"not a checkpoint")
    _fake_checkpoint(tmp_path / "odd.pth", 512, 8)
    torch.save({"weight": torch.zeros(1)}, tmp_path / "other.pth")
    for name in ["garbage.pth", "odd.pth", "other.pth"]:
        with pytest.raises(WorkerError) as e:
            model_type_of_checkpoint(tmp_path / name)
        assert e.value.code == "bad_checkpoint" and name in e.value.message and e.value.hint


@pytest.fixture
def tiny_vit_b(monkeypatch) -> None:
    """A tiny model stands in for vit_b, so that whole checkpoints stay small and quick to build."""
    monkeypatch.setitem(sam_model._ENCODER_SHAPES, (32, 1), "vit_b")
    monkeypatch.setitem(sam_model.sam_model_registry, "vit_b", lambda: build_tiny_sam(seed=1))


def test_load_sam_refuses_missing_files_and_wrong_types(tmp_path, tiny_vit_b) -> None:
    with pytest.raises(WorkerError) as e:
        load_sam(tmp_path / "missing.pth")
    assert e.value.code == "bad_checkpoint" and "missing.pth" in e.value.message
    _fake_checkpoint(tmp_path / "b.pth", 32, 1)
    with pytest.raises(WorkerError) as e:
        load_sam(tmp_path / "b.pth", model_type="vit_h")
    assert "vit_b" in e.value.message and "vit_b" in e.value.hint
    with pytest.raises(WorkerError) as e:
        load_sam(tmp_path / "b.pth", model_type="vit_x")
    assert e.value.code == "unknown_model_type"
    with pytest.raises(WorkerError) as e:  # the right shapes, but most weights missing
        load_sam(tmp_path / "b.pth")
    assert e.value.code == "bad_checkpoint" and "b.pth" in e.value.message


def test_load_sam_loads_the_weights(tmp_path, tiny_vit_b) -> None:
    saved = build_tiny_sam(seed=0).state_dict()
    torch.save(saved, tmp_path / "tiny.pth")
    sam = load_sam(tmp_path / "tiny.pth")
    assert not sam.training
    assert all(torch.equal(value, saved[key]) for key, value in sam.state_dict().items())
