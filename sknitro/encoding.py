"""The input boundary: user features become int8 here, and only here (algorithm.md §2).

Two fitted encoders, both a mean-absolute-deviation (MAD) standardisation
``x' = clip((x - mean) * scale / mad, -127, 127)``, rounded; ``mean ± 1.25 MAD`` is about
one standard deviation:

- integer input (uint8 images and any integer features) is encoded with integer
  arithmetic only: ``x' = clip(tdiv((x - mean) * scale, mad), -127, 127)`` with
  ``mean = tdiv(sum(x), n)`` and ``mad = tdiv(sum(|x - mean|), n)``. uint8 images are first
  shifted by -128 and share one mean/MAD per channel; other integer features (bools count
  as 0 and 1) get one per feature, and a model fitted on them also takes floats holding
  whole values;
- float features use the same formula in float64, per feature, each on its own scale, and
  round the result: this is the one place where sknitro touches a float, before training
  starts. Integer features too large for exact int64 arithmetic (beyond ``±2**55``) take
  this rule too.

``scale`` is :data:`MAD_SCALE` (51: a standard deviation maps to ±64, saturating beyond
about 2 standard deviations) for uint8 images, and for every input of the CNN; the MLP
encodes integer and float features with :data:`TABLE_MAD_SCALE` (26: a standard deviation
maps to ±32, saturating beyond about 4), see :class:`InputEncoder`.

Everything after the boundary (training and inference) is integer.
"""

from __future__ import annotations


import numpy as np

from .nn import kernels
from .nn.functional import tdiv, to_int8
from .nn.state import InvalidModelError, check_array, check_int, checked_state

MAD_SCALE = 51  # 64 / 1.25: MAD ≈ 0.8 std, so a standard deviation maps to ±64
# 32 / 1.25 (rounded): a standard deviation maps to ±32 and int8 saturates beyond about 4 of
# them, not 2. Table columns are often skewed or heavy-tailed (wine, breast cancer: 3 to 5 %
# of the values saturate at 51), and their tails are information; pixels are bounded.
TABLE_MAD_SCALE = 26
_LEGACY_SCALE = MAD_SCALE  # the scale of models saved before encoders recorded theirs
MAD_FLOOR = 1e-300  # a float MAD is at least this: MAD_SCALE / mad stays finite
_CHUNK_ROWS = 2048  # encode in chunks: wide intermediates of a whole data set are large


