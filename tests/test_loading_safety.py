"""Model files are untrusted input: a tampered file can never set the caches, bounds or
tables the engine relies on for safety, and anything that does not fit raises a clear error."""

import io
import pickle
import warnings

import joblib
import numpy as np
import pytest

from sknitro import NitroCNNClassifier, NitroMLPClassifier
from sknitro.nn.blocks import LinearHead
from sknitro.nn.layers import IntegerLinear, NitroReLU
from sknitro.persistence import InvalidModelError, trusted_types

sio = pytest.importorskip("skops.io")


@pytest.fixture(scope="module")
def fitted(digits):
    X, y = digits
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mlp = NitroMLPClassifier(hidden_layer_sizes=(32,), max_iter=2, random_state=0).fit(X, y)
        cnn = NitroCNNClassifier(architecture=[4, "M"], hidden_layer_sizes=(8,), max_iter=1,
                                 random_state=0).fit(X.reshape(-1, 1, 8, 8), y)
    return {"mlp": (mlp, X), "cnn": (cnn, X.reshape(-1, 1, 8, 8))}


def _joblib_round_trip(model):
    buffer = io.BytesIO()
    joblib.dump(model, buffer)
    buffer.seek(0)
    return joblib.load(buffer)


def _skops_round_trip(model, tmp_path):
    sio.dump(model, tmp_path / "model.skops")
    return sio.load(tmp_path / "model.skops", trusted=trusted_types())


FORMATS = {"joblib": lambda model, tmp_path: _joblib_round_trip(model), "skops": _skops_round_trip}


def _forge(monkeypatch, cls, **forged):
    """Make ``cls`` objects save ``forged`` attributes too: a file crafted by hand."""
    original = cls.__getstate__
    monkeypatch.setattr(cls, "__getstate__", lambda self: {**original(self), **forged})


FORGED_CACHES = {
    # a float64 copy of the weights that would make every prediction one class
    "weight64": {"weight64": np.full((32, 64), 1e6)},
    # a pair form whose outlier indices point far outside the weights (C writes there)
    "weight_pairs": {"weight_pairs": (np.zeros((32, 64), np.int16), np.array([10**9, -5, 3], np.int32),
                                      np.array([1, 2, 3], np.int32), 3)},
    "weight_units": {"weight_units": np.zeros((7,), np.int32)},
    # the kernels' slot itself (what a file of this version could carry)
    "kernel_cache": {"kernel_cache": (np.zeros((32, 64), np.int16), np.array([10**9], np.int32))},
    # a bound far below the weights: the overflow proofs would no longer hold
    "weight_bound": {"weight_bound": 1},
}


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("forged", FORGED_CACHES)
def test_caches_and_bounds_are_never_read_from_a_file(fitted, fmt, forged, monkeypatch, tmp_path):
    model, X = fitted["mlp"]
    expected = model.decision_function(X)
    _forge(monkeypatch, IntegerLinear, **FORGED_CACHES[forged])
    loaded = FORMATS[fmt](model, tmp_path)
    monkeypatch.undo()
    for layer in loaded.network_.layers():
        assert layer.kernel_cache is None
        assert layer.weight_bound == np.abs(layer.weight).max()
    np.testing.assert_array_equal(loaded.decision_function(X), expected)


@pytest.mark.parametrize("fmt", FORMATS)
def test_activation_tables_are_rebuilt(fitted, fmt, monkeypatch, tmp_path):
    model, X = fitted["cnn"]
    expected = model.decision_function(X)
    # a 3-entry table, indexed by every int8 value in the compiled kernels
    _forge(monkeypatch, NitroReLU, forward_table=np.zeros(3, np.int8), backward_divisor=0)
    loaded = FORMATS[fmt](model, tmp_path)
    monkeypatch.undo()
    assert loaded.network_.blocks[0].activation.forward_table.shape == (256,)
    np.testing.assert_array_equal(loaded.decision_function(X), expected)


def _tampered_pickle(model, edit):
    """``model`` pickled after ``edit(copy)`` changed a copy of it: what a crafted file holds."""
    copy = pickle.loads(pickle.dumps(model))
    edit(copy)
    return pickle.dumps(copy)


def _set(path, value):
    def edit(model):
        *parents, name = path.split(".")
        target = model
        for part in parents:
            target = target[int(part)] if part.isdigit() else getattr(target, part)
        setattr(target, name, value)
    return edit


