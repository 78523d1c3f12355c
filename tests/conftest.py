import os

# scikit-learn's check_array_api_input (run by check_estimator with the NumPy namespace
# only, since sknitro does not claim array-API support) needs this set before SciPy loads.
os.environ.setdefault("SCIPY_ARRAY_API", "1")

import numpy as np
import pytest
from sklearn.datasets import load_digits


@pytest.fixture(scope="session")
def digits():
    X, y = load_digits(return_X_y=True)
    return X, y


@pytest.fixture(scope="session")
def digits_small(digits):
    """A quick, still meaningful training set: 600 digits."""
    X, y = digits
    return X[:600], y[:600]


def weights_equal(a, b):
    return len(a) == len(b) and all(np.array_equal(x, y) and x.dtype == y.dtype for x, y in zip(a, b))


class KernelSpy:
    """Stands in for sknitro._fused and counts the calls of each kernel."""

    def __init__(self, kernels):
        self.kernels = kernels
        self.calls = {}

    def __getattr__(self, name):
        kernel = getattr(self.kernels, name)

        def counted(*args):
            self.calls[name] = self.calls.get(name, 0) + 1
            return kernel(*args)

        return counted


@pytest.fixture
def spy(monkeypatch):
    """Counts the compiled kernels' calls (sknitro._fused must be built)."""
    from sknitro.nn import fused

    spy = KernelSpy(fused._kernels)
    monkeypatch.setattr(fused, "_kernels", spy)
    return spy
