"""Segment Anything's model: its image encoder gives the features the `sam` teacher has the field
imitate, its prompt encoder and mask decoder turn a click or a box on a (teacher or rendered)
feature map into masks (SAN, sections 4.1 and 4.4).

Images go through exactly the steps `SamPredictor.set_image` applies, so teacher features match
what segment-anything itself computes; prompts go through `SamPredictor.predict`'s transforms.
Real checkpoints are loaded from a path; `build_tiny_sam` makes the same classes with tiny random
weights for tests.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import torch
from segment_anything import sam_model_registry
from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer
from segment_anything.utils.transforms import ResizeLongestSide
from torch.nn import functional as F

from ..errors import WorkerError

SAM_IMAGE_SIZE = 1024  # the encoder's square input: long side resized to this, then padded
SAM_FEATURE_SIZE = 64  # SAM_IMAGE_SIZE / patch size 16
SAM_FEATURE_DIM = 256

_PATCH_KEY = "image_encoder.patch_embed.proj.weight"
# (patch-embedding width, number of encoder blocks) -> model type, as in build_sam.py.
_ENCODER_SHAPES = {(768, 12): "vit_b", (1024, 24): "vit_l", (1280, 32): "vit_h"}
_CHECKPOINT_HINT = ("Use an official segment-anything checkpoint: sam_vit_h_4b8939.pth, "
                    "sam_vit_l_0b3195.pth or sam_vit_b_01ec64.pth.")


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The checkpoint's tensors, loaded without running pickled code."""
    path = Path(path)
    if not path.is_file():
        raise WorkerError("bad_checkpoint", f"no SAM checkpoint file at {path}",
                          "Check the path in the preferences. " + _CHECKPOINT_HINT)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch.load fails with many types (pickle, zip, EOF, unsafe global)
        raise WorkerError("bad_checkpoint", f"{path} is not a readable PyTorch checkpoint ({e})",
                          "The file may be truncated: download it again. " + _CHECKPOINT_HINT) from e
    if not isinstance(state, dict) or _PATCH_KEY not in state:
        raise WorkerError("bad_checkpoint", f"{path} is not a segment-anything checkpoint (it has no '{_PATCH_KEY}')",
                          _CHECKPOINT_HINT)
    return state


def _model_type_of(state: dict[str, torch.Tensor], path: Path) -> str:
    width = state[_PATCH_KEY].shape[0]
    depth = len({key.split(".")[2] for key in state if key.startswith("image_encoder.blocks.")})
    if (width, depth) not in _ENCODER_SHAPES:
        raise WorkerError("bad_checkpoint",
                          f"{path} holds an image encoder of width {width} with {depth} blocks, which is none of "
                          "vit_b (768, 12 blocks), vit_l (1024, 24) or vit_h (1280, 32)",
                          "SAM 2, MobileSAM and other variants are not supported. " + _CHECKPOINT_HINT)
    return _ENCODER_SHAPES[(width, depth)]


def model_type_of_checkpoint(path: Path) -> str:
    """"vit_h", "vit_l" or "vit_b", read from the shapes in a segment-anything checkpoint."""
    return _model_type_of(_read_state_dict(path), path)


def load_sam(checkpoint: Path, model_type: str | None = None, device: str | torch.device = "cpu") -> Sam:
    """A SAM model with the checkpoint's weights, in eval mode on `device`. The model type is read
    from the file when not given; a given one must match the file."""
    known = sorted(set(_ENCODER_SHAPES.values()))
    if model_type is not None and model_type not in known:
        raise WorkerError("unknown_model_type", f"unknown SAM model type '{model_type}'",
                          f"Choose one of {', '.join(known)}, or leave it empty to read it from the checkpoint.")
    # Read once and load into an empty model: the registry's own loader would read the file a second
    # time and without weights_only.
    state = _read_state_dict(checkpoint)
    detected = _model_type_of(state, checkpoint)
    if model_type is not None and model_type != detected:
        raise WorkerError("bad_checkpoint", f"{checkpoint} is a {detected} checkpoint, not {model_type}",
                          f"Set the model type to {detected}, or leave it empty.")
    sam = sam_model_registry[detected]()
    try:
        sam.load_state_dict(state)
    except RuntimeError as e:
        raise WorkerError("bad_checkpoint", f"{checkpoint} does not fit the {detected} model: {e}",
                          _CHECKPOINT_HINT) from e
    return sam.to(device).eval()


