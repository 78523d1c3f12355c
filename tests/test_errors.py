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


def _fitted_state(clf):
    """Every fitted attribute, arrays as copies (to compare after a failed call)."""
    state = {name: value for name, value in vars(clf).items() if name.endswith("_") or name in ("_rng",)}
    state["weights"] = [w.copy() for w in clf.weights_ + clf.head_weights_]
    state["rng"] = clf._rng.bit_generator.state
    return state


def _assert_same_model(clf, before, X):
    before, after = dict(before), _fitted_state(clf)
    assert sorted(after) == sorted(before)
    assert weights_equal(after.pop("weights"), before.pop("weights"))
    assert after.pop("rng") == before.pop("rng")
    for name, value in before.items():
        assert after[name] is value, name  # the very objects of the model before
    clf.predict(X)


@pytest.mark.parametrize("bad_refit", ["one class", "fewer features, one class", "nan"])
def test_a_failed_refit_keeps_the_model_before(digits_small, bad_refit, quiet):
    X, y = digits_small
    clf = NitroMLPClassifier(hidden_layer_sizes=(16,), max_iter=2, random_state=0).fit(X, y)
    predicted, before = clf.predict(X), _fitted_state(clf)
    bad_X, bad_y = {"one class": (X[:20], np.zeros(20)),
                    "fewer features, one class": (X[:20, :3], np.zeros(20)),
                    "nan": (np.where(X == 0, np.nan, X)[:, :10], y)}[bad_refit]
    with pytest.raises(ValueError, match="1 class|NaN"):
        clf.fit(bad_X, bad_y)
    _assert_same_model(clf, before, X)
    np.testing.assert_array_equal(clf.predict(X), predicted)


def test_a_failed_refit_keeps_the_feature_names_and_image_shape(digits_small, quiet):
    pd = pytest.importorskip("pandas")
    X, y = digits_small
    frame = pd.DataFrame(X, columns=[f"pixel{i}" for i in range(64)])
    clf = NitroMLPClassifier(hidden_layer_sizes=(16,), max_iter=1, random_state=0).fit(frame, y)
    with pytest.raises(ValueError, match="NaN"):
        clf.fit(np.full((20, 5), np.nan), y[:20])
    assert list(clf.feature_names_in_) == list(frame.columns) and clf.n_features_in_ == 64
    with pytest.raises(ValueError, match="feature names"):
        clf.predict(frame.rename(columns={"pixel0": "other"}))

    images = X.reshape(-1, 8, 8).astype(np.uint8)
    cnn = NitroCNNClassifier(architecture=[4, "M"], max_iter=1, random_state=0).fit(images, y)
    bad = np.full((20, 4, 16), np.nan)
    with pytest.raises(ValueError, match="NaN"):
        cnn.fit(bad, y[:20])
    assert cnn.image_shape_ == (1, 8, 8)
    np.testing.assert_array_equal(cnn.predict(images), cnn.predict(images.reshape(len(images), -1)))


def test_a_failure_in_the_first_epoch_of_a_refit_keeps_the_model_before(digits_small, monkeypatch, quiet):
    X, y = digits_small
    with config_context(fused_kernels=False):
        clf = NitroMLPClassifier(hidden_layer_sizes=(16,), max_iter=2, random_state=0).fit(X, y)
        before = _fitted_state(clf)
        _fail_at_step(monkeypatch, 5)
        with pytest.raises(Boom):
            clf.set_params(random_state=1).fit(X[:200], y[:200])
    _assert_same_model(clf, before, X)


def _interrupt_in_epoch(monkeypatch, epoch):
    import sknitro._base

    real, calls = sknitro._base.train_epoch, []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == epoch:
            kwargs["on_batch"] = lambda stats: (_ for _ in ()).throw(KeyboardInterrupt)
        return real(*args, **kwargs)

    monkeypatch.setattr(sknitro._base, "train_epoch", interrupted)


def test_ctrl_c_in_the_first_epoch_of_a_fit_leaves_the_estimator_as_it_was(digits_small, monkeypatch, quiet):
    X, y = digits_small
    clf = NitroMLPClassifier(hidden_layer_sizes=(16,), max_iter=2, random_state=0)
    _interrupt_in_epoch(monkeypatch, 1)
    with pytest.raises(KeyboardInterrupt):
        clf.fit(X, y)
    assert not [name for name in vars(clf) if name.endswith("_")]  # no untrained model left fitted
    monkeypatch.undo()

    clf.fit(X, y)
    before = _fitted_state(clf)
    _interrupt_in_epoch(monkeypatch, 1)
    with pytest.raises(KeyboardInterrupt):
        clf.fit(X[:300], y[:300])
    _assert_same_model(clf, before, X)

    monkeypatch.undo()
    _interrupt_in_epoch(monkeypatch, 1)
    with pytest.raises(KeyboardInterrupt):
        NitroMLPClassifier(hidden_layer_sizes=(16,)).partial_fit(X, y, classes=np.unique(y))


