"""Saving and loading fitted estimators: pickle, joblib and skops round trips in a fresh
process give the same integers, training continues exactly, other formats fail clearly."""

import pickle
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import joblib
import numpy as np
import pytest
import skops.io as sio
from conftest import weights_equal
from skops.io.exceptions import UntrustedTypesFoundException

from sknitro import NitroCNNClassifier, NitroMLPClassifier, __version__, persistence
from sknitro.persistence import IncompatibleModelError, trusted_types

ROOT = Path(__file__).resolve().parents[1]

MLP_PARAMS = dict(hidden_layer_sizes=(16,), dropout=0.1, max_iter=2, random_state=0)
CNN_PARAMS = dict(architecture=(8, "M"), hidden_layer_sizes=(16,), conv_dropout=0.1, dropout=0.1,
                  augment=True, max_iter=2, random_state=0)


def _images(X):
    """digits (0..16) as uint8 images (n, 1, 8, 8) in 0..240."""
    return (X * 15).astype(np.uint8).reshape(-1, 1, 8, 8)


def _fit(make, X, y, **extra):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning of the 2-epoch fits
        if make == "mlp":
            return NitroMLPClassifier(**{**MLP_PARAMS, **extra}).fit(X, y)
        return NitroCNNClassifier(**{**CNN_PARAMS, **extra}).fit(_images(X), y)


def _data(make, X):
    return X if make == "mlp" else _images(X)


def _dump(est, path, method):
    if method == "pickle":
        path.write_bytes(pickle.dumps(est))
    elif method == "joblib":
        joblib.dump(est, path)
    else:
        sio.dump(est, path)


# Runs in a fresh interpreter: loads both models, predicts, then continues training.
LOADER = textwrap.dedent("""
    import pickle, sys, warnings
    import joblib, numpy as np, skops.io as sio
    from sknitro.persistence import trusted_types

    method, folder = sys.argv[1], sys.argv[2]
    data = np.load(folder + "/data.npz")
    out = {}
    for make in ("mlp", "cnn"):
        path = f"{folder}/{make}.model"
        if method == "pickle":
            with open(path, "rb") as f:
                est = pickle.load(f)
        elif method == "joblib":
            est = joblib.load(path)
        else:
            est = sio.load(path, trusted=trusted_types())
        X, X_more, y_more = data[make + "_X"], data[make + "_X_more"], data["y_more"]
        out[make + "_decision"] = est.decision_function(X)
        out[make + "_predict"] = est.predict(X)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if make == "mlp":  # warm start: one more epoch with the restored random generator
                est.set_params(warm_start=True, max_iter=1).fit(X_more, y_more)
            else:
                est.partial_fit(X_more, y_more)
        for i, w in enumerate(est.weights_ + est.head_weights_):
            out[f"{make}_weight{i}"] = w
        out[make + "_decision_after"] = est.decision_function(X)
    np.savez(folder + "/out.npz", **out)
""")


@pytest.mark.parametrize("method", ["pickle", "joblib", "skops"])
def test_round_trip_in_a_fresh_process_is_bit_exact(method, digits, tmp_path):
    X, y = digits
    X_train, y_train, X_more, y_more = X[:300], y[:300], X[300:500], y[300:500]
    models = {make: _fit(make, X_train, y_train) for make in ("mlp", "cnn")}
    for make, est in models.items():
        _dump(est, tmp_path / f"{make}.model", method)
    np.savez(tmp_path / "data.npz", mlp_X=X, cnn_X=_images(X), mlp_X_more=X_more,
             cnn_X_more=_images(X_more), y_more=y_more)
    expected = {}
    for make, est in models.items():
        expected[make + "_decision"] = est.decision_function(_data(make, X))
        expected[make + "_predict"] = est.predict(_data(make, X))

    subprocess.run([sys.executable, "-c", LOADER, method, str(tmp_path)], cwd=ROOT, check=True)
    out = np.load(tmp_path / "out.npz")

    for make, est in models.items():
        for key in ("decision", "predict"):
            got, want = out[f"{make}_{key}"], expected[f"{make}_{key}"]
            assert got.dtype == want.dtype
            np.testing.assert_array_equal(got, want)
        # the original object continues training: the loaded one must do exactly the same
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if make == "mlp":
                est.set_params(warm_start=True, max_iter=1).fit(X_more, y_more)
            else:
                est.partial_fit(_images(X_more), y_more)
        weights = est.weights_ + est.head_weights_
        loaded_weights = [out[f"{make}_weight{i}"] for i in range(len(weights))]
        assert weights_equal(weights, loaded_weights)
        np.testing.assert_array_equal(out[make + "_decision_after"], est.decision_function(_data(make, X)))


