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

from blender_dff.wire.api import CANONICAL_NEGATIVES

from ..errors import WorkerError

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


def _logistic(x: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-x)), in place (the arrays are a value per face)."""
    np.clip(x, -80, 80, out=x)
    np.negative(x, out=x)
    np.exp(x, out=x)
    x += 1
    return np.reciprocal(x, out=x)


def against_negatives(query: np.ndarray, negatives: np.ndarray, scale: float) -> np.ndarray:
    """Cosine similarities of the query's phrases (Q, F) and of the negatives (N, F) with every
    face -> (F,) relevancy of the union."""
    if len(negatives) == 0:
        raise WorkerError("bad_request", "no negatives given", f"Use e.g. {', '.join(CANONICAL_NEGATIVES)}.")
    # The softmax of a pair is the logistic of the difference, which grows with it: the min over
    # negatives is reached at the closest negative and the max over phrases at the closest phrase.
    margin = query.max(0)
    margin -= negatives.max(0)
    margin *= scale
    return _logistic(margin)


def in_label_set(similarity: np.ndarray, wanted: np.ndarray, scale: float) -> np.ndarray:
    """Cosine similarities (L, F) of every label with every face, and wanted (L,) bool marking
    the query's phrases -> (F,). With p the softmax over the set, p_query / (p_query + p_other)
    is the logistic of logsumexp(scale * query similarities) - scale * other similarity: the
    softmax's normaliser cancels, so it is never computed."""
    if wanted.all():
        return np.ones(similarity.shape[1], np.float32)
    query = scale * similarity[wanted]
    top = query.max(0)
    margin = top + np.log(np.exp(query - top).sum(0)) if len(query) > 1 else top
    margin -= scale * similarity[~wanted].max(0)
    return _logistic(margin)