def build_tiny_sam(seed: int = 0, device: str | torch.device = "cpu") -> Sam:
    """SAM's own classes with tiny random weights and the real interface: 1024 x 1024 input,
    (B, 256, 64, 64) features, 256-wide prompts. The same seed gives the same weights."""
    with torch.random.fork_rng(devices=[]):  # leave the caller's random stream untouched
        torch.manual_seed(seed)
        sam = Sam(
            image_encoder=ImageEncoderViT(
                img_size=SAM_IMAGE_SIZE, patch_size=SAM_IMAGE_SIZE // SAM_FEATURE_SIZE, embed_dim=32, depth=1,
                num_heads=1, mlp_ratio=4, out_chans=SAM_FEATURE_DIM, qkv_bias=True,
                norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), use_rel_pos=True, window_size=14,
                global_attn_indexes=(0,)),
            prompt_encoder=PromptEncoder(
                embed_dim=SAM_FEATURE_DIM, image_embedding_size=(SAM_FEATURE_SIZE, SAM_FEATURE_SIZE),
                input_image_size=(SAM_IMAGE_SIZE, SAM_IMAGE_SIZE), mask_in_chans=16),
            mask_decoder=MaskDecoder(
                num_multimask_outputs=3, transformer_dim=SAM_FEATURE_DIM, iou_head_depth=3, iou_head_hidden_dim=32,
                transformer=TwoWayTransformer(depth=1, embedding_dim=SAM_FEATURE_DIM, mlp_dim=64, num_heads=8)),
        )
    return sam.to(device).eval()


