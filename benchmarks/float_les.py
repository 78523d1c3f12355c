"""A float32 local-error-signal (LES) MLP in NumPy: the float counterpart of NITRO-D's blocks.

Every hidden layer is a block Linear -> leaky ReLU (slope 1/4: NITRO-ReLU's ``alpha = 4``)
with a learning head Linear -> class scores. The local loss is the squared error of the head's
scores to the one-hot target (the float form of NITRO-D's residual-sum-of-squares loss, with
target 1 instead of 32); ``loss="cross_entropy"`` takes softmax cross-entropy instead. Each
block learns only from its own head: the gradient stops at block boundaries. The output layer
is trained on the same loss on the network's output. He-normal initialisation, Adam (as
scikit-learn's defaults: lr 1e-3, betas 0.9 / 0.999), float32 throughout, biases on.

``fit`` follows the same validation-driven schedule as sknitro (algorithm.md §7): 10% of the
training data held out (stratified), learning rate divided by ``lr_plateau_factor`` after
``lr_plateau_patience`` epochs without a gain of ``tol``, early stopping after
``n_iter_no_change`` epochs without a new best, and the best validated weights are kept. The
schedule is sknitro's own ``PlateauSchedule`` (accuracies compared in permille).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.model_selection import train_test_split

from sknitro.nn.optim import PlateauSchedule


class FloatLESClassifier:
    """Float32 local-loss MLP classifier (see the module docstring)."""

    epoch_log: Any = None  # an object with ``record(model, seconds)``, called after every epoch

    def __init__(self, hidden_layer_sizes: Sequence[int] = (100,), loss: str = "squared_error",
                 learning_rate: float = 1e-3, batch_size: int = 64, max_iter: int = 150,
                 validation_fraction: float = 0.1, n_iter_no_change: int = 35,
                 lr_plateau_factor: int = 3, lr_plateau_patience: int = 15, tol: float = 0.01,
                 negative_slope: float = 0.25, random_state: int = 0) -> None:
        if loss not in ("squared_error", "cross_entropy"):
            raise ValueError(f"loss must be 'squared_error' or 'cross_entropy', got {loss!r}")
        self.hidden_layer_sizes, self.loss, self.learning_rate = tuple(hidden_layer_sizes), loss, learning_rate
        self.batch_size, self.max_iter, self.validation_fraction = batch_size, max_iter, validation_fraction
        self.n_iter_no_change, self.tol = n_iter_no_change, tol
        self.lr_plateau_factor, self.lr_plateau_patience = lr_plateau_factor, lr_plateau_patience
        self.negative_slope, self.random_state = np.float32(negative_slope), random_state

    # -- the network: params_ = [W, b, H, c] per block, then [W_out, b_out] ------------------
    def _init_params(self, n_features: int, n_classes: int, rng: np.random.Generator) -> None:
        def he(fan_in: int, fan_out: int) -> np.ndarray:
            return (rng.standard_normal((fan_in, fan_out)) * np.sqrt(2.0 / fan_in)).astype(np.float32)

        self.params_, fan_in = [], n_features
        for width in self.hidden_layer_sizes:
            self.params_ += [he(fan_in, width), np.zeros(width, np.float32),
                             he(width, n_classes), np.zeros(n_classes, np.float32)]
            fan_in = width
        self.params_ += [he(fan_in, n_classes), np.zeros(n_classes, np.float32)]
        self._moments = [(np.zeros_like(p), np.zeros_like(p)) for p in self.params_]
        self._steps = 0

    def _loss_grad(self, scores: np.ndarray, target: np.ndarray) -> np.ndarray:
        """Gradient of the batch-mean local loss w.r.t. the scores."""
        if self.loss == "cross_entropy":
            exp = np.exp(scores - scores.max(axis=1, keepdims=True))
            scores = exp / exp.sum(axis=1, keepdims=True)
        return (scores - target) / np.float32(len(target))

    def _train_batch(self, x: np.ndarray, target: np.ndarray, lr: float) -> None:
        grads, p = [], self.params_
        for i in range(0, len(p) - 2, 4):
            W, b, H, c = p[i:i + 4]
            z = x @ W + b
            slope = np.where(z > 0, np.float32(1), self.negative_slope)
            a = z * slope
            e = self._loss_grad(a @ H + c, target)  # the head's error
            d = (e @ H.T) * slope  # into the block, through the activation; x gets no gradient
            grads += [x.T @ d, d.sum(axis=0), a.T @ e, e.sum(axis=0)]
            x = a
        e = self._loss_grad(x @ p[-2] + p[-1], target)
        grads += [x.T @ e, e.sum(axis=0)]
        self._adam(grads, lr)

    def _adam(self, grads: list[np.ndarray], lr: float, beta1: float = 0.9, beta2: float = 0.999,
              eps: float = 1e-8) -> None:
        self._steps += 1
        step = np.float32(lr * np.sqrt(1 - beta2**self._steps) / (1 - beta1**self._steps))
        for param, grad, (m, v) in zip(self.params_, grads, self._moments):
            m *= np.float32(beta1)
            m += np.float32(1 - beta1) * grad
            v *= np.float32(beta2)
            v += np.float32(1 - beta2) * grad * grad
            param -= step * m / (np.sqrt(v) + np.float32(eps))

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        """Output-layer scores (the heads are training scaffolding)."""
        x, p = np.asarray(X, dtype=np.float32), self.params_
        for i in range(0, len(p) - 2, 4):
            z = x @ p[i] + p[i + 1]
            x = np.where(z > 0, z, z * self.negative_slope)
        return x @ p[-2] + p[-1]

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.classes_[self.decision_function(X).argmax(axis=1)]

    def score(self, X: np.ndarray, y: np.ndarray) -> float:
        return float(np.mean(self.predict(X) == np.asarray(y)))

    # -- training ----------------------------------------------------------------------------
    def fit(self, X: np.ndarray, y: np.ndarray) -> FloatLESClassifier:
        rng = np.random.default_rng(self.random_state)
        self.classes_, y_idx = np.unique(y, return_inverse=True)
        X = np.asarray(X, dtype=np.float32)
        X, X_val, y_idx, y_val = train_test_split(X, y_idx, test_size=self.validation_fraction,
                                                  random_state=self.random_state, stratify=y_idx)
        targets = np.eye(len(self.classes_), dtype=np.float32)[y_idx]
        self._init_params(X.shape[1], len(self.classes_), rng)
        schedule = PlateauSchedule(self.lr_plateau_factor, self.lr_plateau_patience, round(self.tol * 1000))
        lr_inv, best, self.validation_scores_, self.n_iter_, self.t_ = 1, None, [], 0, 0
        for _ in range(self.max_iter):
            started = time.perf_counter()
            order = rng.permutation(len(X))
            for start in range(0, len(X), self.batch_size):
                batch = order[start:start + self.batch_size]
                self._train_batch(X[batch], targets[batch], self.learning_rate / lr_inv)
            seconds = time.perf_counter() - started
            self.n_iter_, self.t_ = self.n_iter_ + 1, self.t_ + len(X)
            correct = int((self.decision_function(X_val).argmax(axis=1) == y_val).sum())
            self.validation_scores_.append(correct / len(y_val))
            lr_inv, is_best = schedule.update(correct, len(y_val), lr_inv)
            if is_best:
                self.best_validation_score_, best = correct / len(y_val), [p.copy() for p in self.params_]
            if self.epoch_log is not None:
                self.epoch_log.record(self, seconds)
            if schedule.epochs_since_best >= self.n_iter_no_change:
                break
        self.params_ = best
        return self
