"""open_clip as a teacher of dense, text-aligned features (MaskCLIP) and as the queries' text encoder.

Dense features follow MaskCLIP (Zhou et al., ECCV 2022), as F3RM does on CLIP ViTs: in the last
transformer block the attention's query-key mixing, which makes every token global, is skipped;
each patch token's value embedding goes through the block's output projection, `ln_post` and the
image projection, which land it in the joint image-text space. Positional embeddings are resized
(bicubic) so the ViT runs at any resolution, and the image is encoded at a few sizes whose
unit-length maps are averaged on the finest grid: the small size sees context, the large one
keeps small objects.

`load_clip("tiny")` builds a small CLIP from open_clip's own classes with random weights, for
tests and benchmarks without a download. Every other model needs its pretrained weights: a
random ViT-B-16 would answer text queries with noise.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from blender_dff.wire.api import CLIP_MODEL, CLIP_PRETRAINED, TINY_MODEL as TINY

from ..errors import WorkerError

# Where the user names the weights, for the errors: the command line's flag and the add-on's field.
PRETRAINED_WHERE = "--clip-pretrained (the Pretrained field in Blender)"
DEFAULT_SIZES = (224, 448)  # longer image side of each scale, in pixels
TEXT_CACHE_SIZE = 256       # text embeddings kept per model


def build_tiny_clip(seed: int = 0) -> torch.nn.Module:
    """open_clip's own CLIP class, tiny and random; the same seed gives the same weights (the
    teacher that trains a field and the one that answers its queries must agree)."""
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

    vision = CLIPVisionCfg(layers=2, width=64, head_width=32, patch_size=16, image_size=64)
    text = CLIPTextCfg(context_length=77, vocab_size=49408, width=64, heads=2, layers=2)
    with torch.random.fork_rng(devices=[]):  # leave the caller's random stream untouched
        torch.manual_seed(seed)
        return CLIP(embed_dim=32, vision_cfg=vision, text_cfg=text)


def load_clip(model_name: str, pretrained: str) -> tuple[torch.nn.Module, object]:
    """An open_clip model and its tokenizer. `pretrained` is a tag (downloaded on first use) or a
    local checkpoint file; model "tiny" ignores it (random weights)."""
    import open_clip

    if model_name == TINY:
        return build_tiny_clip().eval(), open_clip.get_tokenizer("ViT-B-16")  # the bundled BPE vocabulary
    _check_names(model_name, pretrained)
    try:
        model = open_clip.create_model(model_name, pretrained=pretrained, require_pretrained=True)
        tokenizer = open_clip.get_tokenizer(model_name)
    except Exception as exc:  # open_clip raises RuntimeError, OSError or hub errors alike
        raise WorkerError("bad_clip_model", f"open_clip could not load the CLIP model '{model_name}' with the "
                          f"weights '{pretrained}' named by {PRETRAINED_WHERE}: {exc}",
                          "Check the pair with open_clip.list_pretrained(). A tag downloads on first use and needs "
                          "the network (in Blender: Allow Online Access); offline, give a checkpoint file.") from exc
    return model.eval(), tokenizer


def _check_names(model_name: str, pretrained: str) -> None:
    """What open_clip would take for random weights, or report in its own words, refused here."""
    if not model_name:
        raise WorkerError("bad_clip_model", "no CLIP model is named",
                          f"Give --clip-model (the CLIP Model field in Blender) an open_clip ViT such as {CLIP_MODEL}.")
    if not pretrained:
        raise WorkerError("bad_clip_model", f"the CLIP model '{model_name}' has no weights: give {PRETRAINED_WHERE} "
                          f"a tag such as {CLIP_PRETRAINED} or a checkpoint file",
                          f"Only the model '{TINY}' runs without weights (random ones, for tests).")
    if any(s in pretrained for s in ("/", "\\")) and not Path(pretrained).expanduser().is_file():
        raise WorkerError("bad_clip_model", f"the CLIP checkpoint {pretrained} named by {PRETRAINED_WHERE} "
                          f"for the model '{model_name}' does not exist",
                          f"Give the path of an open_clip checkpoint file, or a pretrained tag such as {CLIP_PRETRAINED}.")


def _check_vit(model_name: str, visual: torch.nn.Module) -> None:
    from open_clip.transformer import VisionTransformer

    blocks = getattr(getattr(visual, "transformer", None), "resblocks", None)
    attn = getattr(blocks[-1], "attn", None) if blocks else None
    if (not isinstance(visual, VisionTransformer) or visual.attn_pool is not None or visual.proj is None
            or not isinstance(attn, torch.nn.MultiheadAttention) or attn.in_proj_weight is None):
        raise WorkerError("bad_clip_model", f"'{model_name}' is not one of open_clip's own CLIP ViTs, which the dense "
                          "features (MaskCLIP) need", "Pick a ViT model such as ViT-B-16 or ViT-L-14.")


class ClipEncoder:
    """Dense image features and text embeddings of one open_clip ViT, on `device`."""

    def __init__(self, model: torch.nn.Module, tokenizer: object, model_name: str,
                 sizes: tuple[int, ...] = DEFAULT_SIZES, device: torch.device | str = "cpu") -> None:
        _check_vit(model_name, model.visual)
        self.model, self.tokenizer, self.sizes = model.to(device), tokenizer, tuple(sorted(sizes))
        visual = model.visual
        mean = getattr(visual, "image_mean", None) or (0.48145466, 0.4578275, 0.40821073)
        std = getattr(visual, "image_std", None) or (0.26862954, 0.26130258, 0.27577711)
        self.mean = torch.tensor(mean, device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(std, device=device).view(1, 3, 1, 1)
        self.patch = visual.conv1.kernel_size[0]
        self._positions: dict[tuple[int, int], torch.Tensor] = {}
        self._text: OrderedDict[str, torch.Tensor] = OrderedDict()

    @property
    def device(self) -> torch.device:
        return self.mean.device

    @property
    def dim(self) -> int:
        return int(self.model.visual.proj.shape[1])

    @property
    def logit_scale(self) -> float:
        """CLIP's learnt softmax temperature (100 for trained models)."""
        return float(self.model.logit_scale.detach().exp())

    def grid(self, height: int, width: int, size: int | None = None) -> tuple[int, int]:
        """Feature cells (rows, cols) of an image at one size (the largest by default)."""
        scale = (size or self.sizes[-1]) / max(height, width)
        return max(1, round(height * scale / self.patch)), max(1, round(width * scale / self.patch))

    @torch.no_grad()
    def encode_image(self, image: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Unit-length features (C, rows, cols) of an (H, W, 3) RGB image in [0, 1] (floats) or uint8."""
        x = torch.as_tensor(image, device=self.device)
        x = (x.float() / 255 if x.dtype == torch.uint8 else x.float()).permute(2, 0, 1)[None]
        height, width = x.shape[-2:]
        out = None
        for size in self.sizes:
            rows, cols = self.grid(height, width, size)
            resized = F.interpolate(x, (rows * self.patch, cols * self.patch), mode="bilinear", antialias=True,
                                    align_corners=False)
            dense = F.normalize(self._dense((resized - self.mean) / self.std), dim=1)
            target = self.grid(height, width)
            dense = F.interpolate(dense, target, mode="bilinear", align_corners=False) if dense.shape[-2:] != target \
                else dense
            out = dense if out is None else out + dense
        return F.normalize(out, dim=1)[0]

    def _dense(self, x: torch.Tensor) -> torch.Tensor:
        visual = self.model.visual
        tokens = visual.conv1(x)
        rows, cols = tokens.shape[-2:]
        tokens = tokens.flatten(2).transpose(1, 2)
        cls = visual.class_embedding.view(1, 1, -1).to(tokens.dtype)
        x = visual.ln_pre(torch.cat([cls, tokens], 1) + self._position_embedding(rows, cols))
        batch_first = getattr(visual.transformer, "batch_first", True)
        x = x if batch_first else x.transpose(0, 1)
        blocks = visual.transformer.resblocks
        for block in blocks[:-1]:
            x = block(x)
        x = x if batch_first else x.transpose(0, 1)
        last = blocks[-1]
        width = last.attn.embed_dim
        value = F.linear(last.ln_1(x), last.attn.in_proj_weight[2 * width:], last.attn.in_proj_bias[2 * width:])
        x = last.ls_1(last.attn.out_proj(value))
        x = visual.ln_post(x[:, 1:]) @ visual.proj
        return x.transpose(1, 2).reshape(1, -1, rows, cols)

    def _position_embedding(self, rows: int, cols: int) -> torch.Tensor:
        if (rows, cols) not in self._positions:
            visual = self.model.visual
            pos = visual.positional_embedding
            grid_rows, grid_cols = visual.grid_size
            grid = pos[1:].reshape(1, grid_rows, grid_cols, -1).permute(0, 3, 1, 2)
            if (grid_rows, grid_cols) != (rows, cols):
                grid = F.interpolate(grid, (rows, cols), mode="bicubic", align_corners=False)
            self._positions[(rows, cols)] = torch.cat([pos[:1], grid.permute(0, 2, 3, 1).reshape(rows * cols, -1)])
        return self._positions[(rows, cols)]

    def token_count(self, text: str) -> int:
        """Tokens of `text` with its start and end tokens."""
        hf = getattr(self.tokenizer, "tokenizer", None)  # open_clip's wrapper of a Hugging Face tokenizer
        if hf is not None:
            return len(hf(text)["input_ids"])
        return len(self.tokenizer.encode(text)) + 2

    @torch.no_grad()
    def encode_text(self, texts: list[str]) -> torch.Tensor:
        """Unit-length text embeddings (K, C), each kept for later queries."""
        context = self.tokenizer.context_length
        for text in texts:
            if text in self._text:
                continue
            if self.token_count(text) > context:
                raise WorkerError("query_too_long", f"the query '{text[:60]}...' is longer than the {context} "
                                  "tokens the CLIP text encoder reads", "Use a shorter phrase.")
            embedding = self.model.encode_text(self.tokenizer([text]).to(self.device))
            self._text[text] = F.normalize(embedding.float(), dim=-1)[0]
            if len(self._text) > TEXT_CACHE_SIZE:
                self._text.popitem(last=False)
        for text in texts:
            self._text.move_to_end(text)
        return torch.stack([self._text[t] for t in texts])