class InputEncoder:
    """Fitted int8 encoder of an estimator's input.

    Parameters
    ----------
    channel_axis : int or None
        For uint8 images: the axis holding channels (statistics are shared by every pixel of
        a channel). ``None`` treats all pixels as one channel.
    feature_scale : int, default=MAD_SCALE
        Multiplier of the integer and float rules, ``(x - mean) * feature_scale / mad``, in
        ``[1, 63]`` (the integer rule stays exact in int64). uint8 images always use
        :data:`MAD_SCALE` (51: a standard deviation maps to ±64). :class:`NitroMLPClassifier`
        passes :data:`TABLE_MAD_SCALE` (26: a standard deviation maps to ±32, so that int8
        saturates beyond about 4 standard deviations rather than 2 and keeps the tails of
        skewed table columns; the measurement is in the benchmark pages);
        :class:`NitroCNNClassifier` keeps the default.

    Attributes
    ----------
    kind : {"image", "integer", "float"}
        The rule chosen from the dtype seen in :meth:`fit`.
    scale : int
        The multiplier in use: :data:`MAD_SCALE` for "image", ``feature_scale`` otherwise.
    mean, mad : arrays
        Per-channel or per-feature statistics (integer for "image" and "integer").
    """

    def __init__(self, channel_axis: int | None = None, feature_scale: int = MAD_SCALE) -> None:
        self.channel_axis = channel_axis
        self.feature_scale = feature_scale

    def fit(self, X: np.ndarray) -> InputEncoder:
        scale = self.feature_scale
        if isinstance(scale, bool) or not isinstance(scale, (int, np.integer)) or not 1 <= scale <= MAX_SCALE:
            raise ValueError(f"feature_scale must be an integer in [1, {MAX_SCALE}], got {scale!r}")
        self.scale = MAD_SCALE if X.dtype == np.uint8 else int(scale)
        if X.dtype == np.uint8:
            self.kind = "image"
            self._fit_image(X)
        elif X.dtype.kind in "biu" and _fits_integer_rule(X):  # bool: the integers 0 and 1
            self.kind = "integer"
            self.mean, self.mad = _integer_mean_mad(X)
        else:  # floats, and integers too large for exact int64 arithmetic
            self.kind = "float"
            self.mean, mad = _float_mean_mad(X)
            # Each feature on its own scale, whatever the others' (a table's columns may
            # differ by orders of magnitude); a constant feature encodes to 0, and the floor
            # keeps scale / mad finite.
            self.mad = np.where(mad > 0, np.maximum(mad, MAD_FLOOR), 1.0)
        return self

    def _fit_image(self, X: np.ndarray) -> None:
        """Per-channel integer mean/MAD of ``x - 128``, from a 256-bin histogram per channel
        (exact, one pass, no wide copy of the data); then the 256-entry lookup table of
        each channel's encoding, so that :meth:`transform` is a single gather."""
        channels = [X] if self.channel_axis is None else np.moveaxis(X, self.channel_axis, 0)
        values = np.arange(256, dtype=np.int64) - 128
        means, mads, tables = [], [], []
        for channel in channels:
            counts = _histogram_uint8(channel)
            n = int(counts.sum())
            mean = int(tdiv(np.int64((values * counts).sum()), n))
            mad = max(int(tdiv(np.int64((np.abs(values - mean) * counts).sum()), n)), 1)
            means.append(mean)
            mads.append(mad)
            tables.append(to_int8(tdiv((values - mean) * MAD_SCALE, mad)))
        self.mean, self.mad = np.array(means), np.array(mads)
        self.lookup_table = np.stack(tables)

    def __setstate__(self, state: dict) -> None:
        # a model file: statistics of the right kinds and sizes, tables the lookups can index
        kind = state.get("kind") if isinstance(state, dict) else None
        fields = {"image": ("mean", "mad", "lookup_table"), "integer": ("mean", "mad"), "float": ("mean", "mad")}
        if kind not in fields:
            raise InvalidModelError(f"InputEncoder.kind must be one of {sorted(fields)}, got {kind!r}")
        if "scale" not in state and "feature_scale" not in state:  # saved before they were recorded
            state = {**state, "scale": _LEGACY_SCALE, "feature_scale": _LEGACY_SCALE}
        state = checked_state(state, "InputEncoder", ("channel_axis", "kind", "scale", "feature_scale",
                                                       *fields[kind]))
        axis = state["channel_axis"]
        self.channel_axis = None if axis is None else check_int(axis, "InputEncoder.channel_axis", 1, 32)
        self.feature_scale = check_int(state["feature_scale"], "InputEncoder.feature_scale", 1, MAX_SCALE)
        self.scale = check_int(state["scale"], "InputEncoder.scale", 1, MAX_SCALE)
        if kind == "image" and self.scale != MAD_SCALE:
            raise InvalidModelError(f"InputEncoder.scale of uint8 images must be {MAD_SCALE}, got {self.scale}")
        self.kind = kind
        mean, mad = state["mean"], state["mad"]
        if not (isinstance(mean, np.ndarray) and isinstance(mad, np.ndarray)) or mean.shape != mad.shape:
            raise InvalidModelError("InputEncoder.mean and .mad must be arrays of one shape")
        if kind == "float":
            if mean.dtype.kind != "f" or mad.dtype.kind != "f" or not (np.isfinite(mean).all()
                                                                        and np.isfinite(mad).all() and (mad > 0).all()):
                raise InvalidModelError("InputEncoder (float): mean and mad must be finite floats, mad > 0")
        elif mean.dtype != np.int64 or mad.dtype != np.int64 or (mad < 1).any() \
                or np.abs(mean).max(initial=0) > 2**56 or mad.max(initial=1) > 2**56:
            raise InvalidModelError("InputEncoder (integer): mean and mad must be int64 within 2**56, mad >= 1")
        self.mean, self.mad = mean, mad
        if kind == "image":
            self.lookup_table = check_array(state["lookup_table"], "InputEncoder.lookup_table", np.int8,
                                            (mean.size, 256))

    def black_level(self, sample_shape: tuple[int, ...]) -> np.ndarray:
        """The int8 encoding of a black (all-zero) pixel in each channel: what augmentation
        pads images with. For per-feature encodings, the median over each channel's pixels."""
        if self.kind == "image":
            return self.lookup_table[:, 0].copy()
        zeros = self.transform(np.zeros((1, *sample_shape), dtype=np.float64 if self.kind == "float" else np.int64))
        per_channel = zeros.reshape(sample_shape[0], -1)
        return np.median(per_channel, axis=1).astype(np.int8)

    def transform(self, X: np.ndarray) -> np.ndarray:
        """Encode ``X`` to int8 in ``[-127, 127]`` (same shape)."""
        out = np.empty(X.shape, dtype=np.int8)
        for start in range(0, X.shape[0], _CHUNK_ROWS):
            out[start:start + _CHUNK_ROWS] = self._transform_chunk(X[start:start + _CHUNK_ROWS])
        return out

    def _transform_chunk(self, X: np.ndarray) -> np.ndarray:
        # (in chunks: a gather or a formula makes a wide temporary the size of its input)
        if self.kind == "image":
            X = _as_pixels(X)
            if self.channel_axis is None:
                return kernels.select().lookup_uint8(self.lookup_table[0], X)
            out = np.empty(X.shape, dtype=np.int8)
            for c, table in enumerate(self.lookup_table):
                index = (slice(None),) * self.channel_axis + (c,)
                out[index] = np.take(table, X[index])
            return out
        if self.kind == "float":
            with np.errstate(over="ignore"):  # past the float64 range the value saturates anyway
                return to_int8(np.rint((X - self.mean) * (self.scale / self.mad)))
        X = _as_integers(X)
        return to_int8(tdiv((X.astype(np.int64) - self.mean) * self.scale, self.mad))


