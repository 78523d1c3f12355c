"""The README's Python examples run as written and print what they say."""

import contextlib
import io
import re
import warnings
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_examples_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert len(blocks) >= 5  # usage, CNN, tuning, Dask, persistence
    namespace: dict = {"__name__": "__readme__"}
    out = io.StringIO()
    with contextlib.redirect_stdout(out), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for block in blocks:
            exec(compile(block, str(README), "exec"), namespace)
    printed = out.getvalue().split("\n")
    # usage: test accuracy, the weights' dtype, int8 scores
    assert float(printed[0]) > 0.95 and printed[1] == "int32"
    ns = namespace
    assert ns["clf"].decision_function(ns["X_test"][:2]).dtype.name == "int8"
    # the CNN
    assert ns["cnn"].score(ns["X_test"].reshape(-1, 1, 8, 8), ns["y_test"]) > 0.95
    # tuning: 6 trials in the shared study; the refit trained for the best trial's epochs
    assert len(ns["study"].trials) == 6 and ns["best"].n_iter_ == ns["study"].best_trial.user_attrs["best_epoch"]
    assert ns["search"].best_score_ > 0.85
    # Dask: the search ran its 4 candidates
    assert len(ns["grid_search"].cv_results_["params"]) == 4
    # export: the reader's labels are the estimator's
    assert (ns["exported"].predict(ns["X_new"]) == ns["mlp"].predict(ns["X_new"])).all()
