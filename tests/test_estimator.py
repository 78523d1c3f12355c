"""NitroMLPClassifier: scikit-learn contract, reproducibility, integer-only audit, errors."""

import pickle
import subprocess
import sys
import textwrap
import warnings

import joblib
import numpy as np
import pytest
from conftest import weights_equal
from sklearn.model_selection import cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer
from sklearn.utils.estimator_checks import parametrize_with_checks

import sknitro
from sknitro import NitroMLPClassifier
from sknitro.nn import kernels, training


@parametrize_with_checks([NitroMLPClassifier()])
def test_sklearn_compatible(estimator, check):
    check(estimator)


def test_digits_cross_validation_reaches_95_percent(digits):
    X, y = digits
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scores = cross_val_score(NitroMLPClassifier(random_state=0), X, y, cv=5)
    assert scores.mean() >= 0.95, scores


def test_fit_learns_and_reports_attributes(digits):
    X, y = digits
    clf = NitroMLPClassifier(hidden_layer_sizes=(64, 32), max_iter=15, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf.fit(X[:1400], y[:1400])
    assert clf.score(X[1400:], y[1400:]) > 0.85
    assert clf.n_iter_ == 15 and len(clf.loss_curve_) == 15 and len(clf.history_) == 15
    assert clf.t_ == 15 * 1400
    assert clf.loss_curve_[-1] < clf.loss_curve_[0]
    assert [w.shape for w in clf.weights_] == [(64, 64), (32, 64), (10, 32)]
    assert [w.shape for w in clf.head_weights_] == [(10, 64), (10, 32)]
    assert all(w.dtype == np.int32 for w in clf.weights_ + clf.head_weights_)
    assert len(clf.head_accuracies_) == 2 and all(0.8 < a <= 1 for a in clf.head_accuracies_)
    scores = clf.decision_function(X[:5])
    assert scores.dtype == np.int8 and scores.shape == (5, 10)
    np.testing.assert_array_equal(clf.predict(X[:5]), clf.classes_[scores.argmax(axis=1)])
    proba = clf.predict_proba(X[:5])
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    np.testing.assert_array_equal(proba.argmax(axis=1), scores.argmax(axis=1))


def test_string_labels_and_binary_decision_function(digits):
    X, y = digits
    mask = (y == 3) | (y == 8)
    labels = np.where(y[mask] == 3, "three", "eight")
    clf = NitroMLPClassifier(max_iter=10, random_state=0).fit(X[mask], labels)
    assert list(clf.classes_) == ["eight", "three"]
    decision = clf.decision_function(X[mask])
    assert decision.shape == (mask.sum(),) and decision.dtype.kind == "i"
    np.testing.assert_array_equal(clf.predict(X[mask]), np.where(decision > 0, "three", "eight"))
    assert clf.score(X[mask], labels) > 0.95


def test_uint8_images_use_integer_encoding(digits):
    X, y = digits
    images = (X * 15).astype(np.uint8)
    clf = NitroMLPClassifier(max_iter=10, random_state=0).fit(images, y)
    assert clf.encoder_.kind == "image"
    assert clf.encoder_.mean.dtype.kind == "i" and clf.encoder_.mad.dtype.kind == "i"
    assert clf.score(images, y) > 0.9


def test_same_seed_gives_identical_weights(digits_small):
    X, y = digits_small
    params = dict(hidden_layer_sizes=(32, 16), max_iter=3, dropout=0.1, random_state=7)
    a = NitroMLPClassifier(**params).fit(X, y)
    b = NitroMLPClassifier(**params).fit(X, y)
    c = NitroMLPClassifier(**{**params, "random_state": 8}).fit(X, y)
    assert weights_equal(a.weights_ + a.head_weights_, b.weights_ + b.head_weights_)
    assert not weights_equal(a.weights_, c.weights_)


def test_integer_kernel_gives_identical_weights(digits_small):
    X, y = digits_small
    params = dict(hidden_layer_sizes=(40, 20), max_iter=3, random_state=3)
    fast = NitroMLPClassifier(**params).fit(X, y)
    with sknitro.config_context(gemm="integer"):
        exact = NitroMLPClassifier(**params).fit(X, y)
    assert weights_equal(fast.weights_ + fast.head_weights_, exact.weights_ + exact.head_weights_)
    np.testing.assert_array_equal(fast.decision_function(X), exact.decision_function(X))


class FloatArrayAudit:
    """Watches every frame of the engine (sknitro.nn, sknitro.backend) line by line and
    records each float array bound to a local variable or returned."""

    def __init__(self):
        self.found = set()

    def _is_engine(self, frame):
        name = frame.f_code.co_filename.replace("\\", "/")
        return "/sknitro/nn/" in name or name.endswith("/sknitro/backend.py")

    def _inspect(self, frame, values):
        for value in values:
            if isinstance(value, np.ndarray) and value.dtype.kind in "fc":
                self.found.add(f"{frame.f_code.co_name}:{frame.f_lineno} {value.dtype}")

    def tracer(self, frame, event, arg):
        if not self._is_engine(frame):
            return None

        def local_tracer(frame, event, arg):
            self._inspect(frame, frame.f_locals.values())
            if event == "return":
                self._inspect(frame, [arg])
            return local_tracer

        return local_tracer

    def __enter__(self):
        sys.settrace(self.tracer)
        return self

    def __exit__(self, *exc):
        sys.settrace(None)


def test_integer_kernel_creates_no_float_array(digits):
    X, y = digits
    images = (X[:300] * 15).astype(np.uint8)  # integer input: no float even at the boundary
    params = dict(hidden_layer_sizes=(16,), max_iter=2, dropout=0.2, random_state=0)
    with sknitro.config_context(gemm="integer"), FloatArrayAudit() as audit:
        clf = NitroMLPClassifier(**params).fit(images, y[:300])
        clf.decision_function(images)
    assert audit.found == set()
    arrays = [clf.encoder_.mean, clf.encoder_.mad] + clf.weights_ + clf.head_weights_
    assert all(a.dtype.kind == "i" for a in arrays)
    # the audit does see the float64 products of the reference kernels (exact_matmul on BLAS);
    # the pair kernels have none, dropout's output (int8 here) included
    with sknitro.config_context(kernels="numpy"), FloatArrayAudit() as audit:
        NitroMLPClassifier(**params).fit(images, y[:300])
    assert any("float64" in f for f in audit.found)
    for name in set(kernels.AVAILABLE) - {"numpy", "c"}:
        with sknitro.config_context(kernels=name), FloatArrayAudit() as audit:
            NitroMLPClassifier(**params).fit(images, y[:300])
        assert audit.found == set(), name


def test_joblib_round_trip_in_fresh_process_is_bit_exact(tmp_path, digits_small):
    X, y = digits_small
    params = dict(hidden_layer_sizes=(32,), max_iter=3, random_state=11)
    clf = NitroMLPClassifier(**params).fit(X, y)
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "y.npy", y)
    script = textwrap.dedent(f"""
        import joblib, numpy as np
        from sknitro import NitroMLPClassifier
        X, y = np.load({str(tmp_path / 'X.npy')!r}), np.load({str(tmp_path / 'y.npy')!r})
        clf = NitroMLPClassifier(**{params!r}).fit(X, y)
        joblib.dump(clf, {str(tmp_path / 'model.joblib')!r})
    """)
    subprocess.run([sys.executable, "-c", script], check=True)
    loaded = joblib.load(tmp_path / "model.joblib")
    assert weights_equal(clf.weights_ + clf.head_weights_, loaded.weights_ + loaded.head_weights_)
    np.testing.assert_array_equal(clf.decision_function(X), loaded.decision_function(X))
    again = pickle.loads(pickle.dumps(loaded))
    np.testing.assert_array_equal(again.predict(X), clf.predict(X))


