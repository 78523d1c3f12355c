"""The main job: `sknitro` / `python -m sknitro`."""

import re
import subprocess
import sys

import joblib
import numpy as np
import pytest

from sknitro.cli import main


def test_default_run_trains_on_digits_and_saves(tmp_path, capsys):
    path = tmp_path / "model.joblib"
    assert main(["--epochs", "30", "--save", str(path)]) == 0
    out = capsys.readouterr().out
    model = joblib.load(path)
    assert model.n_iter_ <= 30 and model.weights_[0].dtype == np.int32
    # one line per epoch, 1 to the last one trained, then the summary
    epochs = [int(e) for e in re.findall(r"^epoch\s+(\d+)", out, flags=re.MULTILINE)]
    assert epochs == list(range(1, model.n_iter_ + 1))
    assert f"trained {model.n_iter_} epochs" in out
    accuracy = float(out.split("test accuracy:")[1].split()[0])
    assert accuracy > 0.9


def test_missing_fashion_mnist_is_explained(tmp_path, capsys):
    assert main(["--dataset", "fashion-mnist", "--data-home", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "apt-get install dataset-fashion-mnist" in err and str(tmp_path) in err


def test_module_entry_point_runs():
    result = subprocess.run([sys.executable, "-m", "sknitro", "--version"], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.startswith("sknitro ")


def test_bad_option_is_rejected():
    with pytest.raises(SystemExit):
        main(["--dataset", "cifar"])


@pytest.mark.parametrize("option", [["--epochs", "0"], ["--lr-inv", "0"], ["--lr-inv", "-3"], ["--hidden", "0"],
                                    ["--epochs", "two"]])
def test_nonpositive_numbers_are_rejected(option, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(option)
    assert exit_info.value.code == 2
    assert "expected a positive integer" in capsys.readouterr().err
