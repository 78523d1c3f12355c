"""The CuPy path (device="cuda"): same code, same integers as on the CPU.

Runs only where CuPy and a CUDA GPU are present; skipped with the reason elsewhere.
"""

import numpy as np
import pytest
from conftest import weights_equal


def _gpu_reason():
    try:
        import cupy
    except ImportError:
        return "CuPy is not installed (pip install 'sknitro[cuda]')"
    try:
        if cupy.cuda.runtime.getDeviceCount() == 0:
            return "no CUDA GPU"
    except Exception as exc:  # no driver
        return f"no usable CUDA GPU ({exc})"
    return None


pytestmark = pytest.mark.skipif(_gpu_reason() is not None, reason=str(_gpu_reason()))


@pytest.mark.parametrize("make", ["mlp", "cnn"])
def test_cuda_training_is_bit_identical_to_cpu(make, digits):
    from sknitro import NitroCNNClassifier, NitroMLPClassifier

    X, y = digits
    if make == "mlp":
        params = dict(hidden_layer_sizes=(32, 16), max_iter=3, dropout=0.1, random_state=0)
        cls = NitroMLPClassifier
    else:
        params = dict(architecture=[8, "M", 8], hidden_layer_sizes=(16,), max_iter=2, augment=True,
                      random_state=0)
        cls = NitroCNNClassifier
    cpu = cls(**params).fit(X[:500], y[:500])
    gpu = cls(**params, device="cuda").fit(X[:500], y[:500])
    assert weights_equal(cpu.weights_ + cpu.head_weights_, gpu.weights_ + gpu.head_weights_)
    np.testing.assert_array_equal(cpu.decision_function(X), gpu.decision_function(X))
