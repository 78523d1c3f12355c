"""A fitted model predicts from many threads at once (web servers, joblib's threading
backend) with exactly the sequential results, on every kernel path."""

import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import sknitro
from sknitro import NitroCNNClassifier, NitroMLPClassifier
from sknitro.nn import kernels

from conftest import KERNEL_PATHS


class SlowKernels:
    """sknitro._fused whose weight-copy kernels sleep first: the other threads run meanwhile,
    so a copy published before it is complete would be read half made."""

    def __init__(self, kernels):
        self.kernels = kernels

    def __getattr__(self, name):
        kernel = getattr(self.kernels, name)
        if name not in ("split_units", "pair_form"):
            return kernel

        def slow(*args):
            time.sleep(0.002)
            return kernel(*args)

        return slow


@pytest.fixture(scope="module")
def models(digits):
    X, y = digits
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mlp = NitroMLPClassifier(hidden_layer_sizes=(64, 32), max_iter=3, random_state=0).fit(X, y)
        # 65 inputs to the second layer: the pair kernels' split-units copy of its weights
        odd = NitroMLPClassifier(hidden_layer_sizes=(65, 33), max_iter=3, random_state=0).fit(X, y)
        cnn = NitroCNNClassifier(architecture=[8, "M"], hidden_layer_sizes=(16,), max_iter=2,
                                 random_state=0).fit(X.reshape(-1, 1, 8, 8), y)
    return {"mlp": (mlp, X), "mlp-odd-width": (odd, X), "cnn": (cnn, X.reshape(-1, 1, 8, 8))}


@pytest.mark.parametrize("path", KERNEL_PATHS)
@pytest.mark.parametrize("name", ["mlp", "mlp-odd-width", "cnn"])
def test_predict_from_many_threads_gives_the_sequential_results(models, name, path, monkeypatch):
    model, X = models[name]
    if kernels._compiled is not None:
        monkeypatch.setattr(kernels, "_compiled", SlowKernels(kernels._compiled))
    slices = [slice(start, start + 97) for start in range(0, len(X) - 97, 61)]
    with sknitro.config_context(**KERNEL_PATHS[path]):
        expected = [model.decision_function(X[s]) for s in slices]
    stop = threading.Event()

    def call(i):
        with sknitro.config_context(**KERNEL_PATHS[path]):  # the context is per thread
            return model.decision_function(X[slices[i % len(slices)]])

    def drop_copies():  # what every predict does at its end, all the time
        while not stop.is_set():
            model.network_.drop_weight_copies()
            time.sleep(0.0005)

    dropper = threading.Thread(target=drop_copies)
    dropper.start()
    try:
        with ThreadPoolExecutor(max_workers=8) as pool:
            results = list(pool.map(call, range(4 * len(slices))))
    finally:
        stop.set()
        dropper.join()
    for i, result in enumerate(results):
        np.testing.assert_array_equal(result, expected[i % len(slices)])


def test_a_context_is_per_thread():
    with sknitro.config_context(gemm="integer"):
        with ThreadPoolExecutor(max_workers=1) as pool:
            inside_worker = pool.submit(lambda: sknitro.get_config()["gemm"]).result()
        assert sknitro.get_config()["gemm"] == "integer"
    assert inside_worker == "auto"  # a worker thread starts from the defaults
