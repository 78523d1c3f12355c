"""Benchmark: NitroCNNClassifier on Fashion-MNIST within a time budget.

    python benchmarks/bench_cnn_fashion.py [--budget-minutes 60] [--architecture compact]
    python benchmarks/bench_cnn_fashion.py --vgg8b-samples 256     # cost of a VGG8B epoch
    python benchmarks/bench_cnn_fashion.py --architecture vgg8b --width-divisor 4 --hidden 256 \
        --scale-calibration --name vgg8b_quarter_calibrated        # a quarter-width VGG8B

Trains with the validation-driven schedule (10% validation split, lr_inv plateau, early
stopping, best validated model kept) until the budget or ``--max-epochs`` runs out: the
callback ``sknitro.callbacks.TimeLimit`` ends training when one more epoch, at the pace of
the last one (training + validation), would end past the budget, so the whole training run
fits in it. Reports test accuracy and seconds per epoch; the test accuracy of each epoch's
weights is measured after training, for the report only: no decision ever reads it.
Results: benchmarks/results/<name>.{json,md,png} (``--name``, default cnn_fashion).
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import numpy as np
from _common import call_with_threads, line_plot, machine_info, machine_line, write_json

from sknitro import NitroCNNClassifier
from sknitro.callbacks import TimeLimit
from sknitro.cnn import PRESETS
from sknitro.datasets import load_fashion_mnist


class EpochWeights:
    """A training callback: keeps each epoch's weights for the report and prints the epoch."""

    def __init__(self) -> None:
        self.weights: list = []

    def __call__(self, clf: NitroCNNClassifier, record: dict) -> None:
        self.weights.append(clf.network_.get_weights())
        print(f"  epoch {record['epoch']:3d}: {record['seconds']:7.1f} s, "
              f"train {record['train_accuracy']:.4f}, heads {np.round(record['head_accuracies'], 3).tolist()}", flush=True)

    def score(self, clf: NitroCNNClassifier, X_test: np.ndarray, y_test: np.ndarray) -> list[float]:
        """Test accuracy of every epoch's weights (after training: no decision reads it)."""
        final = clf.network_.get_weights()
        accuracies = []
        for weights in self.weights:
            clf.network_.set_weights(weights)
            accuracies.append(float(clf.score(X_test, y_test)))
        clf.network_.set_weights(final)
        return accuracies


def vgg8b_epoch_cost(n_samples: int) -> dict:
    X, y, _, _ = load_fashion_mnist(n_train=n_samples, n_test=1)
    clf = NitroCNNClassifier(architecture="vgg8b", hidden_layer_sizes=(1024,), max_iter=1, random_state=0)
    start = time.perf_counter()
    clf.fit(X, y)
    seconds = time.perf_counter() - start
    return {"samples": n_samples, "seconds": seconds, "hours_per_60000_epoch": seconds / n_samples * 60000 / 3600}


def architecture(name: str, width_divisor: int) -> str | list:
    """A preset name, or its feature list with every conv width divided by ``width_divisor``."""
    if width_divisor == 1:
        return name
    return [f if f == "M" else f // width_divisor for f in PRESETS[name]["features"]]


def head_dim(name: str, width_divisor: int) -> int | None:
    """The preset's ``head_dim`` divided like its widths: the heads pool with the same windows."""
    return None if width_divisor == 1 else PRESETS[name]["head_dim"] // width_divisor


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--architecture", default="compact")
    parser.add_argument("--width-divisor", type=int, default=1,
                        help="divide every conv width of the architecture by this (4: a quarter-width VGG8B)")
    parser.add_argument("--scale-calibration", action="store_true",
                        help="calibrate the initial weights to the NITRO scaling (an opt-in departure)")
    parser.add_argument("--name", default="cnn_fashion", help="base name of the result files")
    parser.add_argument("--hidden", type=int, nargs="*", default=[256])
    parser.add_argument("--lr-inv", type=int, help="inverse learning rate (default: the estimator's)")
    parser.add_argument("--fwd-decay-inv", type=int, default=28000)
    parser.add_argument("--head-decay-inv", type=int, default=3500)
    parser.add_argument("--dropout", type=float, default=0.1)
    parser.add_argument("--no-augment", action="store_true")
    parser.add_argument("--plateau-patience", type=int, default=6,
                        help="epochs without a gain of --tol before lr_inv grows x3 (default 6)")
    parser.add_argument("--tol", type=float, default=0.01, help="validation gain that counts (default 0.01)")
    parser.add_argument("--budget-minutes", type=float, default=60)
    parser.add_argument("--max-epochs", type=int, default=100)
    parser.add_argument("--n-train", type=int)
    parser.add_argument("--n-test", type=int)
    parser.add_argument("--vgg8b-samples", type=int, default=0, help="also time VGG8B on this many samples")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, help="limit BLAS threads (threadpoolctl), e.g. 1 on a busy machine")
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args()
    call_with_threads(args.threads, lambda: run(args))


