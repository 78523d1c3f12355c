"""Integer export: the copied nitro_reader.py, run where sknitro cannot be imported, gives
the estimator's scores and labels; weights.npz holds integer arrays only."""

import ast
import datetime
import importlib.util
import json
import subprocess
import sys
import textwrap
import warnings
import zipfile

import numpy as np
import pytest
from sklearn.exceptions import NotFittedError

from sknitro import NitroCNNClassifier, NitroMLPClassifier, __version__
from sknitro.export import EXPORT_FORMAT, EXPORT_FORMAT_VERSION, READER_SOURCE, export_integer_model

# Runs in a fresh interpreter where sknitro (and scikit-learn) cannot be imported.
READER_RUN = textwrap.dedent("""
    import sys
    sys.modules["sknitro"] = None  # any "import sknitro..." now raises ImportError
    sys.modules["sklearn"] = None
    import importlib.util
    import numpy as np

    folder, data = sys.argv[1], sys.argv[2]
    spec = importlib.util.spec_from_file_location("nitro_reader", folder + "/nitro_reader.py")
    reader = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(reader)
    model = reader.load(folder)
    X = np.load(data)
    np.savez(folder + "/../out.npz", decision=model.decision_function(X), predict=model.predict(X),
             scores=model.scores(X))
    assert not [m for m in sys.modules if m.startswith(("sknitro.", "sklearn."))]
""")


def _images(X):
    return (X * 15).astype(np.uint8)  # digits 0..16 -> 0..240


def _fit(est, X, y):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning of the short fits
        return est.fit(X, y)


# Short fits (lr_inv=128, 1500 digits) that already give varied scores and labels.
MLP = dict(hidden_layer_sizes=(16,), lr_inv=128, max_iter=3, random_state=0)

CASES = {
    "mlp-uint8-images": lambda X, y: (NitroMLPClassifier(**MLP), _images(X), y),
    "mlp-float-features": lambda X, y: (NitroMLPClassifier(**{**MLP, "hidden_layer_sizes": (16, 16)}), X, y),
    # float32 features: the encoder's statistics and arithmetic are float32
    "mlp-float32-features": lambda X, y: (NitroMLPClassifier(**MLP), (X / 7).astype(np.float32), y),
    "mlp-integer-features": lambda X, y: (NitroMLPClassifier(**MLP, activation="pocket_tanh"),
                                          X.astype(np.int64), y),
    "mlp-string-labels": lambda X, y: (NitroMLPClassifier(**MLP), X, np.array(["zero", "one", "two"])[y % 3]),
    "mlp-binary-float-labels": lambda X, y: (NitroMLPClassifier(**MLP), X, (y % 2).astype(float)),
    "cnn-pooling": lambda X, y: (NitroCNNClassifier(architecture=(8, "M", 16, "M"), max_iter=6,
                                                    random_state=0), _images(X).reshape(-1, 1, 8, 8), y),
    # a dense block after the convolutions; odd sizes: the 2x2 max pools drop the last row
    # or column (floor mode: 7x9 -> 3x4 -> 1x2); dropout on the feature path; calibrated
    # scaling divisors (a deep signal in 3 epochs); float pixels
    "cnn-dense-odd-size": lambda X, y: (NitroCNNClassifier(architecture=(4, "M", 4, "M"),
                                                           hidden_layer_sizes=(16,), image_shape=(1, 7, 9),
                                                           dropout=0.1, scale_calibration=True,
                                                           lr_inv=512, max_iter=3,
                                                           random_state=0),
                                        X[:, :63], y),
}


@pytest.mark.parametrize("case", CASES)
def test_reader_reproduces_the_estimator_without_sknitro(case, digits, tmp_path):
    X, y = digits
    est, X, y = CASES[case](X, y)
    _fit(est, X[:1500], y[:1500])
    folder = export_integer_model(est, tmp_path / "model")
    np.save(tmp_path / "X.npy", X)

    subprocess.run([sys.executable, "-c", READER_RUN, str(folder), str(tmp_path / "X.npy")],
                   cwd=tmp_path, check=True)
    out = np.load(tmp_path / "out.npz", allow_pickle=False)

    expected_decision, expected_labels = est.decision_function(X), est.predict(X)
    assert out["decision"].dtype == expected_decision.dtype
    np.testing.assert_array_equal(out["decision"], expected_decision)
    assert out["predict"].dtype == expected_labels.dtype
    np.testing.assert_array_equal(out["predict"], expected_labels)
    assert out["scores"].dtype == np.int8 and out["scores"].shape == (len(X), len(est.classes_))
    # a model with varied integers, not a constant one
    assert len(np.unique(expected_decision)) > 10
    assert len(np.unique(expected_labels)) >= min(3, len(est.classes_))


