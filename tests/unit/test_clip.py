"""Text queries through a CLIP feature field (DFF): MaskCLIP dense features on open_clip's own
classes with random weights, per-face codes, relevancy against negatives or in a label set."""

from __future__ import annotations

import shutil
from dataclasses import replace

import numpy as np
import pytest
import torch

from blender_dff.wire.api import BACKGROUND_PART, CLIP_MODEL, CLIP_PRETRAINED
from conftest import run_worker
from external_worker import pipeline
from external_worker.queries.click import ClickPrompt
from external_worker.teachers.clip_model import ClipEncoder, load_clip
from external_worker.errors import WorkerError
from external_worker.evaluation import nearest_ground_truth_labels
from external_worker.teachers.oracles import LabelTextOracle
from external_worker.config import FeatureConfig
from external_worker.features.field import FeatureField, face_codes
from external_worker.parts.assign import assign_parts
from external_worker.server.handlers import make_handlers
from external_worker.progress import SilentReporter
from external_worker.queries.relevancy import against_negatives, in_label_set, split_terms
from external_worker.workspace import Workspace
from external_worker.queries.faces import load_geometry
from external_worker.queries.prompt import query_click
from external_worker.queries.text import query_text
from external_worker.training import device
from external_worker.workspace import Files


@pytest.fixture(scope="module")
def encoder():
    model, tokenizer = load_clip("tiny", None)
    return ClipEncoder(model, tokenizer, "tiny", sizes=(64, 128))


def test_dense_features_are_the_last_blocks_value_path(encoder):
    """At the model's own resolution, the features equal MaskCLIP computed from open_clip's own
    forward pass: value embedding of the last block's input, output projection, ln_post, proj."""
    visual = encoder.model.visual
    image = torch.rand(64, 64, 3)
    captured = {}
    hook = visual.transformer.resblocks[-1].register_forward_pre_hook(lambda m, args: captured.update(x=args[0]))
    with torch.no_grad():
        visual(((image.permute(2, 0, 1)[None] - encoder.mean) / encoder.std))
    hook.remove()
    last = visual.transformer.resblocks[-1]
    width = last.attn.embed_dim
    with torch.no_grad():
        value = torch.nn.functional.linear(last.ln_1(captured["x"]), last.attn.in_proj_weight[2 * width:],
                                           last.attn.in_proj_bias[2 * width:])
        expected = visual.ln_post(last.attn.out_proj(value)[:, 1:]) @ visual.proj  # (1, 16, C)
    single = ClipEncoder(encoder.model, encoder.tokenizer, "tiny", sizes=(64,))
    dense = single.encode_image(image.numpy())
    assert dense.shape == (encoder.dim, 4, 4)
    expected = torch.nn.functional.normalize(expected[0].T.reshape(-1, 4, 4), dim=0)
    assert torch.allclose(dense, expected, atol=1e-5)


def test_multi_scale_features_cover_the_image_at_the_finest_grid(encoder):
    image = np.random.default_rng(0).random((96, 160, 3)).astype(np.float32)
    dense = encoder.encode_image(image)
    assert dense.shape == (encoder.dim, *encoder.grid(96, 160)) == (encoder.dim, 5, 8)
    assert torch.allclose(dense.norm(dim=0), torch.ones(5, 8), atol=1e-5)
    coarse_only = ClipEncoder(encoder.model, encoder.tokenizer, "tiny", sizes=(64,)).encode_image(image)
    assert coarse_only.shape[1:] == (2, 4)


def test_text_embeddings_are_cached_and_long_queries_refused(encoder, monkeypatch):
    first = encoder.encode_text(["a red mug", "chair"])
    calls = []
    original = encoder.model.encode_text
    monkeypatch.setattr(encoder.model, "encode_text", lambda tokens: calls.append(tokens) or original(tokens))
    again = encoder.encode_text(["chair", "a red mug"])
    assert not calls and torch.equal(again[0], first[1])
    assert torch.allclose(first.norm(dim=1), torch.ones(2))
    encoder.encode_text(["ein roter Becher", "一把椅子"])  # any language reaches the tokenizer
    assert len(calls) == 2
    with pytest.raises(WorkerError) as error:
        encoder.encode_text(["the chair " * 40])
    assert error.value.code == "query_too_long" and "77 tokens" in error.value.message