@pytest.mark.parametrize("params, message", [
    ({"batch_size": -5}, "batch_size"), ({"batch_size": 0}, "batch_size"),
    ({"target_value": 1000}, "target_value"), ({"shuffle": "no"}, "shuffle"),
    ({"negative_slope_inv": 6}, "negative_slope_inv"), ({"callbacks": [print, 3]}, r"callbacks\[1\]"),
])
def test_partial_fit_checks_the_parameters_on_every_call(digits_small, params, message):
    X, y = digits_small
    clf = NitroMLPClassifier(hidden_layer_sizes=(16,), random_state=0).partial_fit(X, y, classes=np.unique(y))
    before = _fitted_state(clf)
    with pytest.raises((ValueError, TypeError), match=message):
        clf.set_params(**params).partial_fit(X, y)
    _assert_same_model(clf, before, X)


def test_partial_fit_refuses_other_classes_later(digits_small):
    X, y = digits_small
    classes = np.unique(y)
    clf = NitroMLPClassifier(hidden_layer_sizes=(16,), random_state=0).partial_fit(X, y, classes=classes)
    with pytest.raises(ValueError, match="not the same as on the first call"):
        clf.partial_fit(X, y, classes=np.arange(11))
    assert clf.n_iter_ == 1
    clf.partial_fit(X, y, classes=classes[::-1])  # the same classes, in any order
    assert clf.n_iter_ == 2


def test_boolean_features_are_integers_0_and_1(quiet):
    rng = np.random.default_rng(0)
    X = rng.random((300, 6)) < 0.5
    y = X[:, 0] + 2 * X[:, 2]  # four classes, from two of the columns
    for estimator in (NitroMLPClassifier(hidden_layer_sizes=(32,), max_iter=30, random_state=0),
                      NitroCNNClassifier(architecture=[4], image_shape=(2, 3), max_iter=2, random_state=0)):
        as_bool = estimator.fit(X, y)
        assert as_bool.encoder_.kind == "integer"
        weights = [w.copy() for w in as_bool.weights_]
        as_int = estimator.fit(X.astype(np.int64), y)
        assert weights_equal(weights, as_int.weights_)  # the same model as on 0/1 integers
        np.testing.assert_array_equal(as_int.predict(X), as_int.predict(X.astype(np.int64)))
    assert as_int.score(X, y) > 0  # the CNN above is tiny; the MLP learns the table:
    mlp = NitroMLPClassifier(hidden_layer_sizes=(32,), max_iter=30, random_state=0).fit(X, y)
    assert mlp.score(X, y) >= 0.95


def test_an_integer_model_takes_whole_floats_and_refuses_others(digits_small):
    X, y = digits_small
    clf = NitroMLPClassifier(hidden_layer_sizes=(16,), max_iter=1, random_state=0).fit(X.astype(np.int64), y)
    np.testing.assert_array_equal(clf.decision_function(X.astype(np.float64)), clf.decision_function(X))
    for bad, message in ((X + 0.5, "not all whole numbers"), (np.where(X == 0, np.inf, X), "infinity"),
                         (X.astype(np.float64) * 2.0**60, "not all whole|beyond"),
                         (X.astype(np.int64) * 2**60, r"beyond ±2\*\*55")):
        with pytest.raises(ValueError, match=message):
            clf.predict(bad)


@pytest.mark.parametrize("image_shape, message", [
    ((8.5, 8), "positive integers"), ((-8, -8), "positive integers"), ((True, 8, 8), "positive integers"),
    ((8,), "positive integers"), ((1, 1, 8, 8), "positive integers"), ((4, 4), "does not match the 64"),
])
def test_cnn_checks_image_shape(digits_small, image_shape, message):
    X, y = digits_small
    with pytest.raises(ValueError, match=message):
        NitroCNNClassifier(architecture=[4], image_shape=image_shape, max_iter=1).fit(X, y)


