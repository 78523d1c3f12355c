"""Accuracy floors on real data: the published Fashion-MNIST MLP (algorithm.md §8)."""

import warnings

import pytest

from sknitro import NitroMLPClassifier
from sknitro.datasets import fashion_mnist_available, load_fashion_mnist

pytestmark = pytest.mark.skipif(
    not fashion_mnist_available(),
    reason="Fashion-MNIST not installed: apt-get install dataset-fashion-mnist (CI installs it)",
)

PUBLISHED = dict(hidden_layer_sizes=(200, 100, 50), lr_inv=512, lr_amp=640, fwd_decay_inv=10000,
                 head_decay_inv=8000, target_value=32, batch_size=64)


@pytest.fixture(scope="module")
def fashion():
    X_train, y_train, X_test, y_test = load_fashion_mnist()
    return X_train.reshape(60000, -1), y_train, X_test.reshape(10000, -1), y_test


def five_epochs(fashion, **params):
    X_train, y_train, X_test, y_test = fashion
    clf = NitroMLPClassifier(**{**PUBLISHED, **params}, max_iter=5, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf.fit(X_train, y_train)
    assert clf.encoder_.kind == "image"  # uint8 pixels: integer standardisation
    return clf, clf.score(X_test, y_test)


def test_published_architecture_reaches_85_percent_after_5_epochs(fashion):
    # 784-200-100-50-10 with the published decays and amplification, at sknitro's default
    # lr_inv=256 (measured: 85.9% / 85.8% for seeds 0 / 1).
    clf, accuracy = five_epochs(fashion, lr_inv=256)
    assert accuracy >= 0.85, accuracy
    assert all(a > 0.80 for a in clf.head_accuracies_), clf.head_accuracies_


def test_published_configuration_follows_the_published_curve(fashion):
    # lr_inv=512 exactly as published: the published code reaches 70.3% / 79.0% after
    # epochs 1 / 2; sknitro 70.7% / 79.0% (seed 1) and 84.7% / 84.8% after 5 (seeds 0 / 1).
    clf, accuracy = five_epochs(fashion)
    assert accuracy >= 0.84, accuracy
