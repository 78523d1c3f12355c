"""Standalone reader of the integer models written by ``sknitro.export.export_integer_model``.

This file is copied next to the exported model as ``nitro_reader.py``. It needs NumPy
only (no sknitro, no scikit-learn) and reproduces the estimator's integers exactly::

    import nitro_reader
    model = nitro_reader.load("exported_model_directory")
    model.decision_function(X)   # the estimator's int8 scores (int16 differences for 2 classes)
    model.predict(X)             # the estimator's labels

Arithmetic: after the input encoder, every value is an integer; products are summed
exactly (in float64 only when a bound proves the sum exact, else in int64), and divisions
are truncated toward zero (``tdiv(-7, 4) == -1``), as in ``sknitro.nn.functional.tdiv``.
The meaning of each layer is spelled out in ``model.json``.
"""

import json
import pathlib

import numpy as np

FORMAT = "sknitro-integer-model"
FORMAT_VERSION = 2
_FLOAT64_EXACT = 2**53
_INT64_MAX = 2**63 - 1
_BATCH = 1024  # samples per batch: bounds the size of the wide intermediates


def load(path):
    """Load an exported model.

    Parameters
    ----------
    path : str or path-like
        The export directory (or its ``model.json``).

    Returns
    -------
    model : IntegerModel
    """
    path = pathlib.Path(path)
    if path.is_file():
        path = path.parent
    spec = json.loads((path / "model.json").read_text(encoding="utf-8"))  # JSONDecodeError: a ValueError
    if not isinstance(spec, dict):
        _fail("model.json must hold an object")
    if spec.get("format") != FORMAT or spec.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"{path / 'model.json'} is {spec.get('format')!r} version {spec.get('format_version')!r}; "
            f"this reader reads {FORMAT!r} version {FORMAT_VERSION}: use the nitro_reader.py "
            "exported with that model")
    try:
        with np.load(path / "weights.npz", allow_pickle=False) as npz:
            weights = {name: npz[name] for name in npz.files}
    except OSError:  # a missing or unreadable file: as the system says
        raise
    except Exception as exc:  # a damaged archive fails in zipfile, in NumPy's header parser, ...
        _fail(f"weights.npz cannot be read ({type(exc).__name__}: {exc})")
    return IntegerModel(spec, weights)


def tdiv(a, d):
    """Integer division truncated toward zero, for a positive divisor (int or array)."""
    a = np.asarray(a, dtype=np.int64)
    q = np.abs(a) // d
    return np.where(a < 0, -q, q)


def to_int8(a):
    """Saturate to [-127, 127] as int8."""
    return np.clip(a, -127, 127).astype(np.int8)


def exact_matmul(a, b):
    """Exact integer ``a @ b`` (int64)."""
    bound_a = int(np.abs(a.astype(np.int64)).max()) if a.size else 0
    bound_b = int(np.abs(b.astype(np.int64)).max()) if b.size else 0
    worst = bound_a * bound_b * a.shape[-1]  # Python ints: cannot overflow
    if worst < _FLOAT64_EXACT:  # every partial sum is an integer below 2**53: exact in float64
        return (a.astype(np.float64) @ b.astype(np.float64)).astype(np.int64)
    if worst > _INT64_MAX:
        raise OverflowError("integer product may overflow int64")
    return a.astype(np.int64) @ b.astype(np.int64)


