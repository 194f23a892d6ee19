"""Per-face features as the codes of the feature field's last layer (see `FaceCodes`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class FaceCodes:
    """Per-face features (SAN eq. 7) stored as the input of the field's last, linear layer:
    feature = code @ weight.T + bias, exactly. The code is `hidden` (64) wide whatever the
    teacher's width (256 for SAM, 512+ for CLIP): the file is 4-8x smaller than the features,
    and a dot product with any vector is a 64-wide product per face instead of a 512-wide one."""

    code: np.ndarray    # (F, hidden) float16
    weight: np.ndarray  # (C, hidden) float32
    bias: np.ndarray    # (C,) float32

    def __post_init__(self) -> None:
        self._code32: np.ndarray | None = None
        self._norms: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.code)

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {"code": self.code, "weight": self.weight, "bias": self.bias}

    @property
    def code32(self) -> np.ndarray:
        if self._code32 is None:  # kept: every query would otherwise convert the whole table
            self._code32 = self.code.astype(np.float32)
        return self._code32

    def rows(self, index: np.ndarray | slice = slice(None)) -> np.ndarray:
        """The features (n, C) float32 of the faces `index` (all by default)."""
        return self.code32[index] @ self.weight.T + self.bias

    def dot(self, vectors: np.ndarray) -> np.ndarray:
        """Every face's feature dotted with each of `vectors` (K, C): (F, K) float32."""
        vectors = np.asarray(vectors, np.float32)
        return self.code32 @ (self.weight.T @ vectors.T) + self.bias @ vectors.T

    def norms(self) -> np.ndarray:
        """|feature| of every face, from the code's Gram form (computed once)."""
        if self._norms is None:
            gram = self.weight.T @ self.weight
            squared = np.einsum("ij,ij->i", self.code32 @ gram, self.code32)
            squared += 2 * self.code32 @ (self.weight.T @ self.bias) + self.bias @ self.bias
            self._norms = np.sqrt(np.maximum(squared, 0))
        return self._norms

    def cosine(self, vectors: np.ndarray) -> np.ndarray:
        """Cosine similarity (F, K) of every face's feature with each of `vectors` (K, C)."""
        vectors = np.asarray(vectors, np.float32)
        unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True).clip(1e-12)
        return self.dot(unit) / self.norms()[:, None].clip(1e-12)
