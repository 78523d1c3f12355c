"""NitroCNNClassifier: a convolutional NITRO-D network trained with integer arithmetic only."""

from __future__ import annotations

import functools
import math
from numbers import Integral, Real
from typing import Any

import numpy as np
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import validate_data

from ._base import BaseNitroClassifier
from .encoding import InputEncoder
from .backend import to_namespace
from .nn.augment import random_crop_flip
from .nn.calibration import calibrate_scaling
from .nn.layers import check_dropout_rate
from .nn.network import IntegerNetwork, build_cnn

# feature extractors: an int is a 3×3 conv block of that many channels, "M" a 2×2 max pool
PRESETS: dict[str, dict[str, Any]] = {
    "small": {"features": (32, "M"), "head_dim": 2048},
    "compact": {"features": (32, "M", 64, "M"), "head_dim": 2048},
    "vgg8b": {"features": (128, 256, "M", 256, 512, "M", 512, "M", 512, "M"), "head_dim": 4096},
    "vgg11b": {"features": (128, 128, 128, 256, "M", 256, 512, "M", 512, 512, "M", 512, "M"),
               "head_dim": 4096},
}


class NitroCNNClassifier(BaseNitroClassifier):
    """Convolutional classifier trained with integer arithmetic only (NITRO-D).

    The network is the published NITRO-D CNN: each convolution is a local-loss block (3×3
    IntegerConv2d -> NITRO scaling -> integer activation) whose learning head pools the
    block's activation to at most ``head_dim`` values and scores the classes; 2×2 max
    pooling (floor mode) and dropout run between blocks, where no gradient crosses them;
    dense blocks and the output layer follow, as in :class:`NitroMLPClassifier`. Every
    other parameter and attribute is that of :class:`NitroMLPClassifier`.

    Parameters
    ----------
    architecture : {"small", "compact", "vgg8b", "vgg11b"} or sequence, default="small"
        A preset, or the feature extractor as a sequence of conv widths (int) and ``"M"``
        (2×2 max pooling, stride 2, floor mode: 7 -> 3): "small" is conv32-pool (seconds on
        digits), "compact" conv32-pool-conv64-pool; the VGG presets are the published ones.
    hidden_layer_sizes : array-like of int, default=()
        Dense blocks after the feature extractor (the published VGGs use (1024,)).
    head_dim : int, default=None
        Largest flattened size of a conv block's head input; None: 2048, or 4096 for the
        VGG presets.
    head_pooling : {"max", "avg"}, default="max"
        Pooling of the conv heads.
    conv_dropout : float, default=0.0
        Dropout after each conv block (on the feature path: the block's own head reads the
        activation before it).
    dropout : float, default=0.0
        Dropout after each dense block and, when ``conv_dropout`` is 0, once more before the
        last layer of the feature extractor, as in the published VGG runs.
    scale_calibration : bool, default=False
        Calibrate the initial weights to the NITRO scaling: on one random batch of the
        training data, multiply each block's initial forward weights by the integer gain
        that spreads its scaled pre-activations over the int8 range
        (:mod:`sknitro.nn.calibration`). A departure from NITRO-D, off by default: with the
        published initialisation, a deep network's blocks after the first pass almost no
        signal until the blocks before them have grown their weights. Heads, the output
        layer and training itself are unchanged.
    augment : bool, default=False
        Per-sample random crop (after padding by ``crop_padding`` pixels of black) and random
        horizontal flip, each with probability 0.5, during training.
    crop_padding : int, default=2
        Padding of the random crop.
    image_shape : tuple of int, default=None
        ``(H, W)`` or ``(C, H, W)`` of each sample when ``X`` is flat ``(n, d)``. Without it a
        flat ``X`` is read as one-channel square images when ``d`` is a perfect square, and as
        ``1 × d`` images otherwise. ``X`` may also be ``(n, H, W)`` or ``(n, C, H, W)`` (whose
        shape, when ``image_shape`` is given too, must be it).
    lr_inv : int, default=384
        Inverse learning rate (see :class:`NitroMLPClassifier`; the published runs use 512).
    max_iter : int, default=40
        Maximum number of epochs of :meth:`fit` (conv epochs cost more than dense ones).
    **mlp_parameters
        ``activation``, ``negative_slope_inv``, ``lr_amp``, ``fwd_decay_inv``,
        ``head_decay_inv``, ``scale_bits``, ``target_value``, ``batch_size``,
        ``shuffle``, ``early_stopping``, ``validation_fraction``, ``n_iter_no_change``,
        ``tol``, ``lr_plateau_factor``, ``lr_plateau_patience``, ``warm_start``,
        ``random_state``, ``verbose``, ``device``, ``callbacks`` (called after every epoch
        with ``(estimator, record)``; ``True`` ends :meth:`fit`): see
        :class:`NitroMLPClassifier`.

    Attributes
    ----------
    image_shape_ : tuple of int
        ``(C, H, W)`` of the images the network was built for.
    Every attribute of :class:`NitroMLPClassifier` (``classes_``, ``weights_``, ...).

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from sknitro import NitroCNNClassifier
    >>> X, y = load_digits(return_X_y=True)
    >>> clf = NitroCNNClassifier(architecture=[16, "M"], hidden_layer_sizes=(),
    ...                          max_iter=10, random_state=0).fit(X[:1500], y[:1500])
    >>> clf.image_shape_
    (1, 8, 8)
    """

    _parameter_constraints: dict = {
        **BaseNitroClassifier._parameter_constraints,
        "architecture": [StrOptions(set(PRESETS)), "array-like"],
        "head_dim": [Interval(Integral, 1, None, closed="left"), None],
        "head_pooling": [StrOptions({"max", "avg"})],
        "conv_dropout": [Interval(Real, 0, 0.95, closed="both")],
        "scale_calibration": ["boolean"],
        "augment": ["boolean"],
        "crop_padding": [Interval(Integral, 1, None, closed="left")],
        "image_shape": ["array-like", None],
    }

    def __init__(self, architecture="small", hidden_layer_sizes=(), head_dim=None,
                 head_pooling="max", conv_dropout=0.0, dropout=0.0, scale_calibration=False,
                 augment=False, crop_padding=2,
                 image_shape=None, activation="nitro_relu", negative_slope_inv=4, lr_inv=384,
                 lr_amp=None, fwd_decay_inv=10000, head_decay_inv=8000, scale_bits=8,
                 target_value=32, batch_size="auto", max_iter=40, shuffle=True, early_stopping=False,
                 validation_fraction=0.1, n_iter_no_change=20, tol=0.001, lr_plateau_factor=3,
                 lr_plateau_patience=10, warm_start=False, random_state=None, verbose=False,
                 device="cpu", callbacks=None):
        self.architecture = architecture
        self.hidden_layer_sizes = hidden_layer_sizes
        self.head_dim = head_dim
        self.head_pooling = head_pooling
        self.conv_dropout = conv_dropout
        self.dropout = dropout
        self.scale_calibration = scale_calibration
        self.augment = augment
        self.crop_padding = crop_padding
        self.image_shape = image_shape
        self.activation = activation
        self.negative_slope_inv = negative_slope_inv
        self.lr_inv = lr_inv
        self.lr_amp = lr_amp
        self.fwd_decay_inv = fwd_decay_inv
        self.head_decay_inv = head_decay_inv
        self.scale_bits = scale_bits
        self.target_value = target_value
        self.batch_size = batch_size
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.tol = tol
        self.lr_plateau_factor = lr_plateau_factor
        self.lr_plateau_patience = lr_plateau_patience
        self.warm_start = warm_start
        self.random_state = random_state
        self.verbose = verbose
        self.device = device
        self.callbacks = callbacks

    # -- hooks ---------------------------------------------------------------------------
    def _check_params(self) -> None:
        super()._check_params()
        self._features()
        check_dropout_rate("conv_dropout", self.conv_dropout)
        self._given_image_shape()

    def _network_params(self) -> dict:
        features, head_dim = self._features()
        return {**super()._network_params(), "architecture": tuple(features), "head_dim": head_dim,
                "head_pooling": self.head_pooling, "conv_dropout": self.conv_dropout}

    def _given_image_shape(self) -> tuple[int, int, int] | None:
        """``image_shape`` as ``(C, H, W)``; a ValueError naming it unless it holds 2 or 3
        positive integers."""
        if self.image_shape is None:
            return None
        shape = tuple(self.image_shape)
        if len(shape) not in (2, 3) or not all(isinstance(s, Integral) and not isinstance(s, bool) and s > 0
                                               for s in shape):
            raise ValueError("image_shape must be (H, W) or (C, H, W) of positive integers, got "
                             f"{self.image_shape!r}")
        return tuple(int(s) for s in ((1, *shape) if len(shape) == 2 else shape))

    def _features(self) -> tuple[list[Any], int]:
        if isinstance(self.architecture, str):
            preset = PRESETS[self.architecture]
            features, head_dim = list(preset["features"]), preset["head_dim"]
        else:
            features, head_dim = list(self.architecture), 2048
        if not features or not all(f == "M" or (isinstance(f, Integral) and f > 0) for f in features) \
                or features[0] == "M":
            raise ValueError("architecture must be a preset name or a sequence of positive conv widths "
                             f"and 'M' (max pooling), starting with a conv; got {self.architecture!r}")
        return features, head_dim if self.head_dim is None else self.head_dim

    def _validate_X(self, X: Any, reset: bool, y: Any = None) -> Any:
        """``X`` as ``(n, C, H, W)``. Images of any accepted layout are flattened first, so
        that scikit-learn's checks (and ``n_features_in_``, the pixels per sample) treat
        image and flat input alike; a flat row of the fitted size is that image."""
        ndim = X.ndim if hasattr(X, "ndim") else np.asarray(X).ndim
        if ndim > 4:
            raise ValueError(f"X must be 2-D (flat), 3-D (n, H, W) or 4-D (n, C, H, W); got {ndim}-D")
        if ndim in (3, 4):
            X = self._flatten_images(np.asarray(X), reset)
        elif reset:
            self.image_shape_ = None  # set below from the number of features
        kwargs = {"reset": reset, "dtype": "numeric"}
        try:
            out = validate_data(self, X, **kwargs) if y is None else validate_data(self, X, y, **kwargs)
        except ValueError as exc:
            if reset or "features" not in str(exc):
                raise
            raise ValueError(f"{exc} {type(self).__name__} was fitted on images of shape {self.image_shape_} "
                             f"({math.prod(self.image_shape_)} features when flat).") from None
        X, y = (out, None) if y is None else out
        if reset and self.image_shape_ is None:
            self.image_shape_ = self._flat_image_shape(X.shape[1])
        X = X.reshape(X.shape[0], *self.image_shape_)
        return X if y is None else (X, y)

    def _flatten_images(self, X: np.ndarray, reset: bool) -> np.ndarray:
        shape = tuple(int(s) for s in (X.shape[1:] if X.ndim == 4 else (1, *X.shape[1:])))
        if reset:
            given = self._given_image_shape()
            if given is not None and given != shape:
                raise ValueError(f"X has images of shape {shape}, but image_shape is {self.image_shape!r}")
            self.image_shape_ = shape
        elif shape != tuple(self.image_shape_):
            raise ValueError(f"X has images of shape {shape}, but {type(self).__name__} was fitted on "
                             f"images of shape {tuple(self.image_shape_)}")
        return X.reshape(X.shape[0], math.prod(shape))  # (not -1: X may hold no image)

    def _flat_image_shape(self, n_features: int) -> tuple[int, int, int]:
        shape = self._given_image_shape()
        if shape is not None:
            if math.prod(shape) != n_features:
                raise ValueError(f"image_shape {self.image_shape!r} does not match the {n_features} "
                                 "features of X")
            return shape
        side = math.isqrt(n_features)
        return (1, side, side) if side * side == n_features else (1, 1, n_features)

    def _initialise(self, X: np.ndarray) -> None:
        super()._initialise(X)
        if self.scale_calibration:
            batch = self._rng.choice(X.shape[0], size=min(self._batch_size(X.shape[0]), X.shape[0]), replace=False)
            calibrate_scaling(self.network_, to_namespace(X[np.sort(batch)], self.network_.namespace()))

    def _make_encoder(self) -> InputEncoder:
        return InputEncoder(channel_axis=1)

    def _augmenter(self) -> Any:
        if not self.augment:
            return None
        black = self.encoder_.black_level(self.image_shape_)
        return functools.partial(random_crop_flip, padding=self.crop_padding, black=black)

    def _build_network(self, n_classes: int, rng: np.random.Generator) -> IntegerNetwork:
        features, head_dim = self._features()
        return build_cnn(
            self.image_shape_, features, self._hidden_sizes(), n_classes, activation=self.activation,
            negative_slope_inv=self.negative_slope_inv, scale_bits=self.scale_bits,
            conv_dropout=self.conv_dropout, dropout=self.dropout, head_dim=head_dim,
            head_pooling=self.head_pooling, lr_amp=self.lr_amp, fwd_decay_inv=self.fwd_decay_inv,
            head_decay_inv=self.head_decay_inv, rng=rng, device=self.device,
        )

