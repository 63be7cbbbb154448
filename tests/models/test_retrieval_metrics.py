"""Retrieval metrics against hand-worked cases (ties) and simulated random rankings."""

import numpy as np
import pytest

from models.retrieval_metrics import chance_recall_at_k, mean_reciprocal_rank, recall_at_k


def test_recall_at_k_hand_made_with_ties():
    similarity = np.array(
        [
            [0.9, 0.5, 0.1],  # relevant candidate 0 ranked first
            [0.7, 0.7, 0.2],  # relevant candidate 1 tied with irrelevant 0: ranked after it
            [0.3, 0.3, 0.3],  # everything tied: relevant candidates 0 and 1 come after 2
        ]
    )
    relevant = np.array([[1, 0, 0], [0, 1, 0], [1, 1, 0]], dtype=bool)
    assert recall_at_k(similarity, relevant, 1) == pytest.approx(1 / 3)
    assert recall_at_k(similarity, relevant, 2) == pytest.approx(1.0)
    # The tie rule does not depend on candidate order.
    order = [2, 0, 1]
    assert recall_at_k(similarity[:, order], relevant[:, order], 1) == pytest.approx(1 / 3)


def test_mean_reciprocal_rank_uses_the_same_tie_rule():
    similarity = np.array([[0.9, 0.5, 0.1], [0.7, 0.7, 0.2], [0.3, 0.3, 0.3], [0.1, 0.2, 0.3]])
    relevant = np.array([[1, 0, 0], [0, 1, 0], [1, 1, 0], [1, 0, 0]], dtype=bool)
    # Ranks of the first relevant candidate: 1, 2 (tie), 2 (three-way tie, one irrelevant), 3.
    expected = (1 + 1 / 2 + 1 / 2 + 1 / 3) / 4
    assert mean_reciprocal_rank(similarity, relevant) == pytest.approx(expected)
    with pytest.raises(ValueError, match="without a relevant"):
        mean_reciprocal_rank(similarity, np.zeros((4, 3), dtype=bool))


def test_recall_at_k_rejects_query_without_relevant_candidate():
    with pytest.raises(ValueError, match="without a relevant"):
        recall_at_k(np.eye(2), np.array([[True, False], [False, False]]), 1)
    with pytest.raises(ValueError, match="same shape"):
        recall_at_k(np.eye(2), np.eye(3, dtype=bool), 1)
    with pytest.raises(ValueError, match="k must be"):
        recall_at_k(np.eye(2), np.eye(2, dtype=bool), 0)


def test_chance_recall_single_relevant_is_k_over_n():
    relevant = np.eye(10, dtype=bool)
    assert chance_recall_at_k(relevant, 3) == pytest.approx(0.3)
    assert chance_recall_at_k(relevant, 20) == pytest.approx(1.0)


def test_chance_recall_matches_random_rankings():
    rng = np.random.default_rng(0)
    relevant = rng.random((40, 30)) < rng.uniform(0.02, 0.4, (40, 1))
    relevant[np.arange(40), rng.integers(0, 30, 40)] = True
    simulated = np.mean([recall_at_k(rng.random((40, 30)), relevant, 5) for _ in range(2000)])
    assert chance_recall_at_k(relevant, 5) == pytest.approx(simulated, abs=0.01)
