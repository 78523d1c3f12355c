"""IntegerSGD (algorithm.md §5) and the integer schedules on ``lr_inv`` (§7)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from . import kernels
from .kernels import integer_sgd_step, updated_bound  # noqa: F401  (the rule's reference, in .kernels)
from .layers import IntegerLinear


class IntegerSGD:
    """Integer SGD: ``W -= tdiv(G, lr_inv * amp) + tdiv(W, decay_inv)`` (same for the bias).

    Parameters
    ----------
    lr_inv : int
        Inverse learning rate (512 in the published runs); schedules raise it.
    """

    def __init__(self, lr_inv: int) -> None:
        self.lr_inv = lr_inv

    def step(self, layer: IntegerLinear, delta: Any, x: Any, amp: int, decay_inv: int,
             delta_bound: int | None = None, column_l1: int | None = None) -> None:
        """Update ``layer`` with the gradient of its output ``delta`` for input ``x``.

        ``delta_bound``, when the caller knows one, bounds ``max|delta|``, and ``column_l1``
        is ``max_j sum_i |delta[i, j]|`` (dense layers; see ``weight_grad_bound``).
        """
        kernels.select().sgd_update(layer, delta, x, self.lr_inv * amp, decay_inv, delta_bound, column_l1)


@dataclass
class PlateauSchedule:
    """The integer ``lr_inv`` plateau schedule and the early-stopping counter (§7).

    Accuracies are compared in permille (integers), so decisions are reproducible.

    - ``lr_inv`` is multiplied by ``factor`` after ``patience`` epochs in which the monitored
      accuracy never beat the last reference level by ``min_delta_permille`` (10 = one
      accuracy point, as published); a ``factor`` of 1 keeps it constant.
    - ``epochs_since_best`` counts epochs since the best accuracy so far (any improvement):
      early stopping reads it, and the best model is the one to keep.
    """

    factor: int = 3
    patience: int = 15
    min_delta_permille: int = 10
    best_permille: int = -1
    reference_permille: int = -1
    epochs_since_best: int = 0
    epochs_since_change: int = 0

    def update(self, correct: int, total: int, lr_inv: int) -> tuple[int, bool]:
        """Record an epoch's accuracy ``correct / total``; return ``(lr_inv, is_best)``."""
        permille = correct * 1000 // max(total, 1)
        is_best = permille > self.best_permille
        if is_best:
            self.best_permille = permille
            self.epochs_since_best = 0
        else:
            self.epochs_since_best += 1
        if self.reference_permille < 0 or permille >= self.reference_permille + self.min_delta_permille:
            self.reference_permille = permille
            self.epochs_since_change = 0
        else:
            self.epochs_since_change += 1
            if self.factor > 1 and self.epochs_since_change >= self.patience:
                self.epochs_since_change = 0
                self.reference_permille = permille
                return lr_inv * self.factor, is_best
        return lr_inv, is_best
