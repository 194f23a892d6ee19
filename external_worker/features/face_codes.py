"""Per-face features as the codes of the feature field's last layer (see `FaceCodes`)."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

ROW_CACHE_BYTES = 1 << 28  # similarity rows kept per table (a row is 4 bytes per face)


@dataclass
class FaceCodes:
    """Per-face features (SAN eq. 7) stored as the input of the field's last, linear layer:
    feature = code @ weight.T + bias, exactly. The code is `hidden` (64) wide whatever the
    teacher's width (256 for SAM, 512+ for CLIP): the file is 4-8x smaller than the features,
    and a dot product with any vector is a 64-wide product per face instead of a 512-wide one."""

    code: np.ndarray    # (F, hidden) float16
    weight: np.ndarray  # (C, hidden) float32
    bias: np.ndarray    # (C,) float32
    norm: np.ndarray    # (F,) float32, |feature| of each face

    def __post_init__(self) -> None:
        self._with_one: np.ndarray | None = None
        self._rows: OrderedDict[str, np.ndarray] = OrderedDict()

    def __len__(self) -> int:
        return len(self.code)

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {"code": self.code, "weight": self.weight, "bias": self.bias, "norm": self.norm}

    @property
    def code_with_one(self) -> np.ndarray:
        """(F, hidden + 1) float32: the codes and a column of ones, so that a dot product with
        a feature-space vector is one matrix product, its bias term included. Made once:
        every query would otherwise convert the whole table."""
        if self._with_one is None:
            self._with_one = np.ones((len(self.code), self.code.shape[1] + 1), np.float32)
            self._with_one[:, :-1] = self.code
        return self._with_one

    def rows(self, index: np.ndarray | slice = slice(None)) -> np.ndarray:
        """The features (n, C) float32 of the faces `index` (all by default)."""
        return self.code[index].astype(np.float32) @ self.weight.T + self.bias

    def dot(self, vectors: np.ndarray) -> np.ndarray:
        """Each of `vectors` (K, C) dotted with every face's feature: (K, F) float32, one row per
        vector (rows keep the per-vector reductions of a query contiguous)."""
        vectors = np.asarray(vectors, np.float32)
        return np.concatenate([vectors @ self.weight, (vectors @ self.bias)[:, None]], 1) @ self.code_with_one.T

    def cosine(self, vectors: np.ndarray) -> np.ndarray:
        """Cosine similarity (K, F) of each of `vectors` (K, C) with every face's feature."""
        vectors = np.asarray(vectors, np.float32)
        out = self.dot(vectors / np.linalg.norm(vectors, axis=1, keepdims=True).clip(1e-12))
        out /= self.norm.clip(1e-12)
        return out

    def cosine_named(self, names: list[str], vectors: np.ndarray) -> np.ndarray:
        """`cosine` of vectors that have names (a query's phrases, with their text embeddings),
        each row kept under its name while memory allows: negatives and label sets repeat from
        query to query, so a new phrase costs one row instead of all of them."""
        missing = [i for i, name in enumerate(names) if name not in self._rows]
        if missing:
            for i, row in zip(missing, self.cosine(np.asarray(vectors)[missing])):
                self._rows[names[i]] = row
        for name in names:
            self._rows.move_to_end(name)
        capacity = max(len(names), ROW_CACHE_BYTES // max(4 * len(self), 1))
        while len(self._rows) > capacity:
            self._rows.popitem(last=False)
        return np.stack([self._rows[name] for name in names])