class IntegerModel:
    """An exported NITRO-D classifier: integer inference from ``model.json`` + ``weights.npz``.

    Attributes
    ----------
    classes_ : ndarray
        The class labels, as the estimator's ``classes_``.
    spec : dict
        The content of ``model.json``.
    """

    def __init__(self, spec, weights):
        self.spec = spec
        self.weights = weights
        self.classes_ = _classes(spec)
        try:
            _check_model(spec, weights, len(self.classes_))
        except (TypeError, KeyError, AttributeError, IndexError) as exc:  # a value of the wrong kind
            _fail(f"malformed model.json ({type(exc).__name__}: {exc})")
        self.sample_shape = tuple(spec["input"]["sample_shape"])

    def __repr__(self):
        return (f"IntegerModel({self.spec['estimator']}, {len(self.classes_)} classes, "
                f"{len(self.spec['layers'])} layers)")

    # -- public API ------------------------------------------------------------------------
    def encode(self, X):
        """The int8 network input for ``X`` (shape ``(n, *sample_shape)``)."""
        X = np.asarray(X)
        size = int(np.prod(self.sample_shape))
        if X.ndim < 1 or (X.shape[0] and X[0].size != size):
            raise ValueError(f"X must hold {size} values per sample (sample shape "
                             f"{self.sample_shape}), got an array of shape {X.shape}")
        X = X.reshape(X.shape[0], *self.sample_shape)
        enc = self.spec["input"]
        kind = enc["encoding"]
        if kind == "uint8_lookup":
            if X.dtype.kind not in "iu":
                raise TypeError(f"this model encodes integer pixel values in [0, 255], got dtype {X.dtype}")
            if X.size and (X.min() < 0 or X.max() > 255):
                raise ValueError("pixel values must be in [0, 255]")
            tables = np.array(enc["tables"], dtype=np.int8)
            X = X.astype(np.intp)
            axis = enc["channel_axis"]
            if axis is None:
                return tables[0][X]
            out = np.empty(X.shape, dtype=np.int8)
            for c, table in enumerate(tables):
                index = (slice(None),) * axis + (c,)
                out[index] = table[X[index]]
            return out
        shape = tuple(enc["shape"])
        if kind == "integer_mad":
            mean = np.array(enc["mean"], dtype=np.int64).reshape(shape)
            mad = np.array(enc["mad"], dtype=np.int64).reshape(shape)
            return to_int8(tdiv((_as_integers(X) - mean) * enc["multiplier"], mad))
        if kind == "float_mad":
            # the estimator's expression and dtypes, so that NumPy rounds exactly as it did
            mean = np.array(enc["mean"], dtype=enc["dtype"]).reshape(shape)
            mad = np.array(enc["mad"], dtype=enc["dtype"]).reshape(shape)
            return to_int8(np.rint((X - mean) * (enc["multiplier"] / mad)))
        raise ValueError(f"unknown input encoding {kind!r}")

    def scores(self, X):
        """int8 class scores of shape ``(n, n_classes)``."""
        x8 = self.encode(X)
        parts = [self._forward(x8[i:i + _BATCH]) for i in range(0, x8.shape[0], _BATCH)]
        return np.concatenate(parts) if parts else np.zeros((0, len(self.classes_)), dtype=np.int8)

    def decision_function(self, X):
        """The estimator's ``decision_function``: int8 scores, or for two classes the int16
        difference ``score[1] - score[0]``."""
        scores = self.scores(X)
        if len(self.classes_) == 2:
            return scores[:, 1].astype(np.int16) - scores[:, 0]
        return scores

    def predict(self, X):
        """The class of the highest score (the first one on ties)."""
        return self.classes_[self.scores(X).argmax(axis=1)]

    # -- layers ----------------------------------------------------------------------------
    def _forward(self, x):
        ops = {"flatten": self._flatten, "linear": self._linear, "conv2d": self._conv2d,
               "nitro_scale": self._nitro_scale, "activation": self._activation,
               "maxpool2d": self._maxpool2d}
        for layer in self.spec["layers"]:
            if layer["type"] not in ops:
                raise ValueError(f"unknown layer type {layer['type']!r} in model.json")
            x = ops[layer["type"]](x, layer)
        return x

    def _flatten(self, x, layer):
        return x.reshape(x.shape[0], -1)  # row-major: feature (c * H + i) * W + j

    def _linear(self, x, layer):
        z = exact_matmul(x, self.weights[layer["weight"]].T)
        if layer["bias"] is not None:
            z = z + self.weights[layer["bias"]]
        return z

    def _conv2d(self, x, layer):
        # z[n, f, i, j] = sum_{c, u, v} W[f, c, u, v] * xpad[n, c, i + u, j + v]: nine exact
        # products of (pixels, C) @ (C, F), one per kernel position
        weight = self.weights[layer["weight"]]
        k, p = layer["kernel_size"], layer["padding"]
        n, c, h, w = x.shape
        xpad = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)), constant_values=layer["padding_value"])
        h_out, w_out = h + 2 * p - k + 1, w + 2 * p - k + 1
        z = np.zeros((n * h_out * w_out, weight.shape[0]), dtype=np.int64)
        for u in range(k):
            for v in range(k):
                patch = xpad[:, :, u:u + h_out, v:v + w_out].transpose(0, 2, 3, 1).reshape(-1, c)
                z += exact_matmul(patch, weight[:, :, u, v].T)
        return z.reshape(n, h_out, w_out, -1).transpose(0, 3, 1, 2)

    def _nitro_scale(self, z, layer):
        return to_int8(tdiv(z, layer["divisor"]))

    def _activation(self, s, layer):
        table = np.array(layer["table"], dtype=np.int8)
        return table[s.astype(np.int16) + 128]

    def _maxpool2d(self, x, layer):
        kh, kw = layer["window"]
        n, c, h, w = x.shape
        x = x[:, :, :h // kh * kh, :w // kw * kw]  # floor mode: whole windows only
        return x.reshape(n, c, h // kh, kh, w // kw, kw).max(axis=(3, 5))


_INTEGER_RULE_LIMIT = 2**55  # |x| below it: (x - mean) * multiplier stays exact in int64


def _as_integers(X):
    """X as int64 for the integer encoding, as the estimator takes it: integers (and bools)
    below 2**55 in magnitude, or floats holding only such whole values."""
    if X.dtype.kind == "f":
        if not (np.isfinite(X).all() and np.array_equal(X, np.rint(X))):
            raise ValueError(f"this model encodes integer features; X has {X.dtype} values that are not "
                             "all whole numbers")
    elif X.dtype.kind not in "biu":
        raise TypeError(f"this model encodes integer features, got dtype {X.dtype}")
    if X.size and (X.max() >= _INTEGER_RULE_LIMIT or X.min() <= -_INTEGER_RULE_LIMIT):
        raise ValueError("this model encodes integer features within ±2**55")
    return X.astype(np.int64)


# -- checks: model.json and weights.npz are checked against each other before any computing --
_INT32 = (-(2**31), 2**31 - 1)
_MAX_VALUES = 2**31  # per sample, in any layer's input or output
_MAX_MULTIPLIER = 63  # the estimator's largest feature_scale: keeps the integer encoding in int64


def _fail(message):
    raise ValueError(f"invalid exported model: {message}")


def _int(value, name, low, high):
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        _fail(f"{name} must be an integer in [{low}, {high}], got {value!r}")
    return value


def _ints(values, name, low, high, length=None):
    if not isinstance(values, list) or (length is not None and len(values) != length):
        _fail(f"{name} must be a list of {length if length is not None else 'some'} integers")
    return [_int(v, name, low, high) for v in values]


def _integer_array(weights, key, name, shape):
    if not isinstance(key, str) or key not in weights:
        _fail(f"{name}: weights.npz has no array {key!r}")
    array = weights[key]
    if array.dtype.kind not in "iu" or tuple(array.shape) != tuple(shape):
        _fail(f"{name}: {key} must be an integer array of shape {tuple(shape)}, got {array.dtype} {array.shape}")
    if array.size and (int(array.min()) < _INT32[0] or int(array.max()) > _INT32[1]):
        _fail(f"{name}: {key} holds values beyond int32")
    return array


def _classes(spec):
    """classes_ from model.json: a list of labels and a dtype that holds them."""
    labels, dtype = spec.get("classes"), spec.get("classes_dtype")
    if not isinstance(labels, list) or not isinstance(dtype, str):
        _fail("classes must be a list of labels and classes_dtype a dtype name")
    try:
        return np.array(labels, dtype=np.dtype(dtype))
    except (TypeError, ValueError) as exc:
        _fail(f"classes do not make an array of {dtype!r} ({exc})")


def _check_input(enc, sample_shape):
    size = int(np.prod(sample_shape))
    kind = enc.get("encoding")
    if kind == "uint8_lookup":
        tables = enc.get("tables")
        axis = enc.get("channel_axis")
        channels = 1 if axis is None else sample_shape[_int(axis, "input.channel_axis", 1, len(sample_shape)) - 1]
        if not isinstance(tables, list) or len(tables) != channels:
            _fail(f"input.tables must hold one table per channel ({channels})")
        for table in tables:
            _ints(table, "input.tables", -128, 127, 256)
    elif kind in ("integer_mad", "float_mad"):
        shape = _ints(enc.get("shape"), "input.shape", 1, _MAX_VALUES)
        if int(np.prod(shape)) != size:
            _fail(f"input.shape {shape} does not hold the {size} features of a sample")
        if kind == "integer_mad":
            _ints(enc.get("mean"), "input.mean", -(2**56), 2**56, size)
            _ints(enc.get("mad"), "input.mad", 1, 2**56, size)
            _int(enc.get("multiplier"), "input.multiplier", 1, _MAX_MULTIPLIER)
        else:
            if enc.get("dtype") not in ("float32", "float64"):
                _fail("input.dtype must be float32 or float64")
            for name in ("mean", "mad"):
                values = enc.get(name)
                if not isinstance(values, list) or len(values) != size or not all(
                        isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) for v in values):
                    _fail(f"input.{name} must be {size} finite numbers")
            if min(enc["mad"], default=1) <= 0:
                _fail("input.mad must be positive")
            _int(enc.get("multiplier"), "input.multiplier", 1, _MAX_MULTIPLIER)
    else:
        _fail(f"unknown input encoding {kind!r}")


def _check_model(spec, weights, n_classes):
    """Raise ValueError unless every layer reads what the one before produces, with arrays of
    integer dtypes and the declared shapes, and constants in range (no huge allocation)."""
    if n_classes < 2:
        _fail("classes must hold at least 2 classes")
    if not isinstance(spec.get("input"), dict):
        _fail("input must be an object")
    shape = tuple(_ints(spec["input"].get("sample_shape"), "input.sample_shape", 1, _MAX_VALUES))
    if int(np.prod(shape)) > _MAX_VALUES:
        _fail(f"a sample of shape {shape} is too large")
    _check_input(spec["input"], shape)
    layers = spec.get("layers")
    if not isinstance(layers, list) or not layers or not all(isinstance(layer, dict) for layer in layers):
        _fail("layers must be a non-empty list of objects")
    int8 = True  # whether the values between layers are int8: the input's encoding is
    for i, layer in enumerate(layers):
        kind, name = layer.get("type"), f"layers[{i}]"
        if kind in ("linear", "conv2d", "activation", "maxpool2d") and not int8:
            _fail(f"{name}: a {kind} layer reads int8 values, it would receive a product (scale it first)")
        int8 = kind not in ("linear", "conv2d") and (int8 or kind == "nitro_scale")
        if kind == "flatten":
            shape = (int(np.prod(shape)),)
        elif kind == "linear":
            if len(shape) != 1:
                _fail(f"{name}: a linear layer reads flat input, it would receive {shape}")
            out = _int(layer.get("shape", [None])[0], f"{name}.shape", 1, _MAX_VALUES)
            _integer_array(weights, layer.get("weight"), name, (out, shape[0]))
            if layer.get("bias") is not None:
                _integer_array(weights, layer["bias"], name, (out,))
            shape = (out,)
        elif kind == "conv2d":
            if len(shape) != 3:
                _fail(f"{name}: a convolution reads (C, H, W) maps, it would receive {shape}")
            k = _int(layer.get("kernel_size"), f"{name}.kernel_size", 1, 15)
            pad = _int(layer.get("padding"), f"{name}.padding", 0, k - 1)
            _int(layer.get("stride"), f"{name}.stride", 1, 1)
            _int(layer.get("padding_value"), f"{name}.padding_value", 0, 0)
            out = _int(layer.get("shape", [None])[0], f"{name}.shape", 1, 2**16)
            _integer_array(weights, layer.get("weight"), name, (out, shape[0], k, k))
            if layer.get("bias") is not None:
                _fail(f"{name}: convolutions have no bias")
            shape = (out, shape[1] + 2 * pad - k + 1, shape[2] + 2 * pad - k + 1)
        elif kind == "nitro_scale":
            _int(layer.get("divisor"), f"{name}.divisor", 1, 2**62)
        elif kind == "activation":
            _ints(layer.get("table"), f"{name}.table", -128, 127, 256)
        elif kind == "maxpool2d":
            if len(shape) != 3:
                _fail(f"{name}: pooling reads (C, H, W) maps, it would receive {shape}")
            window = _ints(layer.get("window"), f"{name}.window", 1, max(shape[1:]), 2)
            shape = (shape[0], shape[1] // window[0], shape[2] // window[1])
        else:
            _fail(f"{name}: unknown layer type {kind!r}")
        if min(shape) < 1 or int(np.prod(shape)) > _MAX_VALUES:
            _fail(f"{name} would produce maps of shape {shape}")
        expected = layer.get("output_shape")
        if expected is not None and tuple(expected) != tuple(shape):
            _fail(f"{name}: output_shape {expected} does not match the computed {list(shape)}")
    if shape != (n_classes,) or not int8:
        _fail(f"the last layer produces {shape} {'int8' if int8 else 'product'} values, not one int8 score "
              f"per class ({n_classes})")
