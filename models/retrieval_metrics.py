"""Image-text retrieval metrics: R@k, mean reciprocal rank and chance R@k.

Texts synthesized from labels repeat, so many candidates can be relevant to a query, similarities
tie, and chance R@k is far from k/N; every metric here takes a ``(N_query, N_candidates)`` bool
``relevant`` matrix and breaks ties pessimistically.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import hypergeom


def recall_at_k(similarity: np.ndarray, relevant: np.ndarray, k: int) -> float:
    """Fraction of queries with a relevant candidate among their ``k`` most similar candidates.

    Tie rule (pessimistic, independent of candidate order): candidates with equal similarity are
    ranked irrelevant before relevant, so ties never raise recall; a model giving every candidate
    the same similarity only scores where fewer than ``k`` candidates are irrelevant.

    Args:
        similarity: ``(N_query, N_candidates)``, higher is closer.
        relevant: ``(N_query, N_candidates)`` bool.

    Raises:
        ValueError: shape mismatch, ``k < 1``, non-finite similarity, or a query without any
            relevant candidate.
    """
    _check_k(k)
    return float(np.mean(_ranked_ahead(similarity, relevant) < k))


def mean_reciprocal_rank(similarity: np.ndarray, relevant: np.ndarray) -> float:
    """Mean over queries of 1 / rank of the first relevant candidate (ties: :func:`recall_at_k`).

    Raises:
        ValueError: as :func:`recall_at_k`.
    """
    return float(np.mean(1.0 / (1 + _ranked_ahead(similarity, relevant))))


def chance_recall_at_k(relevant: np.ndarray, k: int) -> float:
    """Expected R@k of a uniformly random ranking: mean over queries of ``1 - C(N-r, k) / C(N, k)``.

    ``r`` is the query's number of relevant candidates out of ``N``; exact (hypergeometric).

    Raises:
        ValueError: ``k < 1`` or a query without any relevant candidate.
    """
    _check_k(k)
    relevant = _checked_relevant(relevant)
    total = relevant.shape[1]
    miss = hypergeom.pmf(0, total, relevant.sum(axis=1), min(k, total))
    return float(np.mean(1.0 - miss))


def _check_k(k: int) -> None:
    """Reject ``k < 1`` (an empty top-k)."""
    if k < 1:
        raise ValueError(f"k must be >= 1; got {k}")


def _checked_relevant(relevant: np.ndarray) -> np.ndarray:
    """``relevant`` as a 2-D bool array in which every query has a relevant candidate."""
    relevant = np.asarray(relevant, dtype=bool)
    if relevant.ndim != 2:
        raise ValueError(f"relevant must be (N_query, N_candidates); got {relevant.shape}")
    empty = np.flatnonzero(~relevant.any(axis=1))
    if empty.size:
        raise ValueError(f"queries without a relevant candidate (R@k undefined): {empty.tolist()}")
    return relevant


def _ranked_ahead(similarity: np.ndarray, relevant: np.ndarray) -> np.ndarray:
    """Per query, how many candidates rank above its first relevant one (pessimistic ties)."""
    similarity = np.asarray(similarity, dtype=float)
    relevant = _checked_relevant(relevant)
    if similarity.shape != relevant.shape:
        raise ValueError(
            f"similarity {similarity.shape} and relevant {relevant.shape} must have the same shape"
        )
    if not np.isfinite(similarity).all():
        raise ValueError("similarity must be finite")
    best = np.where(relevant, similarity, -np.inf).max(axis=1, keepdims=True)
    return (similarity > best).sum(axis=1) + ((similarity == best) & ~relevant).sum(axis=1)
