"""IntegerSGD (algorithm.md §5) and the integer schedules on ``lr_inv`` (§7)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..backend import abs_max
from . import fused
from .functional import tdiv
from .layers import INT32_MAX, IntegerLinear


def updated_bound(param_bound: int, grad_bound: int, divisor: int, decay_inv: int) -> int:
    """A bound of ``max|param|`` after an IntegerSGD update; OverflowError past int32."""
    decays = decay_inv > 0 and param_bound >= decay_inv
    worst = param_bound + grad_bound // divisor + (param_bound // decay_inv if decays else 0)
    if worst > INT32_MAX:
        raise OverflowError(
            f"an int32 weight could overflow after this update (bound {worst}); lower the learning "
            "rate (raise lr_inv or lower lr_amp) or strengthen weight decay (lower *_decay_inv)"
        )
    return worst


def integer_sgd_step(param: Any, grad: Any, grad_bound: int, param_bound: int,
                     divisor: int, decay_inv: int) -> int:
    """In place ``param -= tdiv(grad, divisor) + tdiv(param, decay_inv)``; returns ``max|param|``.

    The decay term is skipped when ``decay_inv == 0`` and whenever ``max|param| < decay_inv``,
    where ``tdiv(param, decay_inv)`` is zero everywhere anyway.
    """
    updated_bound(param_bound, grad_bound, divisor, decay_inv)  # raises past int32
    decays = decay_inv > 0 and param_bound >= decay_inv
    # past every |G| the quotient is 0 everywhere (and the divisor may not fit int64)
    update = tdiv(grad, divisor) if divisor <= grad_bound else 0
    if decays:
        update = update + tdiv(param, decay_inv)
    param -= update  # int64 -> int32 in place: the bound above proves it fits
    return abs_max(param)


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
        divisor = self.lr_inv * amp
        dense = isinstance(layer, IntegerLinear)
        if dense and layer.bias is None and fused.active(layer.weight):
            grad_bound = layer.weight_grad_bound(delta, x, delta_bound, column_l1)
            updated_bound(layer.weight_bound, grad_bound, divisor, decay_inv)  # raises past int32
            if fused.units_sgd_update(layer, delta, x, grad_bound, divisor, decay_inv) \
                    or fused.sgd_update(layer, delta, x, grad_bound, divisor, decay_inv):
                return
        if dense:
            layer.drop_copies()  # the in-place update below would leave the copies stale
        grad, grad_bound = layer.weight_grad(delta, x, delta_bound) if dense else layer.weight_grad(delta, x)
        layer.weight_bound = integer_sgd_step(layer.weight, grad, grad_bound, layer.weight_bound,
                                              divisor, decay_inv)
        if layer.bias is not None:
            bias_grad = delta.sum(axis=0)
            layer.bias_bound = integer_sgd_step(layer.bias, bias_grad, abs_max(bias_grad),
                                                layer.bias_bound, divisor, decay_inv)


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
