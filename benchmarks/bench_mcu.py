"""Benchmark: exported models on an Arm Cortex-M3 without FPU (QEMU mps2-an385): footprint,
instructions, and the round trip Python -> C training on the device -> Python.

    python benchmarks/bench_mcu.py [--predictions 200]

For the digits MLP (scikit-learn's digits, default ``NitroMLPClassifier``), the published
Fashion-MNIST MLP (784-200-100-50-10, 5 epochs) and the compact CNN (conv32-pool-conv64-pool,
1 epoch on Fashion-MNIST): ``sknitro.export.export_c``, ``make mcu``, then

- flash (text + data) and static RAM (data + bss, less the 64 KiB stack that ``mcu.c``
  reserves) of ``predict.elf`` and ``train.elf``, from ``arm-none-eabi-size``;
- the instructions QEMU executed per prediction and per training sample (``-icount
  shift=0`` and SysTick, see the exported ``mcu.c``): the closest figure to time on a
  device this machine gives (a Cortex-M3 runs about one instruction per cycle);
- predictions of ``--predictions`` test samples on the emulated device against the
  estimator's (identical), their accuracy, and one training batch against ``partial_fit``;
- the round trip on the digits MLP: one epoch of training on the device on 300 samples,
  the weights read back with ``load_c_weights``, Python's ``predict`` against the device's.

Needs gcc-arm-none-eabi, picolibc-arm-none-eabi and qemu-system-arm (apt).
Results: benchmarks/results/mcu.{json,md}.
"""

from __future__ import annotations

import argparse
import copy
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import fit_quietly, machine_info, machine_line, md_table, write_json, write_text
from sklearn.datasets import load_digits

from sknitro import NitroCNNClassifier, NitroMLPClassifier
from sknitro.datasets import load_fashion_mnist
from sknitro.export import encode_for_c, export_c, load_c_weights

STACK_BYTES = 0x10000  # mcu.c's reservation, part of the bss that arm-none-eabi-size reports


def fit(model, X, y):
    fit_quietly(model, X, y)
    return model


def make(folder: Path, *targets: str) -> str:
    result = subprocess.run(["make", "-s", *targets], cwd=folder, capture_output=True, text=True, timeout=3600)
    if result.returncode != 0:
        raise RuntimeError(result.stdout + result.stderr)
    return result.stdout


def sizes(folder: Path) -> dict:
    """Flash and static RAM of each ELF: text + data, and data + bss less the stack."""
    out = {}
    for line in make(folder, "size-mcu").splitlines()[1:]:
        text, data, bss, *_, name = line.split()
        out[name.removesuffix(".elf")] = {"flash": int(text) + int(data), "ram": int(data) + int(bss) - STACK_BYTES}
    return out


def comment(output: str, key: str) -> int:
    return int(next(line for line in output.splitlines() if line.startswith(f"# {key}")).split(": ")[1])


def device_run(model, X_predict, X_train, y_train, folder: Path) -> dict:
    """make run-mcu: predict.elf on X_predict, then train.elf on (X_train, y_train)."""
    encode_for_c(model, X_predict, folder / "input.bin")
    encode_for_c(model, X_train, folder / "train.bin", y_train)
    started = time.perf_counter()
    output = make(folder, "run-mcu")
    predict_output, train_output = output.split("trained on")
    labels = np.array([int(line) for line in predict_output.splitlines() if line and not line.startswith("#")])
    return {"labels": labels, "seconds": time.perf_counter() - started,
            "instructions_per_prediction": comment(predict_output, "instructions per prediction"),
            "instructions_per_training_sample": comment(train_output, "instructions per training sample")}


def same_weights(a, b) -> bool:
    return all(np.array_equal(u, v) for u, v in zip(a.weights_ + a.head_weights_, b.weights_ + b.head_weights_))


def models() -> dict:
    X, y = load_digits(return_X_y=True)
    X_train, y_train, X_test, y_test = load_fashion_mnist()
    flat_train, flat_test = X_train.reshape(60000, -1), X_test.reshape(10000, -1)
    published = dict(hidden_layer_sizes=(200, 100, 50), lr_amp=640, fwd_decay_inv=10000, head_decay_inv=8000,
                     target_value=32, batch_size=64, lr_inv=256)
    return {
        "digits MLP": (NitroMLPClassifier(random_state=0, shuffle=False), X[:1500], y[:1500], X[1500:], y[1500:]),
        "Fashion-MNIST MLP 784-200-100-50-10": (
            NitroMLPClassifier(**published, max_iter=5, early_stopping=False, random_state=0, shuffle=False),
            flat_train, y_train, flat_test, y_test),
        "compact CNN (Fashion-MNIST)": (
            NitroCNNClassifier(architecture="compact", max_iter=1, early_stopping=False, random_state=0,
                               shuffle=False), X_train, y_train, X_test, y_test),
    }