def test_partial_fit_and_warm_start(digits_small):
    X, y = digits_small
    clf = NitroMLPClassifier(random_state=0)
    with pytest.raises(ValueError, match="classes must be passed"):
        clf.partial_fit(X, y)
    for _ in range(3):
        clf.partial_fit(X[:300], y[:300], classes=np.arange(10))
    assert clf.n_iter_ == 3 and clf.t_ == 900
    with pytest.raises(ValueError, match="not in classes_"):
        clf.partial_fit(X[:10], y[:10] + 10)
    # warm_start continues from the same network; a cold fit starts again
    warm = NitroMLPClassifier(max_iter=2, warm_start=True, random_state=0).fit(X, y)
    first = [w.copy() for w in warm.weights_]
    warm.fit(X, y)
    assert warm.n_iter_ == 4 and not weights_equal(first, warm.weights_)
    cold = NitroMLPClassifier(max_iter=2, random_state=0).fit(X, y)
    assert weights_equal(first, cold.weights_)


def test_early_stopping_keeps_best_validated_model(digits):
    X, y = digits
    clf = NitroMLPClassifier(early_stopping=True, n_iter_no_change=3, max_iter=200, random_state=0)
    clf.fit(X, y)
    assert clf.n_iter_ < 200
    assert len(clf.validation_scores_) == clf.n_iter_
    assert clf.best_validation_score_ == max(clf.validation_scores_) > 0.9