INTEGER_RULE_BITS = 55  # |x| < 2**55: (x - mean) * scale stays exact in int64 (scale < 64)
MAX_SCALE = 63


def _fits_integer_rule(X: np.ndarray) -> bool:
    """Whether integer features are small enough for the exact integer rule."""
    if X.size == 0:
        return True
    low, high = X.min(), X.max()  # in X's own dtype: no wrap-around of uint64
    return int(high) < 2**INTEGER_RULE_BITS and int(low) > -(2**INTEGER_RULE_BITS)


def _as_integers(X: np.ndarray) -> np.ndarray:
    """``X`` for a model fitted on integer features: integers (and bools) within the exact
    rule's range, or floats holding only such whole values (converted); anything else refused."""
    if X.dtype.kind == "f" and np.isfinite(X).all() and np.array_equal(X, np.rint(X)) \
            and (X.size == 0 or np.abs(X).max() < 2**INTEGER_RULE_BITS):
        return X.astype(np.int64)
    if X.dtype.kind not in "biu":
        raise ValueError(f"this model encodes integer features; X has {X.dtype} values that are not all "
                         "whole numbers (convert them to integers)")
    if not _fits_integer_rule(X):
        raise ValueError(f"this model encodes integer features; X has {X.dtype} values beyond "
                         f"±2**{INTEGER_RULE_BITS}")
    return X


def _as_pixels(X: np.ndarray) -> np.ndarray:
    """``X`` as uint8 pixels for a model fitted on uint8 images: other integer or float
    arrays holding only whole values in [0, 255] are converted, anything else refused."""
    if X.dtype == np.uint8:
        return X
    if X.dtype.kind not in "biuf" or X.size and (X.min() < 0 or X.max() > 255
                                                 or X.dtype.kind == "f" and not np.array_equal(X, np.rint(X))):
        raise ValueError(f"this model was fitted on uint8 images: X must hold whole pixel values in "
                         f"[0, 255], got {X.dtype} values in [{X.min()}, {X.max()}]" if X.size else
                         f"this model was fitted on uint8 images, got {X.dtype}")
    return X.astype(np.uint8)


def _float_mean_mad(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and mean absolute deviation of float (or huge integer) features; a
    constant feature gets its exact value and 0. When a sum passes the float64 range they
    are computed in units of each feature's largest magnitude instead."""
    X = np.asarray(X, dtype=np.float64) if X.dtype.kind in "iu" else X
    with np.errstate(over="ignore", invalid="ignore"):  # inf (or inf - inf) is handled below
        mean = X.mean(axis=0)
        mad = np.abs(X - mean).mean(axis=0)
    # a constant feature's mean is its value exactly (a rounded mean would give it a spread)
    constant = (X == X[:1]).all(axis=0) if X.shape[0] else np.ones(X.shape[1:], dtype=bool)
    mean, mad = np.where(constant, X[0] if X.shape[0] else 0, mean), np.where(constant, 0, mad)
    if np.isfinite(mean).all() and np.isfinite(mad).all():
        return mean.astype(X.dtype), mad.astype(X.dtype)
    if X.dtype != np.float64:  # a narrower float's sums passed its range: float64 holds them
        return _float_mean_mad(X.astype(np.float64))
    scale = np.abs(X).max(axis=0)  # a sum passed the float64 range: in units of the largest value
    scale = np.where(scale > 0, scale, 1.0)
    unit = X / scale
    unit_mean = unit.mean(axis=0)
    return unit_mean * scale, np.abs(unit - unit_mean).mean(axis=0) * scale


def _histogram_uint8(X: np.ndarray) -> np.ndarray:
    """Counts of each of the 256 values, in chunks (bincount casts its input to int64)."""
    counts = np.zeros(256, dtype=np.int64)
    for start in range(0, X.shape[0], _CHUNK_ROWS):
        counts += np.bincount(X[start:start + _CHUNK_ROWS].ravel(), minlength=256)
    return counts


def _integer_mean_mad(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature integer mean and MAD (MAD 0 -> 1: no division by 0), in chunks."""
    n = X.shape[0]
    mean = tdiv(X.sum(axis=0, dtype=np.int64), n)
    abs_dev = np.zeros_like(mean)
    for start in range(0, n, _CHUNK_ROWS):
        abs_dev += np.abs(X[start:start + _CHUNK_ROWS].astype(np.int64) - mean).sum(axis=0)
    return mean, np.maximum(tdiv(abs_dev, n), 1)