TAMPERED = {
    "float weights": (_set("network_.output.linear.weight", np.zeros((10, 32))), "IntegerLinear.weight"),
    "int64 weights": (_set("network_.output.linear.weight", np.zeros((10, 32), np.int64)), "IntegerLinear.weight"),
    "wrong shape": (_set("network_.output.linear.weight", np.zeros((3, 32), np.int32)), "IntegerLinear.weight"),
    "a divisor of 0": (_set("network_.output.scale", 0), "LinearHead.scale"),
    "a negative divisor": (_set("network_.path.0.scale", -1), "LinearBlock.scale"),
    "a float divisor": (_set("network_.path.0.scale", 2.5), "LinearBlock.scale"),
    "an unknown slope": (_set("network_.path.0.activation.alpha", 6), "negative_slope_inv"),
    "layers that do not fit": (_set("network_.path.0.head.linear", IntegerLinear(10, 10, 3, np.random.default_rng(0))),
                               "does not fit"),
    "a first layer of another width": (_set("network_.path.0.linear", IntegerLinear(10, 32, 3, np.random.default_rng(0))),
                                       "the network reads samples of shape"),
    "fewer classes": (_set("classes_", np.arange(3)), "classes_"),
    "a bool for an int": (_set("network_.lr_amp", True), "lr_amp"),
    "a wrong encoder": (_set("encoder_.mad", np.zeros(64, np.int64)), "InputEncoder"),
    "another estimator's features": (_set("n_features_in_", 65), "shape"),
    "an extra attribute": (_set("network_.output.forward", print), "unknown attributes"),
    # statistics of the right size that broadcast against the samples into another encoding
    "statistics of another shape": (lambda model: [_set(f"encoder_.{name}", getattr(model.encoder_, name)
                                                        .reshape(64, 1))(model) for name in ("mean", "mad")],
                                    r"statistics have shape \(64, 1\), its input needs \(64,\)"),
    "a channel axis": (_set("encoder_.channel_axis", 1), "channel_axis must be None"),
    # parameters that inference reads (predict_proba divides by target_value)
    "a negative target value": (_set("target_value", -32), "target_value"),
    "a target value of 0": (_set("target_value", 0), "target_value"),
    "a string for a parameter": (_set("target_value", "32"), "target_value"),
    "fitted attributes and no network": (lambda model: delattr(model, "network_"), "without a network_"),
}


@pytest.mark.parametrize("case", TAMPERED)
def test_tampered_models_raise_a_clear_error(fitted, case):
    edit, message = TAMPERED[case]
    data = _tampered_pickle(fitted["mlp"][0], edit)
    with pytest.raises(InvalidModelError, match=message):
        pickle.loads(data)


def test_tampered_cnn_pooling_raises(fitted):
    data = _tampered_pickle(fitted["cnn"][0], _set("network_.path.0.head_pool.padding", (5, 0)))
    with pytest.raises(InvalidModelError, match="padding"):
        pickle.loads(data)
    data = _tampered_pickle(fitted["cnn"][0], _set("encoder_.lookup_table", np.zeros((1, 3), np.int8)))
    with pytest.raises(InvalidModelError, match="lookup_table"):
        pickle.loads(data)
    # channels on another axis: the lookups would fill only part of the encoded images
    for axis in (None, 2, 3):
        data = _tampered_pickle(fitted["cnn"][0], _set("encoder_.channel_axis", axis))
        with pytest.raises(InvalidModelError, match="channel_axis must be 1"):
            pickle.loads(data)


def test_tampered_skops_file_raises(fitted, tmp_path):
    model = pickle.loads(pickle.dumps(fitted["mlp"][0]))
    model.network_.output.linear.weight = np.zeros((10, 32), np.float64)
    sio.dump(model, tmp_path / "forged.skops")
    with pytest.raises(InvalidModelError, match="IntegerLinear.weight must be a int32 array"):
        sio.load(tmp_path / "forged.skops", trusted=trusted_types())


def test_a_head_accepts_only_a_linear_layer():
    head = LinearHead(4, 2, 3, 8, np.random.default_rng(0))
    state = dict(head.__dict__)
    with pytest.raises(InvalidModelError, match="LinearHead.linear must be a IntegerLinear"):
        LinearHead.__new__(LinearHead).__setstate__({**state, "linear": np.zeros(3)})