def test_plateau_schedule_raises_lr_inv(digits_small):
    X, y = digits_small
    clf = NitroMLPClassifier(max_iter=40, lr_plateau_patience=2, lr_plateau_factor=2, tol=0.5,
                             n_iter_no_change=100, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf.fit(X, y)
    # tol=0.5: only the first epoch counts as an improvement, so lr_inv doubles every 2 epochs
    assert [r["lr_inv"] for r in clf.history_[:6]] == [256, 256, 256, 512, 512, 1024]
    assert clf.lr_inv_ == 256 * 2**19


def test_keyboard_interrupt_keeps_last_finished_epoch(monkeypatch, digits_small):
    X, y = digits_small
    reference = NitroMLPClassifier(max_iter=2, random_state=0).fit(X, y)
    real_train_epoch = training.train_epoch
    calls = []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            kwargs["on_batch"] = lambda stats: (_ for _ in ()).throw(KeyboardInterrupt)
        return real_train_epoch(*args, **kwargs)

    monkeypatch.setattr("sknitro._base.train_epoch", interrupted)
    clf = NitroMLPClassifier(max_iter=5, random_state=0)
    with pytest.warns(UserWarning, match="keeping the model of epoch 2"):
        clf.fit(X, y)
    assert clf.n_iter_ == 2
    assert weights_equal(reference.weights_ + reference.head_weights_, clf.weights_ + clf.head_weights_)


def test_pandas_feature_names_and_pipeline(digits_small):
    pd = pytest.importorskip("pandas")
    X, y = digits_small
    frame = pd.DataFrame(X, columns=[f"pixel{i}" for i in range(64)])
    clf = NitroMLPClassifier(max_iter=2, random_state=0).fit(frame, y)
    assert list(clf.feature_names_in_) == list(frame.columns)
    pipe = make_pipeline(FunctionTransformer(lambda a: np.asarray(a) * 2),
                         NitroMLPClassifier(max_iter=30, random_state=0))
    assert pipe.fit(frame, y).score(frame, y) > 0.9


def test_verbose_prints_epochs(capsys, digits_small):
    X, y = digits_small
    NitroMLPClassifier(max_iter=2, verbose=True, random_state=0).fit(X, y)
    out = capsys.readouterr().out
    assert "epoch   1" in out and "epoch   2" in out and "train acc" in out


@pytest.mark.parametrize("X, message", [
    (np.array([[1.0, np.nan], [2.0, 3.0]]), "NaN"),
    (np.array([[1.0, np.inf], [2.0, 3.0]]), "infinity"),
    (np.zeros((0, 4)), "0 sample"),
    (np.array([["a", "b"], ["c", "d"]]), "strings|numeric"),
    (np.zeros((4, 2, 2)), "dim 3"),
])
def test_bad_X_raises_clear_errors(X, message):
    y = np.arange(len(X)) % 2
    with pytest.raises(ValueError, match=message):
        NitroMLPClassifier(max_iter=1).fit(X, y)


def test_one_sample_and_one_class_raise():
    with pytest.raises(ValueError, match="at least 2 classes"):
        NitroMLPClassifier(max_iter=1).fit(np.ones((1, 3)), [1])
    with pytest.raises(ValueError, match="at least 2 classes"):
        NitroMLPClassifier(max_iter=1).fit(np.random.default_rng(0).normal(size=(10, 3)), [4] * 10)


def test_wrong_feature_count_at_predict(digits_small):
    X, y = digits_small
    clf = NitroMLPClassifier(max_iter=1, random_state=0).fit(X, y)
    with pytest.raises(ValueError, match="64 features"):
        clf.predict(X[:, :10])


@pytest.mark.parametrize("params, name", [
    ({"lr_inv": 0}, "lr_inv"),
    ({"lr_inv": 2.5}, "lr_inv"),
    ({"activation": "relu"}, "activation"),
    ({"negative_slope_inv": 6}, "negative_slope_inv"),
    ({"dropout": 0.33}, "dropout"),
    ({"dropout": 1.0}, "dropout"),
    ({"scale_bits": -1}, "scale_bits"),
    ({"target_value": 200}, "target_value"),
    ({"device": "tpu"}, "device"),
    ({"hidden_layer_sizes": (10, 0)}, "hidden_layer_sizes"),
    ({"batch_size": 0}, "batch_size"),
    ({"validation_fraction": 1.0}, "validation_fraction"),
    ({"fwd_decay_inv": -1}, "fwd_decay_inv"),
])
def test_bad_parameters_name_the_parameter(params, name, digits_small):
    X, y = digits_small
    with pytest.raises((ValueError, TypeError), match=name):
        NitroMLPClassifier(**params).fit(X, y)


def test_cuda_without_gpu_is_a_clear_error(digits_small):
    try:
        import cupy

        if cupy.cuda.runtime.getDeviceCount() > 0:
            pytest.skip("a GPU is present: the CUDA path is tested in test_gpu.py")
    except Exception:
        pass
    X, y = digits_small
    with pytest.raises(ValueError, match="CuPy|GPU"):
        NitroMLPClassifier(device="cuda").fit(X, y)
