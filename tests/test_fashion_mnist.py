"""Accuracy floor on real data: the published Fashion-MNIST MLP (algorithm.md §8)."""

import warnings

import pytest

from sknitro import NitroMLPClassifier
from sknitro.datasets import fashion_mnist_available, load_fashion_mnist

pytestmark = pytest.mark.skipif(
    not fashion_mnist_available(),
    reason="Fashion-MNIST not installed: apt-get install dataset-fashion-mnist (CI installs it)",
)


def test_published_mlp_reaches_85_percent_after_5_epochs():
    X_train, y_train, X_test, y_test = load_fashion_mnist()
    clf = NitroMLPClassifier(hidden_layer_sizes=(200, 100, 50), lr_inv=512, lr_amp=640,
                             fwd_decay_inv=10000, head_decay_inv=8000, batch_size=64,
                             max_iter=5, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf.fit(X_train.reshape(60000, -1), y_train)
    assert clf.encoder_.kind == "image"  # uint8 pixels: integer standardisation
    accuracy = clf.score(X_test.reshape(10000, -1), y_test)
    assert accuracy >= 0.85, accuracy
    assert all(a > 0.80 for a in clf.head_accuracies_), clf.head_accuracies_
