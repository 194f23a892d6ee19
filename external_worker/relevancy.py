"""Text query -> per-face relevancy in [0, 1], from cosine similarities to text embeddings.

Two ways, as the papers do; in both, 0.5 is where the query starts to win:
- against canonical negatives (LERF): for each negative, the softmax of (query, negative)
  similarities, scaled by CLIP's temperature; relevancy is the minimum over the negatives;
- in a label set (DFF eq. 5): softmax over the set; relevancy is the query's probability
  against that of the strongest other label, p_q / (p_q + max p_other), so that a face is
  selected (> 0.5) exactly where the query wins.
Several comma-separated phrases select their union: the best phrase per face against negatives,
the summed probability of the phrases in a label set (DFF's p(M|x) over the set).
"""

from __future__ import annotations

import numpy as np

from .errors import WorkerError

CANONICAL_NEGATIVES = ("object", "things", "stuff", "texture")
MAX_TERMS = 64  # phrases in a query, or labels in a label set


def split_terms(text: str, what: str = "query") -> list[str]:
    """'cup, saucer' -> ['cup', 'saucer'] (duplicates dropped, order kept)."""
    terms = list(dict.fromkeys(t.strip() for t in text.split(",") if t.strip()))
    if not terms:
        raise WorkerError("empty_query", f"the {what} is empty", "Type what to select, e.g. 'chair' or 'cup, saucer'.")
    if len(terms) > MAX_TERMS:
        raise WorkerError("bad_request", f"the {what} has {len(terms)} phrases, more than {MAX_TERMS}",
                          "Use fewer comma-separated phrases.")
    return terms


def _softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def against_negatives(query: np.ndarray, negatives: np.ndarray, scale: float) -> np.ndarray:
    """query (F, Q) and negatives (F, N) cosine similarities -> (F,) relevancy of the union."""
    if negatives.shape[1] == 0:
        raise WorkerError("bad_request", "no negatives given", f"Use e.g. {', '.join(CANONICAL_NEGATIVES)}.")
    # The softmax of a pair is the logistic of the difference, which grows with it: the min over
    # negatives is reached at the closest negative and the max over phrases at the closest phrase.
    margin = query.max(1) - negatives.max(1)
    return 1 / (1 + np.exp(-scale * margin))


def in_label_set(similarity: np.ndarray, wanted: np.ndarray, scale: float) -> np.ndarray:
    """similarity (F, L) to every label, wanted (L,) bool marking the query's phrases -> (F,)."""
    probability = _softmax(scale * similarity)
    chosen = probability[:, wanted].sum(1)
    if wanted.all():
        return np.ones(len(similarity), np.float32)
    strongest_other = probability[:, ~wanted].max(1)
    return chosen / (chosen + strongest_other)
