"""The integer-only C export: the network graph it reads, and the exported programs built and run
on this machine and, under QEMU, on an Arm Cortex-M3 without FPU -- identical predictions,
scores and trained weights to the estimator's.

The host tests need a C compiler and make; the Cortex-M3 tests need arm-none-eabi-gcc,
picolibc and qemu-system-arm (``.ci/run`` installs them with apt).
"""

import copy
import shutil
import subprocess
import warnings
from pathlib import Path

import numpy as np
import pytest
from sklearn.exceptions import NotFittedError

from sknitro import NitroCNNClassifier, NitroMLPClassifier
from sknitro.datasets import fashion_mnist_available, load_fashion_mnist
from sknitro.export import encode_for_c, export_c, load_c_weights
from sknitro.nn.graph import Block, Conv3x3, Pool

HOST_TOOLS = shutil.which("make") and shutil.which("cc")


def _picolibc() -> bool:
    if not shutil.which("arm-none-eabi-gcc"):
        return False
    found = subprocess.run(["arm-none-eabi-gcc", "-print-file-name=picolibc.specs"], capture_output=True, text=True)
    return Path(found.stdout.strip()).is_absolute()  # else gcc echoes the bare name


MCU_TOOLS = all(shutil.which(tool) for tool in ("arm-none-eabi-nm", "qemu-system-arm")) and _picolibc()
needs_host = pytest.mark.skipif(not HOST_TOOLS, reason="needs make and a C compiler (cc)")
needs_mcu = pytest.mark.skipif(
    not (HOST_TOOLS and MCU_TOOLS),
    reason="needs arm-none-eabi-gcc, picolibc and qemu-system-arm "
           "(apt-get install gcc-arm-none-eabi picolibc-arm-none-eabi qemu-system-arm; CI installs them)")
needs_fashion = pytest.mark.skipif(not fashion_mnist_available(),
                                   reason="Fashion-MNIST not installed: apt-get install dataset-fashion-mnist")


def quietly_fit(model, X, y):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return model.fit(X, y)


def digit_images(digits):
    X, y = digits
    return (X * 16).clip(0, 255).astype(np.uint8), y


def estimator_scores(model, X):
    return model.network_.predict_scores(model.encoder_.transform(model._validate_X(X, reset=False)))


# ---- the graph: the engine's description of what it computes --------------------------------


