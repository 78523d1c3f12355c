"""Bad input and failing fits: clear errors, and never a half-fitted model."""

import warnings

import numpy as np
import pytest
from sklearn.exceptions import NotFittedError

from sknitro import NitroCNNClassifier, NitroMLPClassifier, config_context
from sknitro.nn import kernels

from conftest import weights_equal


@pytest.fixture
def quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


@pytest.mark.parametrize("lr_inv", [2**62, 2**80])
def test_a_huge_lr_inv_makes_the_gradient_term_zero(digits_small, lr_inv, quiet):
    X, y = digits_small
    clf = NitroMLPClassifier(hidden_layer_sizes=(16,), lr_inv=lr_inv, fwd_decay_inv=0, head_decay_inv=0,
                             max_iter=2, random_state=0).fit(X, y)
    init = NitroMLPClassifier(hidden_layer_sizes=(16,), max_iter=1, random_state=0)
    init._validate_params()
    init._prepare_data(X, y, first_call=True, classes=None)
    init._initialise(init.encoder_.transform(X))
    assert clf.n_iter_ == 2 and weights_equal(clf.weights_, init.weights_)  # no step moved a weight


def test_a_plateau_schedule_past_int64_goes_on(digits_small, quiet):
    X, y = digits_small
    clf = NitroMLPClassifier(hidden_layer_sizes=(16,), lr_inv=2**40, lr_plateau_factor=2**30,
                             lr_plateau_patience=1, tol=0.5, n_iter_no_change=100, max_iter=4,
                             random_state=0).fit(X, y)
    assert clf.n_iter_ == 4 and clf.lr_inv_ > 2**63


class Boom(RuntimeError):
    pass


def _fail_at_step(monkeypatch, step):
    real, calls = kernels.integer_sgd_step, []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == step:
            raise Boom("a failure in the middle of an epoch")
        return real(*args, **kwargs)

    monkeypatch.setattr(kernels, "integer_sgd_step", failing)


def test_a_failure_in_a_new_fit_leaves_it_unfitted(digits_small, monkeypatch, quiet):
    X, y = digits_small
    clf = NitroMLPClassifier(hidden_layer_sizes=(16,), max_iter=3, random_state=0)
    _fail_at_step(monkeypatch, 5)
    with config_context(fused_kernels=False), pytest.raises(Boom):
        clf.fit(X, y)
    with pytest.raises(NotFittedError):
        clf.predict(X)
    assert not [name for name in vars(clf) if name.endswith("_")]


def test_a_failure_keeps_the_last_finished_epoch(digits_small, monkeypatch):
    X, y = digits_small
    classes = np.unique(y)
    with config_context(fused_kernels=False):
        clf = NitroMLPClassifier(hidden_layer_sizes=(16,), random_state=0).partial_fit(X, y, classes)
        after_one = [w.copy() for w in clf.weights_ + clf.head_weights_]
        _fail_at_step(monkeypatch, 20)  # inside the second epoch
        with pytest.raises(Boom):
            clf.partial_fit(X, y)
        assert clf.n_iter_ == 1 and weights_equal(clf.weights_ + clf.head_weights_, after_one)
        monkeypatch.undo()
        clf.partial_fit(X, y)  # and it goes on exactly as if nothing had happened
        reference = NitroMLPClassifier(hidden_layer_sizes=(16,), random_state=0)
        reference.partial_fit(X, y, classes).partial_fit(X, y)
    assert clf.n_iter_ == 2
    assert weights_equal(clf.weights_ + clf.head_weights_, reference.weights_ + reference.head_weights_)


def test_cnn_names_the_image_shapes(quiet):
    X = np.random.default_rng(0).integers(0, 256, size=(40, 1, 8, 8)).astype(np.uint8)
    clf = NitroCNNClassifier(architecture=[4, "M"], max_iter=1, random_state=0).fit(X, np.arange(40) % 2)
    with pytest.raises(ValueError, match=r"\(1, 7, 8\).*\(1, 8, 8\)|\(1, 8, 8\).*\(1, 7, 8\)"):
        clf.predict(X[:, :, :7])
    # flat rows of the fitted image size are those images
    np.testing.assert_array_equal(clf.predict(X.reshape(40, -1)), clf.predict(X))
    np.testing.assert_array_equal(clf.predict(X[:, 0]), clf.predict(X))
    with pytest.raises(ValueError, match="63 features.*expecting 64 features.*images of shape"):
        clf.predict(X.reshape(40, -1)[:, :63])
