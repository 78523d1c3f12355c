"""The CuPy path (device="cuda"): same code, same integers as on the CPU.

Runs only where CuPy and a CUDA GPU are present; skipped with the reason elsewhere.
"""

import io
import pickle

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


class _NoCuPyUnpickler(pickle.Unpickler):
    """Refuses every CuPy class: loading succeeds only if the pickle holds no CuPy object."""

    def find_class(self, module, name):
        if module.split(".")[0] == "cupy":
            raise pickle.UnpicklingError(f"the pickle holds a CuPy object: {module}.{name}")
        return super().find_class(module, name)


@pytest.mark.parametrize("make", ["mlp", "cnn"])
def test_cuda_model_pickles_numpy_arrays_and_loads_back_on_the_gpu(make, digits):
    import cupy

    from sknitro import NitroCNNClassifier, NitroMLPClassifier

    X, y = digits
    if make == "mlp":
        gpu = NitroMLPClassifier(hidden_layer_sizes=(16,), max_iter=2, dropout=0.1, random_state=0,
                                 device="cuda")
    else:
        gpu = NitroCNNClassifier(architecture=[8, "M"], hidden_layer_sizes=(16,), max_iter=2, random_state=0,
                                 device="cuda")
    gpu.fit(X[:300], y[:300])
    expected = gpu.decision_function(X)
    state = gpu.__getstate__()
    assert all(type(layer.weight) is np.ndarray for layer in state["network_"].layers())
    assert gpu.network_.namespace() is cupy  # saving left the live estimator on the GPU

    data = pickle.dumps(gpu)
    loaded = _NoCuPyUnpickler(io.BytesIO(data)).load()  # the unpickled state holds NumPy arrays only
    assert loaded.network_.namespace() is cupy  # and goes back to the GPU where there is one
    assert all(type(layer.weight) is cupy.ndarray for layer in loaded.network_.layers())
    np.testing.assert_array_equal(loaded.decision_function(X), expected)
    assert weights_equal(loaded.weights_ + loaded.head_weights_, gpu.weights_ + gpu.head_weights_)