def test_weights_are_integer_arrays_without_pickle(digits, tmp_path):
    X, y = digits
    est = _fit(NitroCNNClassifier(architecture=(8, "M", 16, "M"), hidden_layer_sizes=(16,), max_iter=1,
                                  random_state=0), _images(X[:300]).reshape(-1, 1, 8, 8), y[:300])
    folder = export_integer_model(est, tmp_path / "model")
    model = json.loads((folder / "model.json").read_text())
    with np.load(folder / "weights.npz", allow_pickle=False) as npz:
        arrays = {name: npz[name] for name in npz.files}
    assert all(a.dtype.kind == "i" for a in arrays.values())
    # the forward layers and the output layer only (no learning heads), in network order
    keys = [layer["weight"] for layer in model["layers"] if "weight" in layer]
    assert sorted(keys) == sorted(arrays)
    for key, weight in zip(keys, est.weights_):
        np.testing.assert_array_equal(arrays[key], weight)
        assert arrays[key].dtype == weight.dtype
    assert model["format"] == EXPORT_FORMAT and model["format_version"] == EXPORT_FORMAT_VERSION
    assert model["sknitro_version"] == __version__ and model["classes"] == list(range(10))
    assert [layer["type"] for layer in model["layers"]] == [
        "conv2d", "nitro_scale", "activation", "maxpool2d",
        "conv2d", "nitro_scale", "activation", "maxpool2d",
        "flatten", "linear", "nitro_scale", "activation",
        "linear", "nitro_scale"]
    conv = model["layers"][0]
    assert conv["shape"] == [8, 1, 3, 3] and conv["input_shape"] == [1, 8, 8]
    assert model["layers"][1]["divisor"] == 2**8 * 9  # 2**scale_bits * fan_in
    assert model["layers"][8]["input_shape"] == [16, 2, 2] and model["layers"][8]["output_shape"] == [64]
    tables = model["input"]["tables"]
    assert model["input"]["encoding"] == "uint8_lookup" and np.array_equal(tables, est.encoder_.lookup_table)
    relu = model["layers"][2]["table"]
    assert len(relu) == 256 and relu[128] == -36 and relu[128 + 100] == 100 - 36  # NITRO-ReLU, mu(4) = 36


def test_reader_file_is_standalone(digits, tmp_path):
    X, y = digits
    est = _fit(NitroMLPClassifier(hidden_layer_sizes=(8,), max_iter=1, random_state=0), X[:200], y[:200])
    folder = export_integer_model(est, tmp_path / "model")
    source = (folder / "nitro_reader.py").read_text()
    assert source == READER_SOURCE.read_text()
    imported = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add((node.module or "").split(".")[0])
    assert imported == {"json", "pathlib", "numpy"}


def test_export_into_an_existing_directory_overwrites(digits, tmp_path):
    X, y = digits
    first = _fit(NitroMLPClassifier(hidden_layer_sizes=(8,), max_iter=1, random_state=0), X[:200], y[:200])
    second = _fit(NitroMLPClassifier(hidden_layer_sizes=(12,), max_iter=1, random_state=1), X[:200], y[:200])
    export_integer_model(first, tmp_path)
    export_integer_model(second, tmp_path)
    model = json.loads((tmp_path / "model.json").read_text())
    assert model["layers"][0]["shape"] == [12, 64]


def test_export_errors(digits, tmp_path):
    X, y = digits
    with pytest.raises(NotFittedError):
        export_integer_model(NitroMLPClassifier(), tmp_path / "unfitted")
    with pytest.raises(TypeError, match="NitroMLPClassifier or NitroCNNClassifier"):
        export_integer_model(object(), tmp_path / "other")
    est = _fit(NitroMLPClassifier(hidden_layer_sizes=(8,), max_iter=1, random_state=0), X[:200], y[:200])
    (tmp_path / "a_file").write_text("")
    with pytest.raises(FileExistsError, match="not a directory"):
        export_integer_model(est, tmp_path / "a_file")
    # labels JSON cannot hold (fit only accepts ints and strings; set them afterwards)
    est.classes_ = np.array([datetime.date(2024, 1, d + 1) for d in range(10)], dtype=object)
    with pytest.raises(TypeError, match="cannot be stored in model.json"):
        export_integer_model(est, tmp_path / "dates")
    assert not (tmp_path / "dates").exists()  # nothing written on error


