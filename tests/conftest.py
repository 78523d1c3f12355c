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


# every kernel implementation this machine runs, pinned, and the pure integer GEMM
from sknitro.nn.kernels import AVAILABLE as KERNELS  # noqa: E402

KERNEL_PATHS = {**{name: {"kernels": name} for name in KERNELS}, "integer": {"gemm": "integer"}}
PAIR_ISAS = [isa for isa in ("avx2", "vnni") if isa in KERNELS]


def weights_equal(a, b):
    return len(a) == len(b) and all(np.array_equal(x, y) and x.dtype == y.dtype for x, y in zip(a, b))


class KernelSpy:
    """Stands in for sknitro._fused and counts the calls of each kernel (and, for the pair
    products, of each instruction set: ``calls["units_sgd_update/avx2"]``)."""

    def __init__(self, kernels):
        self.kernels = kernels
        self.calls = {}

    def __getattr__(self, name):
        kernel = getattr(self.kernels, name)

        def counted(*args, **keywords):
            self.calls[name] = self.calls.get(name, 0) + 1
            if args and isinstance(args[0], str):  # a pair product: its instruction set
                key = f"{name}/{args[0]}"
                self.calls[key] = self.calls.get(key, 0) + 1
            return kernel(*args, **keywords)

        return counted


@pytest.fixture
def spy(monkeypatch):
    """Counts the compiled kernels' calls (sknitro._fused must be built)."""
    from sknitro.nn import kernels

    spy = KernelSpy(kernels._compiled)
    monkeypatch.setattr(kernels, "_compiled", spy)
    return spy
