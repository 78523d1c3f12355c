"""Command-line entry point: ``sknitro`` or ``python -m sknitro``.

The default run trains a :class:`~sknitro.NitroMLPClassifier` on scikit-learn's bundled
digits (no download, about ten seconds), printing each epoch, then the test accuracy.
``--dataset fashion-mnist`` trains the published 784-200-100-50-10 network on
Fashion-MNIST; ``--save model.joblib`` stores the fitted model with joblib.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

import numpy as np

from . import __version__
from .mlp import NitroMLPClassifier


def _load(dataset: str, data_home: str | None, seed: int):
    if dataset == "digits":
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split

        X, y = load_digits(return_X_y=True)
        return train_test_split(X, y, test_size=0.25, stratify=y, random_state=seed)
    from .datasets import load_fashion_mnist

    X_train, y_train, X_test, y_test = load_fashion_mnist(data_home)
    return X_train.reshape(len(X_train), -1), X_test.reshape(len(X_test), -1), y_train, y_test


def _estimator(args: argparse.Namespace) -> NitroMLPClassifier:
    if args.dataset == "digits":
        params = {"hidden_layer_sizes": (100,), "max_iter": 100 if args.epochs is None else args.epochs}
    else:  # the published Fashion-MNIST configuration (algorithm.md §8)
        params = {"hidden_layer_sizes": (200, 100, 50), "lr_inv": 512, "lr_amp": 640,
                  "fwd_decay_inv": 10000, "head_decay_inv": 8000, "target_value": 32,
                  "max_iter": 150 if args.epochs is None else args.epochs,
                  "early_stopping": True, "n_iter_no_change": 35, "lr_plateau_patience": 15,
                  "tol": 0.01}
    if args.hidden:
        params["hidden_layer_sizes"] = tuple(args.hidden)
    if args.lr_inv is not None:
        params["lr_inv"] = args.lr_inv
    return NitroMLPClassifier(random_state=args.seed, verbose=True, device=args.device, **params)


def _positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (``--epochs 0`` or ``--lr-inv 0`` would be ignored)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sknitro", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", choices=["digits", "fashion-mnist"], default="digits")
    parser.add_argument("--data-home", help="directory of the Fashion-MNIST IDX files")
    parser.add_argument("--epochs", type=_positive_int, help="maximum epochs (default: 100 digits, 150 fashion-mnist)")
    parser.add_argument("--hidden", type=_positive_int, nargs="+", help="hidden layer sizes, e.g. --hidden 200 100 50")
    parser.add_argument("--lr-inv", type=_positive_int, help="inverse learning rate")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--save", metavar="PATH", help="save the fitted model with joblib")
    parser.add_argument("--version", action="version", version=f"sknitro {__version__}")
    args = parser.parse_args(argv)

    try:
        X_train, X_test, y_train, y_test = _load(args.dataset, args.data_home, args.seed)
    except FileNotFoundError as exc:
        print(f"sknitro: {exc}", file=sys.stderr)
        return 2
    clf = _estimator(args)
    print(f"sknitro {__version__}: training {clf.hidden_layer_sizes} on {args.dataset} "
          f"({len(y_train)} train / {len(y_test)} test samples), integer arithmetic only")
    started = time.perf_counter()
    clf.fit(X_train, y_train)
    seconds = time.perf_counter() - started
    accuracy = clf.score(X_test, y_test)
    print(f"trained {clf.n_iter_} epochs in {seconds:.1f} s; head accuracies "
          f"{np.round(clf.head_accuracies_, 4).tolist()}")
    print(f"test accuracy: {accuracy:.4f}")
    if args.save:
        import joblib

        joblib.dump(clf, args.save)
        print(f"model saved to {args.save}")
    return 0
