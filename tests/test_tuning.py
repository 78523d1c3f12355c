"""sknitro.tuning: the search space, OptunaSearchCV with pruning, and tune() on shared storages."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState
from optuna_integration import OptunaSearchCV
from sklearn.base import clone
from sklearn.linear_model import SGDClassifier
from sklearn.model_selection import StratifiedKFold, cross_val_score

from filelock import FileLock, Timeout

from conftest import weights_equal
from sknitro import NitroCNNClassifier, NitroMLPClassifier
from sknitro.tuning import search_space, tune

ROOT = Path(__file__).resolve().parents[1]

pytestmark = [
    # short trainings on purpose: reaching max_iter is expected
    pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning"),
    # OptunaSearchCV is experimental and reports to the deprecated optuna.terminator
    pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning"),
    pytest.mark.filterwarnings("ignore:.*optuna.terminator.*:FutureWarning"),
]


@pytest.fixture(autouse=True)
def quiet_optuna():
    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    yield
    optuna.logging.set_verbosity(level)


def small_mlp(**params):
    return NitroMLPClassifier(hidden_layer_sizes=(32,), random_state=0, **params)


# -- search_space -----------------------------------------------------------------------------
def grid_points(distribution):
    """Edge values of a distribution (random sampling rarely hits the ends of a log range)."""
    if isinstance(distribution, CategoricalDistribution):
        return list(distribution.choices)
    if isinstance(distribution, FloatDistribution) and distribution.step is not None:
        n = round((distribution.high - distribution.low) / distribution.step)
        return [distribution.low + i * distribution.step for i in range(n + 1)]  # as Optuna computes them
    return [distribution.low, distribution.high]


@pytest.mark.parametrize("cls", [NitroMLPClassifier, NitroCNNClassifier])
def test_search_space_produces_only_accepted_values(cls):
    space = search_space(cls)
    assert search_space(cls()) == space and search_space(cls) is not space  # a fresh dict
    expected = {"lr_inv", "lr_amp", "fwd_decay_inv", "head_decay_inv", "scale_bits", "batch_size",
                "negative_slope_inv", "dropout"} | ({"conv_dropout"} if cls is NitroCNNClassifier else set())
    assert set(space) == expected
    assert space["lr_inv"].log and isinstance(space["lr_inv"], IntDistribution)
    assert space["negative_slope_inv"].choices == (3, 4, 5, 7, 8, 10, 15, 16, 20)

    # 300 random points from Optuna, plus every edge and grid value of each distribution
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    points = []
    for _ in range(300):
        trial = study.ask(space)
        points.append(trial.params)
        study.tell(trial, 0.0)
    for name, dist in space.items():
        points += [{**points[0], name: value} for value in grid_points(dist)]
    seen = {name: set() for name in space}
    for params in points:
        estimator = cls().set_params(**params)
        estimator._validate_params()  # scikit-learn's constraints
        estimator._check_params()  # sknitro's own checks (slopes, dropout grid)
        for name, value in params.items():
            seen[name].add(value)
    assert seen["batch_size"] == {"auto", 16, 32, 64, 128, 256}
    assert {round(p, 9) for p in seen["dropout"]} == {0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3}
    assert min(seen["lr_inv"]) == 64 and max(seen["lr_inv"]) == 2048


def test_search_space_rejects_other_estimators():
    with pytest.raises(TypeError, match="sknitro classifier"):
        search_space(SGDClassifier)


# -- OptunaSearchCV ------------------------------------------------------------------------------
def test_optuna_search_cv_with_pruning_beats_the_defaults(digits):
    """OptunaSearchCV(enable_pruning=True) trains through partial_fit (with ``classes``) epoch
    by epoch. With ``lr_plateau_factor=1`` (partial_fit keeps lr_inv constant, so fit does too)
    and ``n_iter_no_change=max_iter``, ``fit`` trains exactly as the search's max_iter
    partial_fit calls did, so cross_val_score of the best parameters reproduces the search's
    best score exactly, and compares honestly with the defaults on the same folds.
    Trials OptunaSearchCV's default MedianPruner stops end before the last epoch.
    """
    X, y = digits
    epochs = 8
    cv = StratifiedKFold(3, shuffle=True, random_state=0)
    base = small_mlp(max_iter=epochs, lr_plateau_factor=1, n_iter_no_change=epochs)
    search = OptunaSearchCV(base, search_space(base), cv=cv, n_trials=10, enable_pruning=True,
                            max_iter=epochs, random_state=0, error_score="raise")
    search.fit(X, y)

    states = [trial.state for trial in search.study_.trials]
    assert len(states) == 10 and set(states) <= {TrialState.COMPLETE, TrialState.PRUNED}
    for trial in search.study_.trials:
        if trial.state == TrialState.PRUNED:  # stopped before the last epoch
            assert max(trial.intermediate_values) < epochs - 1

    best_scores = cross_val_score(clone(search.best_estimator_), X, y, cv=cv)
    default_scores = cross_val_score(base, X, y, cv=cv)
    assert best_scores.mean() == search.best_score_  # the search's own number, reproduced
    assert best_scores.mean() >= default_scores.mean()
    # measured: 0.967 tuned vs 0.920 default (3-fold CV accuracy, 8 epochs, (32,) MLP)
    assert best_scores.mean() > 0.93
    assert search.best_estimator_.n_iter_ == epochs


# -- tune ----------------------------------------------------------------------------------------
def test_tune_prunes_and_refits_the_best_trial(digits):
    X, y = digits
    X, y = X[:900], y[:900]
    estimator = small_mlp()
    best, study = tune(estimator, X, y, n_trials=8, max_epochs=6, random_state=0)

    trials = study.trials
    assert len(trials) == 8 and {t.state for t in trials} <= {TrialState.COMPLETE, TrialState.PRUNED}
    # the first trial is the estimator's own settings (lr_amp=None is 64 * n_classes)
    own = {name: estimator.get_params()[name] for name in trials[0].params}
    assert trials[0].params == {**own, "lr_amp": own["lr_amp"] or 64 * len(np.unique(y))}
    for trial in trials:
        curve = trial.intermediate_values  # validation accuracy per epoch, epochs from 1
        assert sorted(curve) == list(range(1, trial.user_attrs["n_epochs"] + 1))
        best_epoch = trial.user_attrs["best_epoch"]
        assert curve[best_epoch] == max(curve.values())
        assert all(curve[e] < curve[best_epoch] for e in range(1, best_epoch))  # the first best
        if trial.state == TrialState.COMPLETE:
            assert trial.value == curve[best_epoch]
        else:
            assert trial.user_attrs["n_epochs"] < 6

    # the refit: the best parameters, best_epoch epochs on all the data, as the trials trained
    best_trial = study.best_trial
    n_epochs = best_trial.user_attrs["best_epoch"]
    assert {k: best.get_params()[k] for k in best_trial.params} == best_trial.params
    assert best.n_iter_ == n_epochs and best.early_stopping is False and best.lr_plateau_factor == 1
    manual = clone(estimator).set_params(**best_trial.params)
    for _ in range(n_epochs):
        manual.partial_fit(X, y, classes=np.unique(y))
    assert weights_equal(best.weights_, manual.weights_)
    assert best.score(X, y) > 0.9


def test_tune_two_processes_share_one_sqlite_study(digits, tmp_path):
    """Two workers started together on one SQLite study: 6 trials, each run exactly once."""
    url = f"sqlite:///{tmp_path / 'study.db'}"
    script = textwrap.dedent(f"""
        import json, warnings
        import optuna
        from sklearn.datasets import load_digits
        from sknitro import NitroMLPClassifier
        from sknitro.tuning import tune

        warnings.simplefilter("ignore")
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        X, y = load_digits(return_X_y=True)
        ran = []
        _, study = tune(NitroMLPClassifier(hidden_layer_sizes=(16,), random_state=0), X[:600], y[:600],
                        n_trials=3, max_epochs=3, storage={url!r}, study_name="shared",
                        random_state=0, refit=False,
                        callbacks=[lambda study, trial: ran.append(trial.number)])
        print(json.dumps(ran))
    """)
    workers = [subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [worker.communicate(timeout=240) for worker in workers]
    for worker, (out, err) in zip(workers, outputs):
        assert worker.returncode == 0, err[-3000:]
    ran = [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs]
    assert sorted(ran[0] + ran[1]) == list(range(6)) and len(ran[0]) == len(ran[1]) == 3

    study = optuna.load_study(study_name="shared", storage=url)
    assert sorted(t.number for t in study.trials) == list(range(6))
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in study.trials)
    # the estimator's own point was enqueued once, not once per worker (setup holds a file lock)
    own = NitroMLPClassifier(hidden_layer_sizes=(16,)).get_params()
    defaults = {k: own[k] for k in ("lr_inv", "batch_size", "scale_bits", "negative_slope_inv")}
    assert sum(defaults.items() <= t.params.items() for t in study.trials) == 1
    FileLock(str(tmp_path / "study.db") + ".sknitro.lock", timeout=0).acquire()  # not left held
    assert study.user_attrs["sknitro_validation_split"]["validation_fraction"] == 0.1


def test_tune_journal_file_storage_resumes(digits, tmp_path):
    X, y = digits
    X, y = X[:500], y[:500]
    path = tmp_path / "study.log"
    _, first = tune(small_mlp(), X, y, n_trials=2, max_epochs=2, storage=path, study_name="j",
                    random_state=0, refit=False)
    assert path.exists() and len(first.trials) == 2
    # a second call (another process or machine in real use) loads and extends the same study
    best, study = tune(small_mlp(), X, y, n_trials=1, max_epochs=2, storage=str(path),
                       study_name="j", random_state=0)
    assert [t.number for t in study.trials] == [0, 1, 2]
    assert study.trials[0].params == first.trials[0].params  # the default point, not enqueued twice
    assert study.trials[2].params != study.trials[0].params
    assert best.n_iter_ == study.best_trial.user_attrs["best_epoch"]

    reloaded = optuna.load_study(study_name="j", storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(path))))
    assert [t.value for t in reloaded.trials] == [t.value for t in study.trials]
    with pytest.warns(UserWarning, match="another validation split"):
        tune(small_mlp(), X, y, n_trials=1, max_epochs=1, storage=path, study_name="j",
             random_state=1, refit=False)


@pytest.mark.parametrize("kwargs, error, match", [
    ({}, ValueError, "n_trials, timeout or both"),
    ({"n_trials": 0}, ValueError, "n_trials must be >= 1"),
    ({"n_trials": 2.5}, TypeError, "n_trials must be an int"),
    ({"timeout": -1}, ValueError, "timeout must be > 0"),
    ({"n_trials": 1, "max_epochs": 0}, ValueError, "max_epochs must be >= 1"),
    ({"n_trials": 1, "validation_fraction": 1.0}, ValueError, "validation_fraction"),
    ({"n_trials": 1, "search_space": {"learning_rate": IntDistribution(1, 2)}}, ValueError,
     "not parameters of NitroMLPClassifier: \\['learning_rate'\\]"),
    ({"n_trials": 1, "search_space": {"lr_inv": [64, 128]}}, TypeError, "optuna distribution"),
    ({"n_trials": 1, "search_space": {}}, ValueError, "empty"),
    ({"n_trials": 1, "storage": "study.db"}, ValueError, "neither a database URL"),
    ({"n_trials": 1, "storage": 3}, TypeError, "storage must be"),
    ({"n_trials": 1, "pruner": "median"}, TypeError, "pruner"),
    ({"n_trials": 1, "sampler": "tpe"}, TypeError, "sampler"),
])
def test_tune_validates_its_arguments(digits, kwargs, error, match):
    X, y = digits
    with pytest.raises(error, match=match):
        tune(small_mlp(), X, y, **kwargs)


def test_tune_rejects_other_estimators(digits):
    X, y = digits
    with pytest.raises(TypeError, match="sknitro classifier"):
        tune(SGDClassifier(), X, y, n_trials=1)


def test_optuna_is_optional():
    """``import sknitro`` (and sknitro.tuning) never imports Optuna; using it without Optuna
    says which extra to install."""
    code = textwrap.dedent("""
        import sys
        import sknitro, sknitro.tuning
        assert "optuna" not in sys.modules, "optuna imported eagerly"
        sys.modules["optuna"] = None  # as if not installed
        try:
            sknitro.tuning.search_space(sknitro.NitroMLPClassifier)
        except ImportError as exc:
            print(exc)
    """)
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert 'pip install "sknitro[tune]"' in out.stdout


@pytest.mark.parametrize("pruner, pruned", [(optuna.pruners.ThresholdPruner(lower=2.0), True),
                                            (optuna.pruners.NopPruner(), False)])
def test_tune_stops_exactly_the_trials_its_pruner_prunes(digits, pruner, pruned):
    X, y = digits
    _, study = tune(small_mlp(), X[:400], y[:400], n_trials=3, max_epochs=3, pruner=pruner,
                    random_state=0, refit=False)
    for trial in study.trials:
        # an accuracy never reaches 2.0: that pruner stops every trial after its first epoch
        assert trial.state == (TrialState.PRUNED if pruned else TrialState.COMPLETE)
        assert len(trial.intermediate_values) == (1 if pruned else 3)


def test_setup_lock_is_held_while_its_holder_lives_and_freed_when_it_dies(tmp_path):
    storage = tmp_path / "study.db"
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from sknitro.tuning import _file_lock
        with _file_lock({str(storage)!r}):
            print("held", flush=True)
            time.sleep(60)  # a slow setup: the lock must not expire meanwhile
    """)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        lock = FileLock(str(storage) + ".sknitro.lock", timeout=1.5)
        with pytest.raises(Timeout):
            lock.acquire()
    finally:
        holder.kill()
        holder.wait()
    lock.acquire()  # the system released the dead holder's lock
    lock.release()