def run(args: argparse.Namespace) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result: dict = {"date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "args": vars(args),
                    "machine": machine_info()}

    if args.vgg8b_samples:
        result["vgg8b"] = vgg8b_epoch_cost(args.vgg8b_samples)
        print(f"VGG8B: {result['vgg8b']['hours_per_60000_epoch']:.2f} h per Fashion-MNIST epoch", flush=True)
    if args.budget_minutes > 0:
        X_train, y_train, X_test, y_test = load_fashion_mnist(n_train=args.n_train, n_test=args.n_test)
        epochs = EpochWeights()
        clf = NitroCNNClassifier(
            architecture=architecture(args.architecture, args.width_divisor),
            hidden_layer_sizes=tuple(args.hidden), scale_calibration=args.scale_calibration,
            head_dim=head_dim(args.architecture, args.width_divisor),
            **({} if args.lr_inv is None else {"lr_inv": args.lr_inv}),
            fwd_decay_inv=args.fwd_decay_inv, head_decay_inv=args.head_decay_inv, dropout=args.dropout,
            augment=not args.no_augment, early_stopping=True, max_iter=args.max_epochs,
            n_iter_no_change=15, lr_plateau_patience=args.plateau_patience, tol=args.tol,
            random_state=args.seed, callbacks=[epochs, TimeLimit(60 * args.budget_minutes)])
        started = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            clf.fit(X_train, y_train)
        training_seconds = time.perf_counter() - started
        for record, accuracy in zip(clf.history_, epochs.score(clf, X_test, y_test)):
            record["test_accuracy"] = accuracy
        result["cnn"] = {
            "total_seconds": training_seconds,
            "final_test_accuracy": float(clf.score(X_test, y_test)),
            "best_validation_accuracy": clf.best_validation_score_,
            "epochs": clf.n_iter_,
            "history": clf.history_,
        }
        write_report(out, result)
    write_json(out / f"{args.name}.json", result)


def write_report(out: Path, result: dict) -> None:
    cnn, args = result["cnn"], result["args"]
    width = f" with conv widths / {args['width_divisor']}" if args["width_divisor"] > 1 else ""
    calibration = ", initial weights calibrated to the NITRO scaling" if args["scale_calibration"] else ""
    lines = [f"# Fashion-MNIST CNN `{args['architecture']}`{width} + dense {args['hidden']}{calibration} "
             f"({result['date']})", "",
             f"{machine_line(result['machine'])} · BLAS threads {args['threads'] or 'as the libraries choose'}",
             "",
             f"Budget {args['budget_minutes']} min; final model (best validated epoch): "
             f"**{100 * cnn['final_test_accuracy']:.2f} %** test accuracy after {cnn['epochs']} epochs, "
             f"{cnn['total_seconds'] / 60:.1f} min of training and validation.", "",
             f"lr_inv {cnn['history'][0]['lr_inv'] if cnn['history'] else args['lr_inv']} (x3 after {args['plateau_patience']} epochs without a validation gain "
             f"of {args['tol']}), dropout {args['dropout']}, augmentation {not args['no_augment']}, "
             f"fwd/head decay inv {args['fwd_decay_inv']}/{args['head_decay_inv']}, seed {args['seed']}.", "",
             "| epoch | seconds | train acc | validation acc | test acc (report only) | lr_inv "
             "| heads' train acc (block by block) |",
             "|---|---|---|---|---|---|---|"]
    for r in cnn["history"]:
        heads = " / ".join(f"{h:.3f}" for h in r.get("head_accuracies", []))
        lines.append(f"| {r['epoch']} | {r['seconds']:.1f} | {r['train_accuracy']:.4f} | "
                     f"{r.get('validation_accuracy', float('nan')):.4f} | {r['test_accuracy']:.4f} | {r['lr_inv']} "
                     f"| {heads} |")
    if "vgg8b" in result:
        v = result["vgg8b"]
        lines += ["", f"VGG8B: {v['seconds']:.1f} s for {v['samples']} samples, i.e. "
                      f"{v['hours_per_60000_epoch']:.2f} h per Fashion-MNIST epoch on this machine."]
    (out / f"{args['name']}.md").write_text("\n".join(lines) + "\n")
    history = cnn["history"]
    line_plot(out / f"{args['name']}_accuracy.png",
              [{"y": [r["test_accuracy"] for r in history], "marker": "o", "label": "test"},
               {"y": [r.get("validation_accuracy", np.nan) for r in history], "marker": ".",
                "label": "validation"}],
              "epoch", "accuracy", "NitroCNNClassifier on Fashion-MNIST")


if __name__ == "__main__":
    main()
