"""Benchmark: sknitro's defaults on small tables against scikit-learn's MLPClassifier.

    python benchmarks/bench_small_tables.py [--threads 1]

5-fold stratified cross-validation (shuffled, seed 0), the same folds for both models:
``NitroMLPClassifier(random_state=0)`` on the raw features (its encoder handles any scale)
against ``make_pipeline(StandardScaler(), MLPClassifier(random_state=0, max_iter=1000))``.
Tables: scikit-learn's bundled iris, wine, breast cancer and digits, and wine with its
columns multiplied by powers of ten from 1e-3 to 1e6 (features on wildly different scales).
Results: benchmarks/results/small_tables.{json,md}.
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import numpy as np
from _common import call_with_threads, machine_info, machine_line, md_table, write_json, write_text
from sklearn.datasets import load_breast_cancer, load_digits, load_iris, load_wine
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from sknitro import NitroMLPClassifier


def wine_rescaled() -> tuple[np.ndarray, np.ndarray]:
    X, y = load_wine(return_X_y=True)
    scales = 10.0 ** np.linspace(-3, 6, X.shape[1])
    return X * scales, y


TABLES = {
    "iris": lambda: load_iris(return_X_y=True),
    "wine": lambda: load_wine(return_X_y=True),
    "breast cancer": lambda: load_breast_cancer(return_X_y=True),
    "digits": lambda: load_digits(return_X_y=True),
    "wine, columns x 1e-3 .. 1e6": wine_rescaled,
}


def run(args: argparse.Namespace) -> None:
    cv = StratifiedKFold(5, shuffle=True, random_state=0)
    rows, results = [], []
    for name, load in TABLES.items():
        X, y = load()
        scores = {}
        for model, estimator in (("sknitro", NitroMLPClassifier(random_state=0)),
                                 ("MLPClassifier", make_pipeline(StandardScaler(),
                                                                 MLPClassifier(random_state=0, max_iter=1000)))):
            started = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                fold_scores = cross_val_score(estimator, X, y, cv=cv)
            scores[model] = {"mean": float(fold_scores.mean()), "folds": fold_scores.tolist(),
                             "seconds": time.perf_counter() - started}
        gap = 100 * (scores["MLPClassifier"]["mean"] - scores["sknitro"]["mean"])
        results.append({"table": name, "n_samples": int(X.shape[0]), "n_features": int(X.shape[1]), **scores,
                        "gap_points": gap})
        rows.append([name, f"{X.shape[0]} × {X.shape[1]}", f"{scores['sknitro']['mean']:.4f}",
                     f"{scores['MLPClassifier']['mean']:.4f}", f"{gap:+.2f}",
                     f"{scores['sknitro']['seconds']:.1f} / {scores['MLPClassifier']['seconds']:.1f}"])
        print(" | ".join(rows[-1]), flush=True)
    result = {"date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "machine": machine_info(), "args": vars(args),
              "results": results}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "small_tables.json", result)
    write_text(out / "small_tables.md", "\n".join([
        f"# Small tables: sknitro's defaults vs MLPClassifier behind a StandardScaler ({result['date']})", "",
        machine_line(result["machine"]), "",
        "`python benchmarks/bench_small_tables.py`: 5-fold stratified CV (shuffled, seed 0), the same "
        "folds for both; mean accuracy. Gap: MLPClassifier minus sknitro, in points.", "",
        md_table(["table", "samples × features", "sknitro", "MLPClassifier + StandardScaler",
                  "gap (points)", "seconds (sknitro / MLP)"], rows), ""]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, help="limit BLAS threads (threadpoolctl)")
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args()
    call_with_threads(args.threads, lambda: run(args))


if __name__ == "__main__":
    main()
