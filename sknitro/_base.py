"""The estimator base shared by the NITRO-D classifiers: validation, the fit loop, attributes.

The numeric work lives in :mod:`sknitro.nn`; this module turns user data into int8 (via
:mod:`sknitro.encoding`), runs epochs, drives the ``lr_inv`` schedule and early stopping,
and keeps scikit-learn's conventions.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
import warnings
from abc import abstractmethod
from numbers import Integral, Real
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.extmath import softmax
from sklearn.utils.multiclass import check_classification_targets, unique_labels
from sklearn.utils.validation import check_is_fitted, validate_data

from . import persistence
from .backend import DEVICES, get_namespace, to_host
from .encoding import InputEncoder
from .nn.layers import ACTIVATIONS, NITRO_RELU_MEANS, check_dropout_rate
from .nn.network import IntegerNetwork, StepStats
from .nn.optim import IntegerSGD, PlateauSchedule
from .nn.training import train_epoch

# predict_proba = softmax(PROBA_SHARPNESS * scores / target_value): a score at the target
# value against zeros elsewhere gives about 0.86 for 10 classes.
PROBA_SHARPNESS = 4


AUTO_BATCH_SIZE = 64  # the published batch
AUTO_BATCH_MIN = 16


class BaseNitroClassifier(ClassifierMixin, BaseEstimator):
    """Shared implementation of the NITRO-D classifiers (not for direct use)."""

    _parameter_constraints: dict = {
        "hidden_layer_sizes": ["array-like", Interval(Integral, 1, None, closed="left")],
        "activation": [StrOptions(set(ACTIVATIONS))],
        "negative_slope_inv": [Interval(Integral, 1, None, closed="left")],
        "lr_inv": [Interval(Integral, 1, None, closed="left")],
        "lr_amp": [Interval(Integral, 1, None, closed="left"), None],
        "fwd_decay_inv": [Interval(Integral, 0, None, closed="left")],
        "head_decay_inv": [Interval(Integral, 0, None, closed="left")],
        "scale_bits": [Interval(Integral, 0, 24, closed="both")],
        "target_value": [Interval(Integral, 1, 127, closed="both")],
        "dropout": [Interval(Real, 0, 0.95, closed="both")],
        "batch_size": [Interval(Integral, 1, None, closed="left"), StrOptions({"auto"})],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "shuffle": ["boolean"],
        "early_stopping": ["boolean"],
        "validation_fraction": [Interval(Real, 0, 1, closed="neither")],
        "n_iter_no_change": [Interval(Integral, 1, None, closed="left")],
        "tol": [Interval(Real, 0, 1, closed="both")],
        "lr_plateau_factor": [Interval(Integral, 1, None, closed="left")],
        "lr_plateau_patience": [Interval(Integral, 1, None, closed="left")],
        "warm_start": ["boolean"],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
        "device": [StrOptions(set(DEVICES))],
        "callbacks": [callable, list, tuple, None],  # the items: _callback_list
    }

    # -- hooks for the concrete estimators ------------------------------------------------
    @abstractmethod
    def _build_network(self, n_classes: int, rng: np.random.Generator) -> IntegerNetwork:
        """Build a fresh network for the encoded input (``self._input_shape``)."""

    def _validate_X(self, X: Any, reset: bool, y: Any = None) -> Any:
        """Check ``X`` (and ``y`` when given) as scikit-learn does; return the arrays."""
        if y is None:
            return validate_data(self, X, reset=reset, dtype="numeric")
        return validate_data(self, X, y, reset=reset, dtype="numeric")

    def _make_encoder(self) -> InputEncoder:
        return InputEncoder(channel_axis=None)

    def _augmenter(self) -> Any:
        """``augment(batch, rng)`` for the training loop, or None."""
        return None

    def _check_params(self) -> None:
        """Checks that scikit-learn's constraint objects cannot express."""
        sizes = self._hidden_sizes()
        if not all(isinstance(s, Integral) and not isinstance(s, bool) and s > 0 for s in sizes):
            raise ValueError(f"hidden_layer_sizes must be positive integers, got {self.hidden_layer_sizes!r}")
        if self.negative_slope_inv not in NITRO_RELU_MEANS:
            raise ValueError(
                f"negative_slope_inv must be one of {sorted(NITRO_RELU_MEANS)} (the slopes with a "
                f"NITRO-ReLU mean correction), got {self.negative_slope_inv!r}"
            )
        check_dropout_rate("dropout", self.dropout)
        self._callback_list()
        get_namespace(self.device)  # fails clearly without CuPy or a GPU

    def _network_params(self) -> dict:
        """The parameters the network is built from (``_build_network`` reads them): a fitted
        network keeps them, so that continuing to train it (``warm_start``, ``partial_fit``)
        with other values would silently ignore them."""
        return {"hidden_layer_sizes": tuple(self._hidden_sizes()), "activation": self.activation,
                "negative_slope_inv": self.negative_slope_inv, "scale_bits": self.scale_bits,
                "dropout": self.dropout, "lr_amp": self.lr_amp, "fwd_decay_inv": self.fwd_decay_inv,
                "head_decay_inv": self.head_decay_inv}

    def _check_network_params(self) -> None:
        """A ValueError naming the network parameters changed since the network was built
        (models saved before they were recorded are not checked)."""
        built = getattr(self, "_network_built_with", None)
        if not isinstance(built, dict):
            return
        now = self._network_params()
        changed = {name: (built.get(name), value) for name, value in now.items() if built.get(name) != value}
        if changed:
            listed = ", ".join(f"{name}={new!r} (built with {old!r})" for name, (old, new) in changed.items())
            raise ValueError(f"the fitted network was built with other parameters than {listed}; continuing "
                             "to train it would ignore them: set them back, or fit a new network "
                             "(warm_start=False)")

    def _hidden_sizes(self) -> list:
        """``hidden_layer_sizes`` as a list (an int means one block)."""
        sizes = self.hidden_layer_sizes
        return [sizes] if isinstance(sizes, Integral) else list(sizes)

    def _callback_list(self) -> list:
        """``callbacks`` as a list of callables; a ``TypeError`` naming the parameter otherwise
        (also for ``partial_fit`` calls after the first, which skip the parameter checks)."""
        callbacks = self.callbacks
        if callbacks is None:
            return []
        if callable(callbacks):
            return [callbacks]
        if not isinstance(callbacks, (list, tuple)):
            raise TypeError("callbacks must be None, a callable or a list or tuple of callables, "
                            f"got {type(callbacks).__name__}: {callbacks!r}")
        for i, callback in enumerate(callbacks):
            if not callable(callback):
                raise TypeError(f"callbacks[{i}] must be a callable taking (estimator, record), got "
                                f"{type(callback).__name__}: {callback!r}")
        return list(callbacks)

    # -- public API --------------------------------------------------------------------------
    def fit(self, X: Any, y: Any) -> BaseNitroClassifier:
        """Train the network on ``(X, y)`` for up to ``max_iter`` epochs.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training data; uint8 images, integer or float features (see :mod:`sknitro.encoding`).
        y : array-like of shape (n_samples,)
            Class labels of any type.

        Returns
        -------
        self : object
            The fitted estimator. A ``KeyboardInterrupt`` stops training and keeps the model
            of the last finished epoch; so does a callback that returns ``True`` (see
            ``callbacks``), after the epoch it was called for. An error, or a
            ``KeyboardInterrupt``, before the first epoch of a new fit finishes propagates and
            leaves the estimator as it was: fitted as before, or unfitted.
        """
        self._validate_params()
        self._check_params()
        keep = self.warm_start and hasattr(self, "network_")
        if keep:
            self._check_network_params()
        with self._previous_model_on_error(fresh=not keep):
            X, y_idx = self._prepare_data(X, y, first_call=not keep, classes=None)
            if not keep:
                self._initialise(X)
            self._run_epochs(X, y_idx, self.max_iter, monitored=True)
        return self

    def partial_fit(self, X: Any, y: Any, classes: Any = None) -> BaseNitroClassifier:
        """Train for one epoch over ``(X, y)``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)
        classes : array-like of shape (n_classes,), default=None
            Every class that will ever be seen. Required on the first call; later calls may
            omit it, or must pass the same classes.

        Returns
        -------
        self : object
            The callbacks are called after the epoch; what they return has no effect here.
        """
        self._validate_params()  # on every call: set_params may have changed them since
        self._check_params()
        first_call = not hasattr(self, "network_")
        if first_call and classes is None:
            raise ValueError("classes must be passed on the first call to partial_fit")
        if not first_call:
            self._check_network_params()
        if not first_call and classes is not None:
            classes = unique_labels(classes)
            if not np.array_equal(classes, self.classes_):
                raise ValueError(f"classes={classes.tolist()!r} is not the same as on the first call to "
                                 f"partial_fit, {self.classes_.tolist()!r}")
        with self._previous_model_on_error(fresh=first_call):
            X, y_idx = self._prepare_data(X, y, first_call=first_call, classes=classes)
            if first_call:
                self._initialise(X)
            self._run_epochs(X, y_idx, 1, monitored=False)
        return self

    @contextlib.contextmanager
    def _previous_model_on_error(self, fresh: bool) -> Iterator[None]:
        """An error never leaves a half-fitted model: the model is back at the end of its last
        finished epoch (``_run_epochs`` restores it; an epoch finishes when its callbacks have
        returned), and a fresh fit that finished none, stopped by an error or Ctrl-C, leaves
        the estimator as it found it: the model of the fit before, or unfitted."""
        previous = {name: value for name, value in vars(self).items() if fresh and _is_fitted_state(name)}
        try:
            yield
        except BaseException:
            if fresh and (self.__dict__.get("network_") is previous.get("network_") or self.n_iter_ == 0):
                for name in [name for name in vars(self) if _is_fitted_state(name)]:
                    del self.__dict__[name]
                self.__dict__.update(previous)
            raise

    def decision_function(self, X: Any) -> np.ndarray:
        """Integer class scores of the output layer.

        Returns
        -------
        scores : ndarray of shape (n_samples, n_classes), or (n_samples,) for two classes
            int8 scores in ``[-127, 127]`` (``target_value`` means "this class"); for two
            classes, the int16 difference ``score[1] - score[0]``.
        """
        scores = self._scores(X)
        if len(self.classes_) == 2:
            return scores[:, 1].astype(np.int16) - scores[:, 0]
        return scores

    def predict(self, X: Any) -> np.ndarray:
        """Class with the highest integer score (the first one on ties)."""
        scores = self._scores(X)
        return self.classes_[scores.argmax(axis=1)]

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities: a softmax of the integer scores measured in units of
        ``target_value / 4``. The ranking is exactly that of the integer scores.
        """
        scores = self._scores(X).astype(np.float64)
        return softmax(scores * (PROBA_SHARPNESS / self.target_value))

    def predict_log_proba(self, X: Any) -> np.ndarray:
        """Logarithm of :meth:`predict_proba`."""
        return np.log(self.predict_proba(X))

    # -- persistence (pickle, joblib, skops): see sknitro.persistence ---------------------
    def __getstate__(self) -> dict:
        # records the sknitro version and persistence format; a GPU network is stored as a
        # host copy (the live estimator keeps its GPU arrays)
        return persistence.add_persistence_info(super().__getstate__())

    def __setstate__(self, state: dict) -> None:
        # IncompatibleModelError for another persistence format; back to the GPU if possible
        super().__setstate__(persistence.restore_state(state, type(self).__name__))
        if hasattr(self, "network_"):  # a fitted model's parameters are read without a fit to check them
            try:
                self._validate_params()
            except (ValueError, TypeError) as exc:
                raise persistence.InvalidModelError(f"{type(self).__name__}: {exc}") from None

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = False
        tags.non_deterministic = False
        return tags

    # -- fitted attributes derived from the network ------------------------------------
    @property
    def weights_(self) -> list[np.ndarray]:
        """int32 weights of each block's forward layer (``(out, in)``, or ``(F, C, 3, 3)`` for
        a convolution), then of the output layer."""
        check_is_fitted(self)
        layers = [b.forward_layer for b in self.network_.blocks] + [self.network_.output.linear]
        return [np.asarray(to_host(layer.weight)) for layer in layers]

    @property
    def head_weights_(self) -> list[np.ndarray]:
        """int32 weights of each block's learning head (training scaffolding)."""
        check_is_fitted(self)
        return [np.asarray(to_host(b.head.linear.weight)) for b in self.network_.blocks]

    # -- internals ---------------------------------------------------------------------------
    def _batch_size(self, n_samples: int) -> int:
        """``batch_size``; ``"auto"``: 64, or a tenth of the data for fewer than 640 samples
        (at least 16), so that small tables get enough steps per epoch."""
        if self.batch_size != "auto":
            return int(self.batch_size)
        return min(AUTO_BATCH_SIZE, max(AUTO_BATCH_MIN, n_samples // 10))

    def _prepare_data(self, X: Any, y: Any, first_call: bool, classes: Any) -> tuple[np.ndarray, np.ndarray]:
        if y is None:
            raise ValueError(f"{type(self).__name__} requires y to be passed, but the target y is None")
        X, y = self._validate_X(X, reset=first_call, y=y)
        check_classification_targets(y)
        if first_call:
            self.classes_ = unique_labels(y) if classes is None else unique_labels(classes)
            if len(self.classes_) < 2:
                raise ValueError(
                    f"{type(self).__name__} needs samples of at least 2 classes in the data; "
                    f"got 1 class: {self.classes_[0]!r}"
                )
            self.encoder_ = self._make_encoder().fit(X)
        return self.encoder_.transform(X), self._class_indices(y)

    def _class_indices(self, y: np.ndarray) -> np.ndarray:
        """Each label's index into ``classes_`` (int64); ValueError for a label not in it."""
        unseen = np.setdiff1d(unique_labels(y), self.classes_)
        if unseen.size:
            raise ValueError(f"y contains labels not in classes_: {unseen.tolist()!r}")
        return np.searchsorted(self.classes_, y).astype(np.int64)

    def _initialise(self, X: np.ndarray) -> None:
        random_state = check_random_state(self.random_state)
        self._rng = np.random.default_rng(random_state.randint(0, 2**32 - 1, dtype=np.int64))
        self._input_shape = X.shape[1:]
        self.network_ = self._build_network(len(self.classes_), self._rng)
        self._network_built_with = self._network_params()
        self.lr_inv_ = int(self.lr_inv)
        self.n_iter_ = 0
        self.t_ = 0
        self.loss_curve_ = []
        self.history_ = []
        self.validation_scores_ = None
        self.best_validation_score_ = None
        self.head_accuracies_ = []

    def _run_epochs(self, X: np.ndarray, y_idx: np.ndarray, n_epochs: int, monitored: bool) -> None:
        """Train epochs; with ``monitored``, drive the schedule and stopping from an accuracy.

        An epoch finishes when its callbacks have returned: an error or Ctrl-C before that
        puts the weights, the RNG and every record back as the previous epoch left them.
        """
        started = time.perf_counter()
        callbacks = self._callback_list()
        X_val = y_val = None
        if monitored and self.early_stopping:
            X, X_val, y_idx, y_val = self._split_validation(X, y_idx)
            self.validation_scores_ = self.validation_scores_ or []
        best_weights = None
        sgd = IntegerSGD(self.lr_inv_)
        schedule = PlateauSchedule(self.lr_plateau_factor, self.lr_plateau_patience, round(self.tol * 1000))
        for _ in range(n_epochs):
            checkpoint = self._checkpoint()
            previous_lr_inv, previous_best = sgd.lr_inv, best_weights
            epoch_started = time.perf_counter()
            try:
                stats = self._train_one_epoch(X, y_idx, sgd)
                record = self._record_epoch(stats, time.perf_counter() - epoch_started, sgd.lr_inv)
                if monitored:
                    if X_val is not None:
                        correct = int((self.network_.predict_scores(X_val).argmax(axis=1) == y_val).sum())
                        total = len(y_val)
                        record["validation_accuracy"] = correct / total
                        self.validation_scores_.append(correct / total)
                    else:
                        correct, total = stats.n_correct, stats.n_samples
                    sgd.lr_inv, is_best = schedule.update(correct, total, sgd.lr_inv)
                    if is_best and X_val is not None:
                        self.best_validation_score_ = correct / total
                        best_weights = self.network_.get_weights()
                record["elapsed"] = time.perf_counter() - started
                if monitored and self.verbose:
                    print(_format_record(record), flush=True)
                stop = self._call_callbacks(callbacks, record)
            except KeyboardInterrupt:
                self._restore(checkpoint)
                if self.n_iter_ == 0:  # no model to keep: the caller puts back the one before
                    raise
                sgd.lr_inv, best_weights = previous_lr_inv, previous_best
                warnings.warn(
                    f"Training interrupted during epoch {self.n_iter_ + 1}: keeping the model of "
                    f"epoch {self.n_iter_}.", UserWarning, stacklevel=3)
                break
            except Exception:
                self._restore(checkpoint)  # no half-updated weights, no record of an unfinished epoch
                raise
            self.lr_inv_ = sgd.lr_inv  # an error in a later epoch keeps this epoch's schedule
            if stop or (monitored and schedule.epochs_since_best >= self.n_iter_no_change):
                break
        else:
            if monitored and n_epochs > 0:
                warnings.warn(f"Stochastic integer optimizer: maximum iterations ({n_epochs}) reached "
                              "and the optimization hasn't converged yet.", ConvergenceWarning, stacklevel=3)
        self.lr_inv_ = sgd.lr_inv
        if best_weights is not None:
            self.network_.set_weights(best_weights)  # as scikit-learn: keep the best validated model

    def _call_callbacks(self, callbacks: list, record: dict) -> bool:
        """Call every callback (all of them, even after one asked to stop); whether one returned
        ``True``. Only a bool counts, so that a callback returning a count or a list by accident
        does not stop training."""
        stop = False
        for callback in callbacks:
            answer = callback(self, record)
            stop |= isinstance(answer, (bool, np.bool_)) and bool(answer)
        return stop

    def _checkpoint(self) -> dict:
        """What an epoch changes, to put back when it does not finish (see ``_run_epochs``)."""
        lists = {name: getattr(self, name) for name in ("loss_curve_", "history_", "validation_scores_")}
        return {"weights": self.network_.get_weights(), "rng": self._rng.bit_generator.state,
                "n_iter_": self.n_iter_, "t_": self.t_, "head_accuracies_": self.head_accuracies_,
                "best_validation_score_": self.best_validation_score_,
                "lengths": {name: len(values) for name, values in lists.items() if values is not None}}

    def _restore(self, checkpoint: dict) -> None:
        self.network_.set_weights(checkpoint["weights"])
        self._rng.bit_generator.state = checkpoint["rng"]
        for name in ("n_iter_", "t_", "head_accuracies_", "best_validation_score_"):
            setattr(self, name, checkpoint[name])
        for name, length in checkpoint["lengths"].items():
            del getattr(self, name)[length:]

    def _train_one_epoch(self, X: np.ndarray, y_idx: np.ndarray, sgd: IntegerSGD) -> StepStats:
        bar = None
        if self.verbose:
            from tqdm.auto import tqdm

            bar = tqdm(total=X.shape[0], desc=f"epoch {self.n_iter_ + 1}", unit="sample", leave=False,
                       disable=None)  # None: no bar when stderr is not a terminal

        def progress(total: StepStats) -> None:
            bar.n = total.n_samples
            bar.set_postfix(acc=f"{total.n_correct / max(total.n_samples, 1):.4f}", refresh=False)
            bar.update(0)

        try:
            return train_epoch(self.network_, X, y_idx, self.target_value, sgd, self._batch_size(len(X)),
                               self._rng, shuffle=self.shuffle, on_batch=progress if bar else None,
                               augment=self._augmenter())
        finally:
            if bar is not None:
                bar.close()

    def _record_epoch(self, stats: StepStats, seconds: float, lr_inv: int) -> dict:
        self.n_iter_ += 1
        self.t_ += stats.n_samples
        n = max(stats.n_samples, 1)
        loss = stats.squared_error / n
        self.loss_curve_.append(loss)
        self.head_accuracies_ = [c / n for c in stats.head_correct]
        record = {"epoch": self.n_iter_, "loss": loss, "train_accuracy": stats.n_correct / n,
                  "head_accuracies": self.head_accuracies_, "lr_inv": lr_inv, "seconds": seconds}
        self.history_.append(record)
        return record

    def _split_validation(self, X: np.ndarray, y_idx: np.ndarray):
        n_val = int(round(self.validation_fraction * len(y_idx)))
        if n_val < 1 or len(y_idx) - n_val < 1:
            raise ValueError(
                f"validation_fraction={self.validation_fraction} leaves no validation or no training "
                f"sample for {len(y_idx)} samples; lower it or use early_stopping=False"
            )
        counts = np.bincount(y_idx)
        classes = int((counts > 0).sum())  # stratified only where both parts can hold every class
        stratified = counts[counts > 0].min() >= 2 and min(n_val, len(y_idx) - n_val) >= classes
        stratify = y_idx if stratified else None
        seed = int(self._rng.integers(2**31 - 1))
        return train_test_split(X, y_idx, test_size=n_val, random_state=seed, stratify=stratify)

    def _scores(self, X: Any) -> np.ndarray:
        check_is_fitted(self)
        X = self._validate_X(X, reset=False)
        return self.network_.predict_scores(self.encoder_.transform(X))


def _is_fitted_state(name: str) -> bool:
    """Whether an attribute is part of a fitted model (scikit-learn's trailing underscore, and
    the private state a fit sets beside it)."""
    return (name.endswith("_") and not name.startswith("__")) or name in _PRIVATE_FITTED_STATE


_PRIVATE_FITTED_STATE = ("_rng", "_input_shape", "_network_built_with")


def _format_record(record: dict) -> str:
    parts = [f"epoch {record['epoch']:3d}", f"loss {record['loss']:8.2f}",
             f"train acc {record['train_accuracy']:.4f}"]
    if "validation_accuracy" in record:
        parts.append(f"val acc {record['validation_accuracy']:.4f}")
    parts += [f"lr_inv {record['lr_inv']}", f"{record['seconds']:.2f}s"]
    return " | ".join(parts)
