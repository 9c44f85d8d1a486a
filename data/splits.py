"""Deterministic, class-stratified index selection shared by the datasets."""

from __future__ import annotations

import numpy as np

from flexsnn.seeding import numpy_rng


def stratified_split(labels: np.ndarray, *, test_fraction: float, seed: int) -> np.ndarray:
    """Deterministic stratified split: a boolean mask over ``labels``, True = test.

    Within each class (members in their given order) a permutation from
    ``numpy_rng(seed, label)`` picks ``round(n_class * test_fraction)`` test members, so each
    class keeps its proportion and the result depends only on (labels, test_fraction, seed).
    """
    labels = np.asarray(labels)
    is_test = np.zeros(labels.size, dtype=bool)
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        n_test = int(round(members.size * test_fraction))
        perm = numpy_rng(seed, int(c)).permutation(members.size)
        is_test[members[perm[:n_test]]] = True
    return is_test


def balanced_subset(labels: np.ndarray, limit: int | None) -> np.ndarray:
    """Indices of a class-balanced subset of at most ``limit`` samples, in their original order.

    Samples are taken round-robin over classes (the first of every class, then the second, ...),
    so ``limit=20`` on ten classes keeps two of each. ``None`` keeps everything.
    """
    labels = np.asarray(labels)
    if limit is None or limit >= labels.size:
        return np.arange(labels.size)
    if limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    rank = np.empty(labels.size, dtype=np.int64)
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        rank[members] = np.arange(members.size)
    order = np.lexsort((labels, rank))  # by rank, then label
    return np.sort(order[:limit])
