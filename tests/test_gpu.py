"""The CuPy path (device="cuda"): same code, same integers as on the CPU.

Every test runs twice: on CuPy and a CUDA GPU where both are present (skipped with the
reason elsewhere), and on the CuPy stand-in of ``strict_cupy`` everywhere, which runs the
same code on NumPy while refusing every use of a device array that CuPy refuses.
"""

import io
import pickle
import sys

import numpy as np
import pytest
from conftest import weights_equal

import strict_cupy
from sknitro import NitroCNNClassifier, NitroMLPClassifier
from sknitro.persistence import trusted_types


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


@pytest.fixture(params=[pytest.param("gpu", marks=pytest.mark.gpu), "stand-in"])
def cupy(request, monkeypatch):
    """The module ``device="cuda"`` runs on: CuPy on a GPU, or the strict stand-in."""
    if request.param == "gpu":
        reason = _gpu_reason()
        if reason is not None:
            pytest.skip(reason)
        import cupy
        return cupy
    stand_in = strict_cupy.module()
    monkeypatch.setitem(sys.modules, "cupy", stand_in)
    return stand_in


MLP, CNN = NitroMLPClassifier, NitroCNNClassifier
CONFIGURATIONS = {
    "mlp, dropout": (MLP, dict(hidden_layer_sizes=(32, 16), max_iter=15, dropout=0.1)),
    "mlp, early stopping, plateaus": (MLP, dict(hidden_layer_sizes=(32,), max_iter=25, early_stopping=True,
                                                n_iter_no_change=5, lr_plateau_patience=3)),
    "cnn, augment": (CNN, dict(architecture=[8, "M", 8], hidden_layer_sizes=(32,), max_iter=10, augment=True,
                               lr_inv=128)),
    "cnn, dropouts": (CNN, dict(architecture=[8, "M", 8], hidden_layer_sizes=(32,), max_iter=15,
                                conv_dropout=0.1, dropout=0.3)),
    "cnn, calibrated, average heads": (CNN, dict(architecture=[8, "M", 8, "M"], max_iter=2,
                                                 scale_calibration=True, head_pooling="avg")),
}


def _same_weights(a, b):
    return weights_equal(a.weights_ + a.head_weights_, b.weights_ + b.head_weights_)


@pytest.mark.parametrize("configuration", CONFIGURATIONS)
def test_cuda_training_is_bit_identical_to_cpu(configuration, cupy, digits):
    cls, params = CONFIGURATIONS[configuration]
    X, y = digits
    cpu = cls(**params, random_state=0).fit(X[:500], y[:500])
    gpu = cls(**params, random_state=0, device="cuda").fit(X[:500], y[:500])
    assert all(type(layer.weight) is cupy.ndarray for layer in gpu.network_.layers())
    assert _same_weights(cpu, gpu) and gpu.n_iter_ == cpu.n_iter_
    np.testing.assert_array_equal(cpu.decision_function(X), gpu.decision_function(X))
    np.testing.assert_array_equal(cpu.predict_proba(X), gpu.predict_proba(X))
    assert gpu.score(X, y) == cpu.score(X, y) > 0.5  # it learned (10 classes)
    cpu.partial_fit(X[500:700], y[500:700])
    gpu.partial_fit(X[500:700], y[500:700])
    assert _same_weights(cpu, gpu)


class _NoCuPyUnpickler(pickle.Unpickler):
    """Refuses every CuPy class: loading succeeds only if the pickle holds no CuPy object."""

    def find_class(self, module, name):
        if module.split(".")[0] == "cupy":
            raise pickle.UnpicklingError(f"the pickle holds a CuPy object: {module}.{name}")
        return super().find_class(module, name)


@pytest.mark.parametrize("make", ["mlp", "cnn"])
@pytest.mark.parametrize("method", ["pickle", "skops"])
def test_cuda_model_saves_numpy_arrays_and_loads_back_on_the_gpu(make, method, cupy, digits):
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

    if method == "pickle":  # the pickle holds NumPy arrays only
        loaded = _NoCuPyUnpickler(io.BytesIO(pickle.dumps(gpu))).load()
    else:
        sio = pytest.importorskip("skops.io")  # a test extra, which a bare GPU machine may lack
        loaded = sio.loads(sio.dumps(gpu), trusted=trusted_types())
    assert loaded.network_.namespace() is cupy  # and goes back to the GPU where there is one
    assert all(type(layer.weight) is cupy.ndarray for layer in loaded.network_.layers())
    np.testing.assert_array_equal(loaded.decision_function(X), expected)
    assert weights_equal(loaded.weights_ + loaded.head_weights_, gpu.weights_ + gpu.head_weights_)


def test_cuda_model_exports_the_cpu_models_integer_files(cupy, digits, tmp_path):
    from sknitro.export import export_c, export_integer_model

    X, y = digits
    params = dict(architecture=[8, "M"], hidden_layer_sizes=(16,), max_iter=1, random_state=0)
    cpu = NitroCNNClassifier(**params).fit(X[:300], y[:300])
    gpu = NitroCNNClassifier(**params, device="cuda").fit(X[:300], y[:300])
    for name, model in [("cpu", cpu), ("gpu", gpu)]:
        export_integer_model(model, tmp_path / name / "model.json")
        export_c(model, tmp_path / name / "c")
    # every file but the C folder's copy of the estimator, whose device parameter differs
    exported = sorted(p.relative_to(tmp_path / "cpu") for p in (tmp_path / "cpu").rglob("*")
                      if p.is_file() and p.suffix != ".joblib")
    assert len(exported) > 2
    for path in exported:
        assert (tmp_path / "gpu" / path).read_bytes() == (tmp_path / "cpu" / path).read_bytes(), path


def test_the_stand_in_refuses_what_cupy_refuses():
    """The stand-in's checks are what makes its runs evidence: each must hold."""
    from sknitro.nn.functional import tdiv

    cupy = strict_cupy.module()
    device, host = cupy.asarray(np.arange(6, dtype=np.int32)), np.arange(1, 7, dtype=np.int32)
    refusals = [lambda: np.asarray(device), lambda: memoryview(device), lambda: device + host,
                lambda: host * device, lambda: np.concatenate([device, host]),
                lambda: cupy.take(host, device), lambda: tdiv(device, host)]
    for refused in refusals:
        with pytest.raises(TypeError):
            refused()
    assert not isinstance(device, np.ndarray)
    assert type(device.max()) is cupy.ndarray and int(device.max()) == 5  # reductions stay on the device
    np.testing.assert_array_equal(cupy.asnumpy(tdiv(-device, 4)), [0, 0, 0, 0, -1, -1])
    np.testing.assert_array_equal(device[np.array([5, 0])].get(), [5, 0])  # host indices are copied over