def tdiv(z, d):
    return np.sign(z) * (np.abs(z) // d)


def run_graph(graph, x):
    """Inference from the graph alone, in plain NumPy (no engine code): the test that the
    description is complete."""
    n, x = x.shape[0], x.astype(np.int64)
    for stage in graph.path:
        if isinstance(stage, Block):
            if isinstance(stage.layer, Conv3x3):
                _, _, h, w = x.shape
                padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
                z = sum(np.einsum("fc,nchw->nfhw", stage.layer.weight[:, :, u, v].astype(np.int64),
                                  padded[:, :, u:u + h, v:v + w]) for u in range(3) for v in range(3))
            else:
                z = x.reshape(n, -1) @ stage.layer.weight.T.astype(np.int64)
            s = np.clip(tdiv(z, stage.scale), -127, 127)
            x = stage.activation.forward_table[s + 128].astype(np.int64)
        elif isinstance(stage, Pool):
            (kh, kw), (c, oh, ow) = stage.window, stage.output_shape
            x = x[:, :, :oh * kh, :ow * kw].reshape(n, c, oh, kh, ow, kw).max(axis=(3, 5))
        # dropout: the identity at inference
    z = x.reshape(n, -1) @ graph.output.dense.weight.T.astype(np.int64)
    return np.clip(tdiv(z, graph.output.scale), -127, 127)


def rgb_images(digits, n=400):
    X, y = digit_images(digits)
    images = X[:n].reshape(n, 1, 8, 8)
    return np.concatenate([images, 255 - images, images // 2], axis=1), y[:n]


@pytest.mark.parametrize("case", ["mlp", "mlp_dropout", "cnn", "cnn_rgb_dense"])
def test_graph_computes_what_forward_computes(case, digits):
    X, y = digit_images(digits)
    if case == "mlp":
        model = NitroMLPClassifier(hidden_layer_sizes=(40, 20), max_iter=2, random_state=0)
    elif case == "mlp_dropout":
        model = NitroMLPClassifier(hidden_layer_sizes=(40,), dropout=0.2, max_iter=2, random_state=0)
    elif case == "cnn":
        model = NitroCNNClassifier(architecture="compact", max_iter=1, random_state=0)
    else:
        X, y = rgb_images(digits)
        model = NitroCNNClassifier(architecture=(8, "M", 16), hidden_layer_sizes=(24,), conv_dropout=0.1,
                                   head_pooling="avg", max_iter=1, random_state=0)
    quietly_fit(model, X[:400], y[:400])
    graph = model.network_.graph()
    encoded = model.encoder_.transform(model._validate_X(X[:300], reset=False))
    scores = run_graph(graph, encoded)
    assert np.array_equal(scores, model.network_.forward(encoded))
    assert np.array_equal(scores.argmax(axis=1), np.searchsorted(model.classes_, model.predict(X[:300])))


# ---- host builds ------------------------------------------------------------------------------


def build(model, folder, target="all"):
    export_c(model, folder)
    result = subprocess.run(["make", "-s", target], cwd=folder, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    return folder


def run(folder, *command, check=True, timeout=600):
    result = subprocess.run(list(command), cwd=folder, capture_output=True, text=True, timeout=timeout)
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


def printed_rows(output):
    """The integer lines a predict program printed (its '#' lines are comments)."""
    return np.array([[int(v) for v in line.split()] for line in output.splitlines()
                     if line and not line.startswith("#")])


def host_predictions(model, X, folder):
    encode_for_c(model, X, folder / "input.bin")
    return printed_rows(run(folder, "./predict", "--scores").stdout)


def assert_predicts_like(model, X, rows):
    scores = estimator_scores(model, X)
    assert np.array_equal(rows[:, 0], scores.argmax(axis=1))
    if rows.shape[1] > 1:
        assert np.array_equal(rows[:, 1:], scores)
    assert np.array_equal(model.classes_[rows[:, 0]], model.predict(X))


def models(digits):
    """Fitted models covering every layer and encoder the estimators produce."""
    X, y = digit_images(digits)
    Xf, _ = digits
    Xrgb, yrgb = rgb_images(digits)
    return {
        "digits_mlp": (quietly_fit(NitroMLPClassifier(hidden_layer_sizes=(64, 32), max_iter=5, random_state=0,
                                                      shuffle=False), X[:1000], y[:1000]), X),
        "float_features": (quietly_fit(NitroMLPClassifier(hidden_layer_sizes=(32,), activation="pocket_tanh",
                                                          max_iter=3, random_state=0, shuffle=False),
                                       Xf[:1000] * 0.37, y[:1000]), Xf * 0.37),
        "integer_features": (quietly_fit(NitroMLPClassifier(hidden_layer_sizes=(32,), max_iter=3, random_state=1,
                                                            shuffle=False, dropout=0.1),
                                         Xf[:1000].astype(np.int64) * 1000 - 7, y[:1000]),
                             Xf.astype(np.int64) * 1000 - 7),
        # two classes with string labels, no hidden layer (the output layer reads the input)
        "binary_strings": (quietly_fit(NitroMLPClassifier(hidden_layer_sizes=(), max_iter=3, random_state=0,
                                                          shuffle=False),
                                       X[:1000], np.where(y[:1000] % 2 == 0, "even", "odd")), X),
        "compact_cnn": (quietly_fit(NitroCNNClassifier(architecture="compact", max_iter=1, random_state=0,
                                                       shuffle=False, batch_size=16), X[:600], y[:600]), X),
        # three channels, a dense block after the convolutions (trained twice per step), average
        # head pooling, dropout on the feature path, a leaky activation
        "rgb_cnn": (quietly_fit(NitroCNNClassifier(architecture=(8, "M", 16), hidden_layer_sizes=(24,),
                                                   head_pooling="avg", head_dim=128, activation="pocket_leaky_relu",
                                                   conv_dropout=0.1, max_iter=1, random_state=0, shuffle=False,
                                                   batch_size=16), Xrgb[:300], yrgb[:300]),
                    rgb_images(digits, 1797)[0]),
    }


@pytest.fixture(scope="module")
def fitted(digits):
    return models(digits)


@needs_host
@pytest.mark.parametrize("name", ["digits_mlp", "float_features", "integer_features", "binary_strings",
                                  "compact_cnn", "rgb_cnn"])
def test_host_program_predicts_the_estimators_classes_and_scores(name, fitted, tmp_path):
    model, X = fitted[name]
    folder = build(model, tmp_path)
    rows = host_predictions(model, X[1000:1400], folder)
    assert rows.shape == (400, 1 + len(model.classes_))
    assert_predicts_like(model, X[1000:1400], rows)
    assert run(folder, "./predict").stdout.split() == [str(v) for v in rows[:, 0]]  # without --scores


def train_in_c(model, X, y, folder, *command):
    encode_for_c(model, X, folder / "train.bin", y)
    run(folder, *command)
    return load_c_weights(folder)


def assert_same_weights(a, b):
    for name in ("weights_", "head_weights_"):
        left, right = getattr(a, name), getattr(b, name)
        assert len(left) == len(right) and all(np.array_equal(u, v) for u, v in zip(left, right)), name


@needs_host
@pytest.mark.parametrize("name", ["digits_mlp", "float_features", "compact_cnn", "rgb_cnn_without_dropout"])
def test_host_training_gives_partial_fits_weights(name, fitted, digits, tmp_path):
    _, y = digits
    model, X = fitted[name.replace("_without_dropout", "")]
    model = copy.deepcopy(model)  # partial_fit below changes it
    if name == "rgb_cnn_without_dropout":  # dropout's masks come from NumPy in Python, from the seed in C
        model = quietly_fit(NitroCNNClassifier(**{**model.get_params(), "conv_dropout": 0.0}), X[:300], y[:300])
    batch = model._batch_size(3 * 16)
    n = 3 * batch - 5  # three batches, the last one short
    folder = build(model, tmp_path)
    trained = train_in_c(model, X[1200:1200 + n], y[1200:1200 + n], folder, "./train")
    before = [w.copy() for w in model.weights_]
    model.partial_fit(X[1200:1200 + n], y[1200:1200 + n])
    assert any(not np.array_equal(u, v) for u, v in zip(before, model.weights_))  # the step changed something
    assert_same_weights(trained, model)
    # and the trained C model predicts as the estimator it became
    assert_predicts_like(trained, X[:200], host_predictions(trained, X[:200], build(trained, tmp_path / "again")))


@needs_host
def test_host_training_with_dropout_is_reproducible_from_its_seed(fitted, digits, tmp_path):
    _, y = digits
    model, X = fitted["integer_features"]  # dropout 0.1 after its hidden block
    folder = build(model, tmp_path)
    first = train_in_c(model, X[1000:1100], y[1000:1100], folder, "./train", "train.bin", "weights.bin", "7")
    again = train_in_c(model, X[1000:1100], y[1000:1100], folder, "./train", "train.bin", "weights.bin", "7")
    other = train_in_c(model, X[1000:1100], y[1000:1100], folder, "./train", "train.bin", "weights.bin", "8")
    assert_same_weights(first, again)
    # dropout sits between the hidden block and the output layer: the output layer sees its masks
    assert not np.array_equal(first.weights_[-1], other.weights_[-1])
    assert not np.array_equal(first.weights_[-1], model.weights_[-1])


@needs_host
def test_programs_reject_malformed_files(fitted, digits, tmp_path):
    model, X = fitted["digits_mlp"]
    folder = build(model, tmp_path)
    (folder / "input.bin").write_bytes(bytes(64 * 2 + 5))
    result = run(folder, "./predict", check=False)
    assert result.returncode == 1 and "partial sample" in result.stderr
    (folder / "train.bin").write_bytes(bytes(65 * 3 + 1))
    result = run(folder, "./train", check=False)
    assert result.returncode == 1 and "multiple of" in result.stderr
    (folder / "train.bin").write_bytes(bytes(64 * 2) + bytes([3, 10]))  # class index 10 of 10 classes
    result = run(folder, "./train", check=False)
    assert result.returncode == 1 and "class index" in result.stderr
    assert not (folder / "weights.bin").exists()
    result = run(folder, "./predict", "missing.bin", check=False)
    assert result.returncode == 1 and "cannot open missing.bin" in result.stderr


@needs_host
def test_host_build_makes_any_float_operation_a_compile_error(fitted, tmp_path):
    model, _ = fitted["digits_mlp"]
    folder = build(model, tmp_path)
    with open(folder / "model.c", "a") as f:
        f.write("int nitro_halve(int v);\nint nitro_halve(int v) { double h = v * 0.5; return (int)h; }\n")
    result = subprocess.run(["make", "-s", "predict"], cwd=folder, capture_output=True, text=True)
    # gcc on x86-64: "SSE register return with SSE disabled"; on aarch64 it names the option
    assert result.returncode != 0 and ("SSE disabled" in result.stderr or "general-regs-only" in result.stderr)


def test_export_c_errors(fitted, digits, tmp_path):
    model, X = fitted["digits_mlp"]
    with pytest.raises(NotFittedError):
        export_c(NitroMLPClassifier(), tmp_path / "a")
    with pytest.raises(TypeError, match="export_c expects"):
        export_c(object(), tmp_path / "b")
    (tmp_path / "file").write_text("")
    with pytest.raises(FileExistsError):
        export_c(model, tmp_path / "file")
    with pytest.raises(ValueError, match="uint8"):
        encode_for_c(model, X[:5].astype(np.float64), tmp_path / "x.bin")
    with pytest.raises(ValueError, match="not in classes_"):
        encode_for_c(model, X[:3], tmp_path / "x.bin", y=[1, 2, 11])
    with pytest.raises(ValueError, match="one label per sample"):
        encode_for_c(model, X[:3], tmp_path / "x.bin", y=[1, 2])
    export_c(model, tmp_path / "c")
    (tmp_path / "c" / "weights.bin").write_bytes(bytes(12))
    with pytest.raises(ValueError, match="holds 12 bytes"):
        load_c_weights(tmp_path / "c")


def test_train_bin_layout(fitted, digits, tmp_path):
    model, X = fitted["compact_cnn"]
    _, y = digits
    data = encode_for_c(model, X[:5], tmp_path / "t.bin", y[:5]).read_bytes()
    assert data == X[:5].reshape(5, -1).tobytes() + np.searchsorted(model.classes_, y[:5]).astype(np.uint8).tobytes()


# ---- Fashion-MNIST ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fashion_models():
    X_train, y_train, X_test, y_test = load_fashion_mnist()
    mlp = quietly_fit(NitroMLPClassifier(hidden_layer_sizes=(200, 100, 50), max_iter=1, random_state=0,
                                         shuffle=False, early_stopping=False),
                      X_train[:10000].reshape(10000, -1), y_train[:10000])
    cnn = quietly_fit(NitroCNNClassifier(architecture="compact", max_iter=1, random_state=0, shuffle=False,
                                         early_stopping=False, batch_size=16), X_train[:2000], y_train[:2000])
    return {"mlp": (mlp, X_test.reshape(10000, -1), y_test), "cnn": (cnn, X_test, y_test)}


@needs_host
@needs_fashion
@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_host_program_on_fashion_mnist(name, fashion_models, tmp_path):
    model, X, y = fashion_models[name]
    folder = build(model, tmp_path)
    rows = host_predictions(model, X[:2000], folder)
    assert_predicts_like(model, X[:2000], rows)
    accuracy = (model.classes_[rows[:, 0]] == y[:2000]).mean()
    assert accuracy >= {"mlp": 0.7, "cnn": 0.45}[name], accuracy  # models that learned (chance: 0.10)


# ---- Cortex-M3 under QEMU ---------------------------------------------------------------------


def mcu_predictions(model, X, folder):
    encode_for_c(model, X, folder / "input.bin")
    output = run(folder, "make", "-s", "run-mcu", timeout=900).stdout
    predict_output = output.split("trained on")[0]
    instructions = [line for line in predict_output.splitlines() if line.startswith("# instructions")]
    assert len(instructions) == 1 and int(instructions[0].split(": ")[1]) > 0
    return printed_rows(predict_output)[:, 0]


@needs_mcu
@pytest.mark.parametrize("name", ["digits_mlp", "compact_cnn", "fashion_mlp", "fashion_cnn"])
def test_cortex_m3_predicts_and_trains_like_the_estimator(name, fitted, digits, tmp_path, request):
    if name.startswith("fashion"):
        if not fashion_mnist_available():
            pytest.skip("Fashion-MNIST not installed: apt-get install dataset-fashion-mnist")
        model, X, y = request.getfixturevalue("fashion_models")[name.split("_")[1]]
    else:
        (model, X), (_, y) = fitted[name], digits
    model = copy.deepcopy(model)  # partial_fit below changes it
    folder = build(model, tmp_path, "mcu")
    batch = model._batch_size(64)
    encode_for_c(model, X[1000:1000 + batch], folder / "train.bin", y[1000:1000 + batch])  # one batch
    predicted = mcu_predictions(model, X[:200], folder)  # runs predict.elf, then train.elf
    assert np.array_equal(predicted, estimator_scores(model, X[:200]).argmax(axis=1))
    trained = load_c_weights(folder)
    model.partial_fit(X[1000:1000 + batch], y[1000:1000 + batch])
    assert_same_weights(trained, model)


@needs_mcu
def test_cortex_m3_build_refuses_soft_float(fitted, tmp_path):
    model, _ = fitted["digits_mlp"]
    export_c(model, tmp_path)
    source = (tmp_path / "predict.c").read_text()
    marker = "    FILE *file = fopen(path, \"rb\");"
    assert marker in source
    (tmp_path / "predict.c").write_text(source.replace(
        marker, "    volatile double half = 0.5;\n    if ((int)(half * argc) == 3) return 3;\n" + marker))
    result = subprocess.run(["make", "-s", "predict.elf"], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode != 0 and "soft-float helpers" in result.stdout + result.stderr
    assert not (tmp_path / "predict.elf").exists()


@needs_mcu
def test_round_trip_through_the_cortex_m3(digits, tmp_path):
    """Python fit -> C export -> one epoch of training on the device on 300 samples -> weights
    read back -> Python's predict equals the device's, and the weights partial_fit's."""
    X, y = digits
    model = quietly_fit(NitroMLPClassifier(random_state=0, shuffle=False), X[:1000], y[:1000])
    folder = build(model, tmp_path / "exported", "mcu")
    encode_for_c(model, X[:1], folder / "input.bin")
    encode_for_c(model, X[1000:1300], folder / "train.bin", y[1000:1300])
    assert "trained on 300 samples" in run(folder, "make", "-s", "run-mcu").stdout
    trained = load_c_weights(folder)
    again = build(trained, tmp_path / "trained", "mcu")  # the device's weights, for predict.elf
    encode_for_c(trained, X[1500:], again / "train.bin", y[1500:])
    device = trained.classes_[mcu_predictions(trained, X[1500:], again)]
    assert np.array_equal(device, trained.predict(X[1500:]))
    assert (device == y[1500:]).mean() >= 0.85
    model.partial_fit(X[1000:1300], y[1000:1300])
    assert_same_weights(trained, model)


@needs_host
def test_training_stops_where_a_weight_would_leave_int32(fitted, digits, tmp_path):
    model, X = fitted["digits_mlp"]
    _, y = digits
    model = copy.deepcopy(model)
    weights = model.network_.get_weights()
    weights[-1][:] = 2**31 - 1  # the output layer at the int32 limit: a step up passes it
    model.network_.set_weights(weights)
    model.network_.head_decay_inv = 0  # (a decay would pull every weight back first)
    folder = build(model, tmp_path)
    encode_for_c(model, X[:64], folder / "train.bin", y[:64])
    result = run(folder, "./train", check=False)
    assert result.returncode == 1 and "leave int32" in result.stderr
    assert not (folder / "weights.bin").exists()
    with pytest.raises(OverflowError):  # Python refuses the same step
        model.partial_fit(X[:64], y[:64])


def test_networks_the_runtime_cannot_run_exactly_are_refused():
    from sknitro._c_model import MAX_CLASSES, MAX_FAN_IN, check_exportable
    from sknitro.nn.graph import Dense, Head, NetworkGraph

    def graph(classes, features):
        output = Head(None, Dense(np.zeros((classes, features), dtype=np.int32)), 256 * features)
        return NetworkGraph((features,), (), output, 640, 0, 0)

    check_exportable(graph(MAX_CLASSES, 8))
    with pytest.raises(ValueError, match="up to 256 classes"):
        check_exportable(graph(MAX_CLASSES + 1, 8))
    with pytest.raises(ValueError, match="int64 sums are exact"):
        check_exportable(graph(2, MAX_FAN_IN + 1))