def run(args: argparse.Namespace) -> None:
    results, rows = [], []
    for name, (model, X_train, y_train, X_test, y_test) in models().items():
        started = time.perf_counter()
        fit(model, X_train, y_train)
        print(f"{name}: fitted in {time.perf_counter() - started:.0f} s", flush=True)
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            export_c(model, folder)
            make(folder, "mcu")
            footprint = sizes(folder)
            batch = model._batch_size(len(X_train))
            n = min(args.predictions, len(X_test))
            device = device_run(model, X_test[:n], X_train[:batch], y_train[:batch], folder)
            expected = model.predict(X_test[:n])
            trained = load_c_weights(folder)
            stepped = copy.deepcopy(model).partial_fit(X_train[:batch], y_train[:batch])
        result = {
            "model": name, "footprint_bytes": footprint, **{k: v for k, v in device.items() if k != "labels"},
            "predictions": n, "identical_predictions": bool(np.array_equal(model.classes_[device["labels"]], expected)),
            "accuracy_on_device": float((model.classes_[device["labels"]] == y_test[:n]).mean()),
            "test_accuracy_python": float(model.score(X_test, y_test)),
            "training_batch": batch, "identical_weights_after_one_batch": same_weights(trained, stepped),
        }
        results.append(result)
        print(result, flush=True)
        kib = lambda b: f"{b / 1024:.0f} KiB"  # noqa: E731
        rows.append([name, kib(footprint["predict"]["flash"]), kib(footprint["predict"]["ram"]),
                     kib(footprint["train"]["flash"]), kib(footprint["train"]["ram"]),
                     f"{device['instructions_per_prediction']:,}", f"{device['instructions_per_training_sample']:,}",
                     f"{result['identical_predictions']} ({n})", f"{result['identical_weights_after_one_batch']} "
                     f"({batch})"])
    round_trip = digits_round_trip()
    machine = machine_info()
    write_json(args.out / "mcu.json", {"machine": machine, "models": results, "round_trip": round_trip})
    table = md_table(["model", "predict flash", "predict RAM", "train flash", "train RAM", "instructions / prediction",
                      "instructions / training sample", "predictions = Python's (n)",
                      "weights = partial_fit's (batch)"], rows)
    write_text(args.out / "mcu.md", f"""# Exported models on an Arm Cortex-M3 without FPU (QEMU mps2-an385)

`python benchmarks/bench_mcu.py --predictions {args.predictions}` · {machine_line(machine)}

Flash: text + data. RAM: static data and buffers (data + bss), besides the 64 KiB stack the
build reserves. Training RAM holds the int32 weights, one batch's pre-activations, and the
int64 gradient sums of a conv layer or a dense layer's deltas and inputs for the batch.
Instructions: QEMU `-icount shift=0` and SysTick (the exported `mcu.c`); a Cortex-M3 runs
about one instruction per cycle.

{table}

Round trip (digits MLP): fitted in Python, exported, one epoch on the emulated device on
{round_trip['samples']} samples, weights read back with `load_c_weights`: Python's `predict` equals the
device's on {round_trip['predictions']} samples: {round_trip['identical_predictions']}; weights equal
`partial_fit(shuffle=False)`'s: {round_trip['identical_weights']}.
""")
    print((args.out / "mcu.md").read_text())


def digits_round_trip(samples: int = 300, predictions: int = 297) -> dict:
    """Fit in Python, train one epoch on the device, read the weights back, compare predict."""
    X, y = load_digits(return_X_y=True)
    model = fit(NitroMLPClassifier(random_state=0, shuffle=False), X[:1000], y[:1000])
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "exported"
        export_c(model, folder)
        make(folder, "mcu")
        device_run(model, X[:1], X[1000:1000 + samples], y[1000:1000 + samples], folder)  # train.elf: one epoch
        trained = load_c_weights(folder)
        again = Path(tmp) / "trained"
        export_c(trained, again)  # the device's weights, exported to run predict.elf with them
        make(again, "mcu")
        device = device_run(trained, X[1500:1500 + predictions], X[:1], y[:1], again)
    expected = copy.deepcopy(model).partial_fit(X[1000:1000 + samples], y[1000:1000 + samples])
    return {"samples": samples, "predictions": predictions,
            "identical_predictions": bool(np.array_equal(trained.classes_[device["labels"]],
                                                         trained.predict(X[1500:1500 + predictions]))),
            "identical_weights": same_weights(trained, expected)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--predictions", type=int, default=200, help="test samples predicted on the device")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    run(parser.parse_args())


if __name__ == "__main__":
    main()