class SamModel:
    """Image encoder = teacher features; prompt encoder + mask decoder = the click decoder."""

    def __init__(self, sam: Sam) -> None:
        self.sam = sam.eval()
        self.transform = ResizeLongestSide(SAM_IMAGE_SIZE)
        self._dense_pe: torch.Tensor | None = None  # the same for every view: computed once

    def dense_pe(self) -> torch.Tensor:
        if self._dense_pe is None:
            with torch.no_grad():
                self._dense_pe = self.sam.prompt_encoder.get_dense_pe()
        return self._dense_pe

    @property
    def device(self) -> torch.device:
        return self.sam.device

    def preprocess(self, images: np.ndarray | torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """(N, H, W, 3) or (H, W, 3) images, float in [0, 1] or uint8 -> the encoder's input batch
        (N, 3, 1024, 1024) and the resized (h, w) before padding.

        Images whose values are all k/255 (photos as loaded) are resized by PIL on uint8 exactly as
        SamPredictor.set_image does; other float images (rendered views) by antialiased bilinear
        resizing in torch, which agrees with PIL's to within about one grey level."""
        x = torch.as_tensor(images)
        if x.ndim == 3:
            x = x[None]
        if x.ndim != 4 or x.shape[-1] != 3 or x.shape[0] == 0:
            raise ValueError(f"expected (N, H, W, 3) RGB images, got shape {tuple(x.shape)}")
        size = ResizeLongestSide.get_preprocess_shape(x.shape[1], x.shape[2], SAM_IMAGE_SIZE)
        if x.dtype != torch.uint8:
            x = x.detach().float() * 255
            if x.min() < -0.01 or x.max() > 255.01:
                raise ValueError(f"float images must lie in [0, 1], got [{x.min() / 255:g}, {x.max() / 255:g}]")
            if (x - x.round()).abs().max() < 1e-3:
                x = x.round().to(torch.uint8)
        if x.dtype == torch.uint8:
            resized = torch.stack([torch.from_numpy(self.transform.apply_image(im)) for im in x.cpu().numpy()])
            resized = resized.to(self.device).permute(0, 3, 1, 2).float()
        else:
            # ResizeLongestSide.apply_image_torch's filter, with the size taken from (H, W).
            resized = F.interpolate(x.to(self.device).permute(0, 3, 1, 2), size, mode="bilinear",
                                    align_corners=False, antialias=True)
        return self.sam.preprocess(resized), size

    @torch.no_grad()
    def encode(self, images: np.ndarray | torch.Tensor, batch_size: int = 4) -> torch.Tensor:
        """Teacher features (N, 256, 64, 64) on the model's device, `batch_size` images at a time
        so that the encoder's activations stay bounded."""
        x = torch.as_tensor(images)  # no copy: chunks are converted one at a time in preprocess
        x = x[None] if x.ndim == 3 else x
        chunks = [self.sam.image_encoder(self.preprocess(x[i:i + batch_size])[0]) for i in range(0, len(x), batch_size)]
        return torch.cat(chunks)

    def valid_feature_region(self, height: int, width: int) -> tuple[int, int]:
        """Feature rows and columns that cover an image of this size rather than the padding: the
        feature imitation loss must only use these cells."""
        h, w = ResizeLongestSide.get_preprocess_shape(height, width, SAM_IMAGE_SIZE)
        patch = SAM_IMAGE_SIZE // SAM_FEATURE_SIZE
        return -(-h // patch), -(-w // patch)

    @torch.no_grad()
    def decode(self, features: np.ndarray | torch.Tensor, image_size: tuple[int, int],
               points: np.ndarray | None = None, point_labels: np.ndarray | None = None,
               box: np.ndarray | None = None, multimask: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Masks for one view from its features (256, 64, 64), teacher's or rendered.

        `points` (K, 2) are pixel (x, y) in the original image of size `image_size` (H, W) with
        `point_labels` 1 (object) or 0 (background); `box` is (x0, y0, x1, y1). Returns masks
        (M, H, W) bool and predicted IoU (M,), best first: M = 3 with `multimask`, else 1."""
        image_size = (int(image_size[0]), int(image_size[1]))
        feats = torch.as_tensor(features).to(self.device, torch.float32)
        if feats.shape != (SAM_FEATURE_DIM, SAM_FEATURE_SIZE, SAM_FEATURE_SIZE):
            raise ValueError(f"expected features of shape (256, 64, 64), got {tuple(feats.shape)}")
        prompt_points, prompt_box = self._prompts(image_size, points, point_labels, box)
        sparse, dense = self.sam.prompt_encoder(points=prompt_points, boxes=prompt_box, masks=None)
        low_res, scores = self.sam.mask_decoder(
            image_embeddings=feats[None], image_pe=self.dense_pe(),
            sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense, multimask_output=multimask)
        input_size = ResizeLongestSide.get_preprocess_shape(image_size[0], image_size[1], SAM_IMAGE_SIZE)
        logits = self.sam.postprocess_masks(low_res, input_size, image_size)[0]
        order = torch.argsort(scores[0], descending=True)
        return (logits[order] > self.sam.mask_threshold).cpu().numpy(), scores[0][order].cpu().numpy()

    def _prompts(self, image_size: tuple[int, int], points: np.ndarray | None, point_labels: np.ndarray | None,
                 box: np.ndarray | None) -> tuple[tuple[torch.Tensor, torch.Tensor] | None, torch.Tensor | None]:
        """Checked prompts in the encoder's input frame, batched, as SamPredictor.predict makes them."""
        if points is None and box is None:
            raise WorkerError("bad_prompt", "no click and no box was given", "Click on the object or draw a box around it.")
        prompt_points = prompt_box = None
        if points is not None or point_labels is not None:
            points = np.asarray(points if points is not None else [], dtype=np.float64)
            labels = np.asarray(point_labels if point_labels is not None else [])
            if points.ndim != 2 or points.shape[1] != 2 or labels.shape != (len(points),) or len(points) == 0:
                raise WorkerError("bad_prompt", f"clicks must be (K, 2) pixel positions with K labels, got points "
                                  f"of shape {points.shape} and labels of shape {labels.shape}",
                                  "Send one (x, y) and one label per click.")
            if not np.isin(labels, (0, 1)).all():
                raise WorkerError("bad_prompt", f"click labels must be 1 (object) or 0 (background), got {labels.tolist()}",
                                  "Use 1 for a click on the object, 0 for a click on what to leave out.")
            coords = self.transform.apply_coords(points, image_size)
            prompt_points = (torch.as_tensor(coords, dtype=torch.float, device=self.device)[None],
                             torch.as_tensor(labels, dtype=torch.int, device=self.device)[None])
        if box is not None:
            box = np.asarray(box, dtype=np.float64)
            if box.shape != (4,):
                raise WorkerError("bad_prompt", f"a box must be (x0, y0, x1, y1), got shape {box.shape}",
                                  "Send the box's two corners in pixels.")
            prompt_box = torch.as_tensor(self.transform.apply_boxes(box, image_size), dtype=torch.float,
                                         device=self.device)
        return prompt_points, prompt_box