def test_cnn_image_shape_must_match_image_input(digits_small, quiet):
    X, y = digits_small
    images = X.reshape(-1, 1, 8, 8)
    with pytest.raises(ValueError, match=r"images of shape \(1, 8, 8\), but image_shape is \(2, 4, 8\)"):
        NitroCNNClassifier(architecture=[4], image_shape=(2, 4, 8), max_iter=1).fit(images, y)
    clf = NitroCNNClassifier(architecture=[4], image_shape=(8, 8), max_iter=1, random_state=0).fit(images, y)
    assert clf.image_shape_ == (1, 8, 8)


@pytest.mark.parametrize("shape", [(0, 8, 8), (0, 1, 8, 8)])
def test_cnn_names_empty_image_input(digits_small, shape, quiet):
    X, y = digits_small
    with pytest.raises(ValueError, match="0 sample"):
        NitroCNNClassifier(architecture=[4], max_iter=1).fit(np.zeros(shape), y[:0])
    clf = NitroCNNClassifier(architecture=[4], max_iter=1, random_state=0).fit(X.reshape(-1, 8, 8), y)
    with pytest.raises(ValueError, match="0 sample"):
        clf.predict(np.zeros(shape))


def test_early_stopping_with_a_large_validation_fraction_trains(quiet):
    from sklearn.datasets import load_iris

    X, y = load_iris(return_X_y=True)
    clf = NitroMLPClassifier(hidden_layer_sizes=(8,), early_stopping=True, validation_fraction=0.99,
                             max_iter=2, random_state=0).fit(X, y)
    assert clf.n_iter_ >= 1 and len(clf.validation_scores_) == clf.n_iter_


def test_hidden_layer_sizes_may_be_one_integer(digits_small, quiet):
    X, y = digits_small
    as_int = NitroMLPClassifier(hidden_layer_sizes=16, max_iter=1, random_state=0).fit(X, y)
    as_tuple = NitroMLPClassifier(hidden_layer_sizes=(16,), max_iter=1, random_state=0).fit(X, y)
    assert [w.shape for w in as_int.weights_] == [(16, 64), (10, 16)]
    assert weights_equal(as_int.weights_, as_tuple.weights_)
    with pytest.raises(ValueError, match="hidden_layer_sizes"):
        NitroMLPClassifier(hidden_layer_sizes=0).fit(X, y)


@pytest.mark.parametrize("change", [{"hidden_layer_sizes": (8,)}, {"dropout": 0.2}, {"fwd_decay_inv": 500},
                                    {"negative_slope_inv": 8}])
def test_continuing_a_network_with_other_network_parameters_raises(digits_small, change, quiet):
    X, y = digits_small
    clf = NitroMLPClassifier(hidden_layer_sizes=(16,), max_iter=1, warm_start=True, random_state=0).fit(X, y)
    before = _fitted_state(clf)
    name = next(iter(change))
    clf.set_params(**change)
    for call in (lambda: clf.fit(X, y), lambda: clf.partial_fit(X, y)):
        with pytest.raises(ValueError, match=rf"{name}=.*\(built with .*\).*warm_start=False"):
            call()
        _assert_same_model(clf, before, X)
    defaults = NitroMLPClassifier(hidden_layer_sizes=(16,)).get_params()
    clf.set_params(**{name: defaults[name] for name in change})
    clf.set_params(max_iter=2, shuffle=False).fit(X, y)  # the others apply as set
    clf.partial_fit(X, y)
    assert clf.n_iter_ == 1 + 2 + 1
    clf.set_params(warm_start=False, **change).fit(X, y)  # a new network, built with them
    assert clf.n_iter_ == 2


def test_continuing_a_cnn_with_another_architecture_raises(digits_small, quiet):
    X, y = digits_small
    images = X.reshape(-1, 1, 8, 8)
    cnn = NitroCNNClassifier(architecture=[4, "M"], max_iter=1, warm_start=True, random_state=0)
    cnn.fit(images, y)
    with pytest.raises(ValueError, match=r"architecture=\(4, 'M', 8\) \(built with \(4, 'M'\)\)"):
        cnn.set_params(architecture=[4, "M", 8]).fit(images, y)
    with pytest.raises(ValueError, match="head_dim="):
        cnn.set_params(architecture=[4, "M"], head_dim=16).partial_fit(images, y)
    del cnn._network_built_with  # a model saved before the parameters were recorded: not checked
    cnn.partial_fit(images, y)
    assert cnn.n_iter_ == 2