def test_face_codes_reproduce_the_fields_features():
    field = FeatureField(48, replace(FeatureConfig(), levels=4, log2_table=10, max_res=32))
    points = np.random.default_rng(1).uniform(-1, 1, (500, 3)).astype(np.float32)
    codes = face_codes(field, points)
    with torch.no_grad():
        features = field.at_points(torch.from_numpy(points)).numpy()
    assert codes.code.dtype == np.float16 and codes.code.shape == (500, 64)
    assert np.allclose(codes.rows(), features, atol=2e-2 * np.abs(features).max())
    assert np.allclose(codes.norm, np.linalg.norm(features, axis=1), rtol=1e-5)
    direction = np.random.default_rng(2).normal(size=(3, 48)).astype(np.float32)
    decoded = codes.rows()
    assert np.allclose(codes.dot(direction), direction @ decoded.T, rtol=1e-4, atol=1e-4)
    cosine = direction @ features.T / np.linalg.norm(features, axis=1) / np.linalg.norm(direction, axis=1)[:, None]
    assert np.allclose(codes.cosine(direction), cosine, atol=1e-2)


def test_relevancy_against_negatives_is_lerfs_min_of_pairwise_softmax():
    rng = np.random.default_rng(3)
    query, negatives = rng.uniform(-1, 1, (2, 200)), rng.uniform(-1, 1, (4, 200))
    scale = 10.0
    pair = lambda q, n: np.exp(scale * q) / (np.exp(scale * q) + np.exp(scale * n))  # noqa: E731
    lerf = np.max([np.min([pair(q, n) for n in negatives], axis=0) for q in query], axis=0)
    assert np.allclose(against_negatives(query, negatives, scale), lerf)
    assert np.array_equal(against_negatives(query[:1], negatives, scale) > 0.5, query[0] > negatives.max(0))


def test_label_set_is_the_softmax_of_the_query_against_the_strongest_other_label():
    rng = np.random.default_rng(4)
    similarity = rng.uniform(-1, 1, (5, 300))
    scale = 20.0
    softmax = np.exp(scale * similarity) / np.exp(scale * similarity).sum(0)
    for wanted in ([1], [1, 2]):
        mask = np.isin(np.arange(5), wanted)
        p_query, p_other = softmax[mask].sum(0), softmax[~mask].max(0)
        assert np.allclose(in_label_set(similarity, mask, scale), p_query / (p_query + p_other))
    one = in_label_set(similarity, np.isin(np.arange(5), [1]), scale)
    assert np.array_equal(one > 0.5, similarity.argmax(0) == 1)  # selected where the query wins


def test_query_terms_split_on_commas_and_empty_queries_are_refused():
    assert split_terms(" cup, saucer ,cup,, ") == ["cup", "saucer"]
    with pytest.raises(WorkerError) as error:
        split_terms(" , ")
    assert error.value.code == "empty_query"


@pytest.fixture(scope="module")
def clip_workspace(trained_workspace, tmp_path_factory, label_names):
    ws = Workspace(tmp_path_factory.mktemp("clip") / "ws")
    shutil.copytree(trained_workspace, ws.root)
    scene = pipeline.open_scene(ws)
    teacher = pipeline.make_teacher("clip", scene.dataset, clip_model="tiny", device=device())
    teacher.targets = LabelTextOracle(teacher.encoder, label_names).targets  # field, codes, queries: the real ones
    pipeline.run_features(scene, teacher, replace(FeatureConfig(), steps=300, augment="off"), SilentReporter())
    return ws


@pytest.fixture(scope="module")
def truth(clip_workspace, ground_truth):
    geometry = load_geometry(clip_workspace)
    return nearest_ground_truth_labels(geometry.centroids, ground_truth["vertices"], ground_truth["faces"],
                                       ground_truth["face_labels"])