def _load_reader(folder):
    spec = importlib.util.spec_from_file_location("nitro_reader_checked", folder / "nitro_reader.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _edit_weights(folder, name, array):
    with np.load(folder / "weights.npz") as npz:
        arrays = {key: npz[key] for key in npz.files}
    arrays[name] = array
    np.savez(folder / "weights.npz", **arrays)


def _edit_layer(folder, kind, **changes):
    spec = json.loads((folder / "model.json").read_text())
    layer = next(layer for layer in spec["layers"] if layer["type"] == kind)
    layer.update(changes)
    (folder / "model.json").write_text(json.dumps(spec))


TAMPERED_EXPORTS = {
    "float weights": lambda f: _edit_weights(f, "output.weight", np.zeros((10, 8))),
    "int64 beyond int32": lambda f: _edit_weights(f, "output.weight", np.full((10, 8), 2**40)),
    "3 output rows for 10 classes": lambda f: _edit_weights(f, "output.weight", np.zeros((3, 8), np.int32)),
    "a divisor of 0": lambda f: _edit_layer(f, "nitro_scale", divisor=0),
    "a divisor of -1": lambda f: _edit_layer(f, "nitro_scale", divisor=-1),
    "padding of 10**5": lambda f: _edit_layer(f, "conv2d", padding=10**5),
    "a short activation table": lambda f: _edit_layer(f, "activation", table=[0] * 10),
    "a missing array": lambda f: _edit_layer(f, "conv2d", weight="nowhere"),
    "an unknown layer": lambda f: _edit_layer(f, "maxpool2d", type="unpool"),
    # an activation reads int8 (its table has 256 entries): not a product
    "an activation on a product": lambda f: _edit_spec(f, lambda spec: spec["layers"].remove(
        next(layer for layer in spec["layers"] if layer["type"] == "nitro_scale"))),
    "products for scores": lambda f: _edit_spec(f, lambda spec: spec["layers"].pop()),
    "no input": lambda f: _edit_spec(f, lambda spec: spec.pop("input")),
    "a layer that is a number": lambda f: _edit_spec(f, lambda spec: spec["layers"].append(1)),
    "a shape that is a number": lambda f: _edit_layer(f, "linear", shape=8),
    "classes of no dtype": lambda f: _edit_spec(f, lambda spec: spec.update(classes_dtype="nonsense")),
    "a truncated weights.npz": lambda f: _truncate(f / "weights.npz", 300),
    "a damaged array header": lambda f: _damage_npy_header(f / "weights.npz"),
}


def _truncate(path, size):
    path.write_bytes(path.read_bytes()[:size])


def _edit_spec(folder, edit):
    spec = json.loads((folder / "model.json").read_text())
    edit(spec)
    (folder / "model.json").write_text(json.dumps(spec))


def _damage_npy_header(path):
    # the archive stays valid; one array's header (a Python literal NumPy parses) is cut short
    with zipfile.ZipFile(path) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    name = next(iter(members))
    header_length = int.from_bytes(members[name][8:10], "little")
    members[name] = members[name][:10] + b"{'descr': '<i4', 'fortran_order': False, 'shape': (3," \
        + b" " * (header_length - 55) + b"\n" + members[name][10 + header_length:]
    with zipfile.ZipFile(path, "w") as archive:
        for member, data in members.items():
            archive.writestr(member, data)


@pytest.mark.parametrize("case", TAMPERED_EXPORTS)
def test_the_reader_checks_the_files_before_computing(case, digits, tmp_path):
    X, y = digits
    est = _fit(NitroCNNClassifier(architecture=(4, "M"), hidden_layer_sizes=(8,), max_iter=1, random_state=0),
               _images(X[:300]).reshape(-1, 1, 8, 8), y[:300])
    folder = export_integer_model(est, tmp_path / "model")
    reader = _load_reader(folder)
    reader.load(folder)  # the untouched export loads
    TAMPERED_EXPORTS[case](folder)
    with pytest.raises(ValueError, match="invalid exported model"):
        reader.load(folder)


def test_the_reader_encodes_integer_features_as_the_estimator_does(tmp_path):
    rng = np.random.default_rng(0)
    X, y = rng.integers(-1000, 1000, size=(300, 5)), rng.integers(0, 3, size=300)
    est = _fit(NitroMLPClassifier(hidden_layer_sizes=(8,), max_iter=2, random_state=0), X, y)
    folder = export_integer_model(est, tmp_path / "model")
    model = _load_reader(folder).load(folder)
    for ok in (X, X.astype(np.float64), X < 0):
        np.testing.assert_array_equal(model.decision_function(ok), est.decision_function(ok))
    # what the estimator refuses too
    for bad in (X + 0.5, np.full((1, 5), 2**60), np.full((1, 5), -(2**55), np.int64)):
        with pytest.raises(ValueError):
            est.predict(bad)
        with pytest.raises(ValueError, match="whole numbers|2\\*\\*55"):
            model.predict(bad)
    with pytest.raises(TypeError, match="integer features"):
        model.predict(X.astype(str))
    # a multiplier past the estimator's largest feature_scale: (x - mean) * multiplier could wrap int64
    _edit_spec(folder, lambda spec: spec["input"].update(multiplier=64))
    with pytest.raises(ValueError, match="input.multiplier"):
        _load_reader(folder).load(folder)
