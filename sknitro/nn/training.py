"""One training epoch: shuffle, cut into batches, train step by step (algorithm.md §7)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ..backend import array_namespace, to_namespace
from . import kernels
from .network import IntegerNetwork, StepStats
from .optim import IntegerSGD


def one_hot(labels: np.ndarray, n_classes: int, value: int) -> np.ndarray:
    """int8 targets: ``value`` at each sample's class index, 0 elsewhere."""
    target = np.zeros((len(labels), n_classes), dtype=np.int8)
    target[np.arange(len(labels)), labels] = value
    return target


def train_epoch(network: IntegerNetwork, X: np.ndarray, labels: np.ndarray, target_value: int,
                sgd: IntegerSGD, batch_size: int, rng: np.random.Generator, shuffle: bool = True,
                on_batch: Callable[[StepStats], Any] | None = None,
                augment: Callable[[Any, np.random.Generator], Any] | None = None) -> StepStats:
    """Train ``network`` for one pass over ``X`` (int8, on the host) and return its counters.

    Every sample is used: the last batch may be smaller than ``batch_size`` (the published
    runs drop it; a library should not silently drop data). ``on_batch`` receives the
    running counters after each batch (progress bars); ``augment(batch, rng)``, when given,
    transforms each batch before the step.
    """
    xp = array_namespace(network.output.linear.weight)
    n = X.shape[0]
    order = rng.permutation(n) if shuffle else np.arange(n)
    targets = one_hot(labels, network.n_classes, target_value)
    total = StepStats()
    try:
        with kernels.select().thread_pools():
            for start in range(0, n, batch_size):
                idx = order[start:start + batch_size]
                batch = to_namespace(X[idx], xp)
                if augment is not None:
                    batch = augment(batch, rng)
                stats = network.train_step(batch, to_namespace(targets[idx], xp),
                                           to_namespace(labels[idx], xp), sgd, rng)
                total.add(stats)
                if on_batch is not None:
                    on_batch(total)
    finally:
        network.drop_weight_copies()
    return total