def test_text_query_selects_the_named_object(clip_workspace, truth, label_names):
    names = list(label_names.values())
    for label, name in label_names.items():
        relevancy = query_text(clip_workspace, name, "clip", label_set=["background", *names])
        chosen, target = relevancy > 0.5, truth == label
        assert (chosen & target).sum() / (chosen | target).sum() > 0.6, name
    both = list(label_names.items())[:2]
    union = query_text(clip_workspace, ", ".join(n for _, n in both), "clip", label_set=["background", *names])
    assert ((union > 0.5) & np.isin(truth, [l for l, _ in both])).sum() > 0.8 * np.isin(truth, [l for l, _ in both]).sum()


def test_split_cuts_the_mesh_into_the_label_set_s_names(clip_workspace, truth, label_names):
    partition = assign_parts(clip_workspace, "clip", ", ".join(label_names.values()))
    assert partition.names == [*label_names.values(), BACKGROUND_PART]
    for index, label in enumerate(label_names):
        chosen, target = partition.face_part == index, truth == label
        assert (chosen & target).sum() / (chosen | target).sum() > 0.6, label_names[label]


def test_negatives_and_label_set_modes_differ_and_bad_text_is_refused(clip_workspace, label_names):
    name = next(iter(label_names.values()))
    negatives = query_text(clip_workspace, name, "clip")
    label_set = query_text(clip_workspace, name, "clip", label_set=list(label_names.values()))
    assert negatives.shape == label_set.shape and ((negatives > 0.5) != (label_set > 0.5)).any()
    handlers = make_handlers()
    for text, code in (("  ", "empty_query"), ("chair " * 80, "query_too_long")):
        with pytest.raises(WorkerError) as error:
            handlers["query_text"]({"workspace": str(clip_workspace.root), "text": text, "teacher": "clip"}, {}, None)
        assert error.value.code == code
    geometry = load_geometry(clip_workspace)
    eye = clip_workspace.load_npz(Files.CAMERAS)["c2w"][0, :3, 3]
    on_mesh = ClickPrompt.single(eye, geometry.centroids.mean(0) - eye)
    with pytest.raises(WorkerError) as error:
        query_click(clip_workspace, on_mesh, "clip")
    assert error.value.code == "unsupported_query"


def test_clip_teacher_needs_weights_and_a_vit(trained_workspace):
    scene = pipeline.open_scene(Workspace(trained_workspace))
    with pytest.raises(WorkerError, match="pretrained"):
        pipeline.make_teacher("clip", scene.dataset, clip_model="ViT-B-16", clip_pretrained="", device=device())
    with pytest.raises(WorkerError) as error:
        pipeline.make_teacher("clip", scene.dataset, clip_model="ViT-B-16", clip_pretrained="/no/such/clip.bin",
                              device=device())
    assert error.value.code == "bad_clip_model" and "/no/such/clip.bin" in error.value.message
    import open_clip

    with pytest.raises(WorkerError) as error:  # a ResNet CLIP has no patch tokens for MaskCLIP
        ClipEncoder(open_clip.create_model("RN50"), None, "RN50")
    assert error.value.code == "bad_clip_model" and "ViT" in error.value.hint


def test_distill_without_usable_clip_weights_exits_2_naming_the_flag(trained_workspace, tmp_path, monkeypatch):
    """No random CLIP behind the user's back: the default weights, offline and not cached, and
    no weights at all are both refused before any training, naming what to pass."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # nothing is downloaded...
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # ...nor found in a cache
    distill = ["distill", "--workspace", str(trained_workspace), "--teacher", "clip"]
    default = run_worker(*distill, check=False)
    assert default.returncode == 2, default.stderr
    assert all(word in default.stderr for word in ("--clip-pretrained", CLIP_MODEL, CLIP_PRETRAINED)), default.stderr
    empty = run_worker(*distill, "--clip-model", "ViT-B-16", "--clip-pretrained", "", check=False)
    assert empty.returncode == 2, empty.stderr
    assert "--clip-pretrained" in empty.stderr and "Traceback" not in default.stderr + empty.stderr


def test_the_tiny_model_is_the_same_in_every_process():
    first, second = load_clip("tiny", None)[0], load_clip("tiny", None)[0]
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), second.state_dict().values()))
