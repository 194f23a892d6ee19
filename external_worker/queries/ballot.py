"""The views of one click and the masks they gave: which faces the views agree belong to the
object. A view that disagrees with what the others decide (its segmenter missed the object,
merged it with a neighbour, or was prompted off it) loses its say, whichever view it is,
the clicked one included: the others are asked again without it until they settle.
"""

from __future__ import annotations

import numpy as np

MIN_AGREEMENT = 0.5  # IoU with what the other views decided, under which a view loses its say
ROUNDS = 3           # re-counts without the views that disagree


class Ballot:
    """Each view's mask over the faces (F,) bool, the weight of its word on each face (F,; 0
    where it does not see the face) and its standing (the clicked view counts more)."""

    def __init__(self, faces: int) -> None:
        self.masks: list[np.ndarray] = []
        self.weights: list[np.ndarray] = []
        self.standing: list[float] = []
        self.votes = np.zeros(faces)
        self.seen = np.zeros(faces)

    def __len__(self) -> int:
        return len(self.masks)

    def add(self, mask: np.ndarray, weight: np.ndarray, standing: float = 1.0) -> None:
        self.masks.append(mask)
        self.weights.append(weight)
        self.standing.append(standing)
        self.votes += standing * weight * mask
        self.seen += standing * weight

    def selected(self) -> np.ndarray:
        """(F,) the faces most of the weight that sees them puts in the object, every view counted."""
        return (self.seen > 0) & (self.votes > 0.5 * self.seen)

    def agrees(self, mask: np.ndarray, weight: np.ndarray) -> bool:
        """Whether a new view's mask matches what the views so far decided, where both saw."""
        return _iou(mask, weight, self.selected(), self.seen > 0) >= MIN_AGREEMENT

    def consensus(self) -> tuple[np.ndarray, np.ndarray, int]:
        """Per-face votes and seen weight (F,) of the views that agree with the others (each
        judged against the count without it), and how many views those are."""
        say = np.asarray(self.standing, np.float64)
        for _ in range(ROUNDS):
            votes, seen = self._count(say)
            new_say = np.asarray(self.standing, np.float64).copy()
            for v in range(len(self)):
                if say[v] > 0:
                    others_votes = votes - say[v] * self.weights[v] * self.masks[v]
                    others_seen = seen - say[v] * self.weights[v]
                else:
                    others_votes, others_seen = votes, seen
                others = (others_seen > 0) & (others_votes > 0.5 * others_seen)
                if others.any() and _iou(self.masks[v], self.weights[v], others, others_seen > 0) < MIN_AGREEMENT:
                    new_say[v] = 0.0
            if not new_say.any() or np.array_equal(new_say, say):
                break
            say = new_say
        votes, seen = self._count(say)
        return votes, seen, int((say > 0).sum())

    def _count(self, say: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        votes, seen = np.zeros_like(self.votes), np.zeros_like(self.seen)
        for s, mask, weight in zip(say, self.masks, self.weights):
            if s > 0:
                votes += s * weight * mask
                seen += s * weight
        return votes, seen


def _iou(mask: np.ndarray, weight: np.ndarray, selected: np.ndarray, known: np.ndarray) -> float:
    """IoU of a view's mask with `selected` over the faces the view sees (weight > 0) that are
    `known` (decided by the others: a view's own far side is no disagreement); 1 if none."""
    common = (weight > 0) & known
    mask, chosen = mask & common, selected & common
    union = (mask | chosen).sum()
    return float((mask & chosen).sum() / union) if union else 1.0
