"""NitroCNNClassifier: scikit-learn contract, input shapes, augmentation, reproducibility."""

import warnings

import joblib
import numpy as np
import pytest
from conftest import weights_equal
from sklearn.model_selection import cross_val_score
from sklearn.utils.estimator_checks import parametrize_with_checks

import sknitro
from sknitro import NitroCNNClassifier
from sknitro.nn.augment import random_crop_flip

TINY = dict(architecture=[8, "M"], hidden_layer_sizes=(), max_iter=2)


@parametrize_with_checks([NitroCNNClassifier()])
def test_sklearn_compatible(estimator, check):
    check(estimator)


def test_digits_as_images_cross_validation_reaches_95_percent(digits):
    X, y = digits
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scores = cross_val_score(NitroCNNClassifier(random_state=0), X.reshape(-1, 1, 8, 8), y, cv=5)
    assert scores.mean() >= 0.95, scores


@pytest.mark.parametrize("shape, image_shape, expected", [
    ((40, 1, 8, 8), None, (1, 8, 8)),
    ((40, 8, 8), None, (1, 8, 8)),
    ((40, 64), None, (1, 8, 8)),
    ((40, 64), (2, 4, 8), (2, 4, 8)),
    ((40, 64), (4, 16), (1, 4, 16)),
    ((40, 10), None, (1, 1, 10)),
])
def test_input_shapes(shape, image_shape, expected):
    rng = np.random.default_rng(0)
    X = rng.integers(0, 256, size=shape).astype(np.uint8)
    y = np.arange(40) % 3
    clf = NitroCNNClassifier(**TINY, image_shape=image_shape, random_state=0).fit(X, y)
    assert clf.image_shape_ == expected
    assert clf.encoder_.kind == "image" and clf.encoder_.lookup_table.shape == (expected[0], 256)
    assert clf.predict(X).shape == (40,)


def test_wrong_shapes_raise():
    X = np.random.default_rng(0).integers(0, 256, size=(20, 1, 8, 8)).astype(np.uint8)
    y = np.arange(20) % 2
    clf = NitroCNNClassifier(**TINY, random_state=0).fit(X, y)
    with pytest.raises(ValueError, match=r"images of shape \(1, 6, 6\)"):
        clf.predict(X[:, :, :6, :6])
    with pytest.raises(ValueError, match="image_shape"):
        NitroCNNClassifier(**TINY, image_shape=(3, 5)).fit(X.reshape(20, -1), y)
    with pytest.raises(ValueError, match="5-D"):
        NitroCNNClassifier(**TINY).fit(X[..., None], y)


@pytest.mark.parametrize("params, name", [
    ({"architecture": "vgg99"}, "architecture"),
    ({"architecture": ["M", 8]}, "architecture"),
    ({"architecture": [8, 0]}, "architecture"),
    ({"conv_dropout": 0.12}, "conv_dropout"),
    ({"head_pooling": "median"}, "head_pooling"),
    ({"crop_padding": 0}, "crop_padding"),
])
def test_bad_parameters_name_the_parameter(params, name):
    X = np.random.default_rng(0).integers(0, 256, size=(20, 1, 8, 8)).astype(np.uint8)
    with pytest.raises((ValueError, TypeError), match=name):
        NitroCNNClassifier(**params).fit(X, np.arange(20) % 2)


def test_random_crop_flip_is_per_sample_and_pads_with_black():
    x = np.arange(1, 17, dtype=np.int8).reshape(1, 1, 4, 4).repeat(64, axis=0)
    black = np.array([-100], dtype=np.int8)
    out = random_crop_flip(x, np.random.default_rng(0), padding=1, black=black)
    again = random_crop_flip(x, np.random.default_rng(0), padding=1, black=black)
    np.testing.assert_array_equal(out, again)  # reproducible from the generator
    assert out.shape == x.shape and out.dtype == np.int8
    distinct = {sample.tobytes() for sample in out}
    assert len(distinct) > 5  # samples of one batch are augmented independently
    flipped = x[0, :, :, ::-1]
    assert any(np.array_equal(s, flipped) for s in out)  # a flip without a crop
    assert any(np.array_equal(s, x[0]) for s in out)  # neither
    # every output pixel is an input pixel or the black padding
    assert set(np.unique(out).tolist()) <= set(range(1, 17)) | {-100}
    assert (out == -100).any()


def test_same_seed_identical_weights_with_augmentation(digits):
    X, y = digits
    params = dict(architecture=[8, "M"], hidden_layer_sizes=(16,), max_iter=2, augment=True,
                  conv_dropout=0.1, random_state=4)
    a = NitroCNNClassifier(**params).fit(X[:400], y[:400])
    b = NitroCNNClassifier(**params).fit(X[:400], y[:400])
    c = NitroCNNClassifier(**{**params, "augment": False}).fit(X[:400], y[:400])
    assert weights_equal(a.weights_ + a.head_weights_, b.weights_ + b.head_weights_)
    assert not weights_equal(a.weights_, c.weights_)
    assert a.weights_[0].shape == (8, 1, 3, 3) and a.weights_[0].dtype == np.int32


def test_integer_kernel_and_joblib_round_trip_are_bit_exact(tmp_path, digits):
    X, y = digits
    params = dict(architecture=[8, "M", 8], hidden_layer_sizes=(), max_iter=2, random_state=2)
    fast = NitroCNNClassifier(**params).fit(X[:300], y[:300])
    with sknitro.config_context(gemm="integer"):
        exact = NitroCNNClassifier(**params).fit(X[:300], y[:300])
    assert weights_equal(fast.weights_ + fast.head_weights_, exact.weights_ + exact.head_weights_)
    joblib.dump(fast, tmp_path / "cnn.joblib")
    loaded = joblib.load(tmp_path / "cnn.joblib")
    np.testing.assert_array_equal(loaded.decision_function(X), fast.decision_function(X))


def test_pooling_on_maps_too_small_degrades_gracefully():
    X = np.random.default_rng(0).integers(0, 256, size=(30, 1, 2, 2)).astype(np.uint8)
    clf = NitroCNNClassifier(architecture=[4, "M", 4, "M", 4, "M"], hidden_layer_sizes=(),
                             max_iter=1, random_state=0).fit(X, np.arange(30) % 2)
    pools = [stage for stage in clf.network_.path if not hasattr(stage, "head")]
    assert [p.output_shape(None) for p in pools] == [(4, 1, 1)] * 3  # 2 -> 1, then windows of 1
    assert clf.network_.output.linear.in_features == 4