def test_getstate_records_version_and_format_without_touching_the_estimator(digits_small):
    est = _fit("mlp", *digits_small)
    before = dict(est.__dict__)
    state = est.__getstate__()
    assert state["_sknitro_version"] == __version__
    assert state["_sknitro_format"] == persistence.FORMAT
    assert est.__dict__.keys() == before.keys() and "_sknitro_format" not in est.__dict__
    loaded = pickle.loads(pickle.dumps(est))
    assert loaded.__dict__.keys() == before.keys()  # the persistence keys are not kept


def test_other_persistence_format_raises_a_clear_error(digits_small, monkeypatch):
    est = _fit("mlp", *digits_small)
    monkeypatch.setattr(persistence, "FORMAT", 99)
    pickled, skopsed = pickle.dumps(est), sio.dumps(est)
    monkeypatch.undo()

    with pytest.raises(IncompatibleModelError) as info:
        pickle.loads(pickled)
    message = str(info.value)
    assert isinstance(info.value, ValueError)
    for part in (f"saved by sknitro {__version__}", "persistence format 99",
                 f"reads persistence format {persistence.FORMAT} only", "Retrain",
                 f"install sknitro=={__version__}"):
        assert part in message, message
    with pytest.raises(IncompatibleModelError, match="persistence format 99"):
        sio.loads(skopsed, trusted=trusted_types())


def test_state_without_format_raises(digits_small):
    """A pickle from before persistence formats (no version, no format) is refused too."""
    est = _fit("mlp", *digits_small)
    old_state = dict(est.__dict__)
    blank = NitroMLPClassifier.__new__(NitroMLPClassifier)
    with pytest.raises(IncompatibleModelError, match="no persistence format.*reads persistence format 2"):
        blank.__setstate__(old_state)


def test_cuda_model_without_gpu_stays_on_host_with_a_warning(digits_small, monkeypatch):
    """A model saved with device="cuda" loads on the host where no GPU is usable (simulated
    here, so that the test means the same on every machine) and predicts the same integers."""
    X, y = digits_small
    est = _fit("mlp", X, y)
    expected = est.decision_function(X)
    est.set_params(device="cuda")  # what a GPU-trained model's state says (its arrays are hosted when saved)
    pickled = pickle.dumps(est)

    def no_gpu(device):
        raise ValueError("device='cuda' but no GPU was found (simulated)")

    monkeypatch.setattr(persistence, "get_namespace", no_gpu)
    with pytest.warns(UserWarning, match="trained with device='cuda'.*stays on the host"):
        loaded = pickle.loads(pickled)
    assert loaded.network_.namespace() is np and loaded.device == "cuda"
    np.testing.assert_array_equal(loaded.decision_function(X), expected)


def test_network_to_numpy_is_an_independent_copy(digits_small):
    X, y = digits_small
    est = _fit("cnn", X, y)
    copy = est.network_.to(np)
    originals, copies = est.network_.layers(), copy.layers()
    assert len(originals) == len(copies)
    for a, b in zip(originals, copies):
        assert a is not b and a.weight is not b.weight
        np.testing.assert_array_equal(a.weight, b.weight)
        assert a.weight.dtype == b.weight.dtype and a.weight_bound == b.weight_bound
    np.testing.assert_array_equal(copy.predict_scores(est.encoder_.transform(_images(X))),
                                  est.network_.predict_scores(est.encoder_.transform(_images(X))))
    copies[0].weight[...] = 0  # the copy shares no array with the estimator
    assert np.abs(originals[0].weight).max() > 0


# -- skops -----------------------------------------------------------------------------------

# fitted models that together hold every sknitro class: all activations, both head poolings,
# dense and conv blocks, dropout
SKOPS_CONFIGS = [("mlp", dict(activation=a, max_iter=1))
                 for a in ("nitro_relu", "pocket_leaky_relu", "pocket_relu", "pocket_tanh")] + [
    ("cnn", dict(max_iter=1)),
    ("cnn", dict(max_iter=1, head_pooling="avg", augment=False)),
]


def test_trusted_types_are_exactly_what_skops_reports(digits_small):
    reported = set()
    for make, params in SKOPS_CONFIGS:
        reported |= set(sio.get_untrusted_types(data=sio.dumps(_fit(make, *digits_small, **params))))
    assert reported == set(trusted_types())
    assert len(trusted_types()) == len(set(trusted_types()))


@pytest.mark.parametrize("make", ["mlp", "cnn"])
def test_skops_load_needs_the_trusted_types(make, digits_small):
    X, y = digits_small
    est = _fit(make, X, y)
    data = sio.dumps(est)
    with pytest.raises(UntrustedTypesFoundException):
        sio.loads(data)
    loaded = sio.loads(data, trusted=trusted_types())
    X = _data(make, X)
    np.testing.assert_array_equal(loaded.decision_function(X), est.decision_function(X))
