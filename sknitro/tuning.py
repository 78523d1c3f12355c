"""Hyperparameter tuning of the NITRO-D classifiers with Optuna.

Two entry points:

- :func:`search_space` gives Optuna distributions over an estimator's integer
  hyperparameters, for :class:`optuna_integration.OptunaSearchCV` (whose
  ``enable_pruning=True`` trains each candidate epoch by epoch through ``partial_fit``) or for
  your own objective;
- :func:`tune` runs a study that trains each trial epoch by epoch on a fixed, stratified
  validation split, reports the validation accuracy after every epoch so that a pruner can
  stop poor trials, and refits the best trial on all the data. With a shared ``storage`` (a
  database URL or a journal file) several processes or machines work on one study.

Optuna is an optional dependency (``pip install "sknitro[tune]"``): it is imported inside
the functions, so ``import sknitro`` never needs it.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from numbers import Integral, Real
from typing import TYPE_CHECKING, Any

import numpy as np
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split
from sklearn.utils import check_random_state

from ._base import BaseNitroClassifier
from .nn.layers import NITRO_RELU_MEANS

if TYPE_CHECKING:  # pragma: no cover
    import optuna

__all__ = ["search_space", "tune"]

_INSTALL_HINT = 'sknitro.tuning needs Optuna and optuna-integration: pip install "sknitro[tune]"'

# Journal files are recognised by these suffixes; anything with "://" is a database URL.
JOURNAL_SUFFIXES = (".log", ".journal")

# Study user attribute recording the validation split, so that workers sharing a study can
# check that they score trials on the same held-out samples.
_SPLIT_ATTR = "sknitro_validation_split"


def _import_optuna():
    try:
        import optuna
    except ImportError as exc:  # pragma: no cover - exercised only without the extra
        raise ImportError(_INSTALL_HINT) from exc
    return optuna


def search_space(estimator_or_class: Any) -> dict[str, optuna.distributions.BaseDistribution]:
    """Optuna distributions over the integer hyperparameters of a NITRO-D classifier.

    Every value the distributions can produce is accepted by the estimator's parameter
    validation. The log-scale ranges are centred (geometrically) near the defaults, which are
    the published settings where the paper has one.

    - ``lr_inv``: int, log scale, 64 to 2048 (the MLP's default 256 and the published 512 in
      the middle). A step grows with ``batch_size / lr_inv``: on digits a (32,) MLP trained 8
      epochs with batch 64 reaches 0.6 accuracy at 64, 0.96 at 128 and 0.94 at 256; below 64 even
      batch 16 gives seed-dependent results, and 2048 barely learns in 15 epochs (its steps
      round to 0);
    - ``lr_amp``: int, log scale, 16 to 4096 (the default is ``64 * n_classes``, 640 for 10
      classes);
    - ``fwd_decay_inv``: int, log scale, 1000 to 100000 (centre 10000; published 10000-30000);
    - ``head_decay_inv``: int, log scale, 800 to 80000 (centre 8000; published 3000-8000);
    - ``scale_bits``: int, 7 to 11 (8 to 11 for the CNN), see below;
    - ``batch_size``: one of "auto" (the estimators' default), 16, 32, 64, 128, 256 (published: 64);
    - ``negative_slope_inv``: one of the slopes with a NITRO-ReLU mean correction
      (3, 4, 5, 7, 8, 10, 15, 16, 20);
    - ``dropout``, and ``conv_dropout`` for the CNN: 0 to 0.3 in steps of 0.05 (a rate must be
      a multiple of 0.05 for the integer rescale of the kept values).

    ``scale_bits``: NITRO scaling divides a block's integer sums by
    ``SF = 2**scale_bits * fan_in`` (algorithm.md §3). With too few bits the scaled sums
    saturate at ±127, where every activation's gradient is 0: on digits, 6 bits cost a (64,)
    MLP 9 accuracy points after 30 epochs, and a one-conv CNN, whose 3×3 inputs are strongly
    correlated, reaches at most 0.40 at 6 or 7 bits against 0.97 at 8. With many bits most outputs
    round to 0 until the weights have grown ``2**k`` times, which costs epochs (11 bits still
    train, 12 lose most of the accuracy in 10 epochs). The default, 8, is the published value.

    Parameters
    ----------
    estimator_or_class : NitroMLPClassifier or NitroCNNClassifier, instance or class
        The estimator (or its class) the space is for; the CNN adds ``conv_dropout``.

    Returns
    -------
    space : dict of str to optuna.distributions.BaseDistribution
        A fresh dict: remove or replace entries to narrow the search.

    Examples
    --------
    >>> from sknitro import NitroMLPClassifier
    >>> from sknitro.tuning import search_space
    >>> space = search_space(NitroMLPClassifier)
    >>> sorted(space)  # doctest: +NORMALIZE_WHITESPACE
    ['batch_size', 'dropout', 'fwd_decay_inv', 'head_decay_inv', 'lr_amp', 'lr_inv',
     'negative_slope_inv', 'scale_bits']
    >>> space["lr_inv"]
    IntDistribution(high=2048, log=True, low=64, step=1)
    """
    _import_optuna()  # a clear message without the extra
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    cls = estimator_or_class if isinstance(estimator_or_class, type) else type(estimator_or_class)
    if not issubclass(cls, BaseNitroClassifier):
        raise TypeError(f"search_space needs a sknitro classifier or its class, got {estimator_or_class!r}")
    is_cnn = "conv_dropout" in cls._parameter_constraints
    space = {
        "lr_inv": IntDistribution(64, 2048, log=True),
        "lr_amp": IntDistribution(16, 4096, log=True),
        "fwd_decay_inv": IntDistribution(1000, 100_000, log=True),
        "head_decay_inv": IntDistribution(800, 80_000, log=True),
        "scale_bits": IntDistribution(8 if is_cnn else 7, 11),
        "batch_size": CategoricalDistribution(["auto", 16, 32, 64, 128, 256]),
        "negative_slope_inv": CategoricalDistribution(sorted(NITRO_RELU_MEANS)),
        # step 0.05 keeps every rate a multiple of 0.05 (the integer dropout's rescale needs it)
        "dropout": FloatDistribution(0.0, 0.3, step=0.05),
    }
    if is_cnn:
        space["conv_dropout"] = FloatDistribution(0.0, 0.3, step=0.05)
    return space


def _suggest(trial: optuna.trial.Trial, name: str, distribution: Any) -> Any:
    """``trial.suggest_*`` for one distribution (Optuna has no public suggest-by-distribution)."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if isinstance(distribution, IntDistribution):
        return trial.suggest_int(name, distribution.low, distribution.high, step=distribution.step,
                                 log=distribution.log)
    if isinstance(distribution, FloatDistribution):
        return trial.suggest_float(name, distribution.low, distribution.high, step=distribution.step,
                                   log=distribution.log)
    if isinstance(distribution, CategoricalDistribution):
        return trial.suggest_categorical(name, distribution.choices)
    raise TypeError(f"unsupported distribution for {name!r}: {distribution!r}")


def _storage_kind(storage: Any) -> str:
    """What ``storage`` is: "memory", "object", "backend", "url" or "journal"; checks it."""
    from optuna.storages import BaseStorage
    from optuna.storages.journal import BaseJournalBackend

    if storage is None:
        return "memory"
    if isinstance(storage, BaseStorage):
        return "object"
    if isinstance(storage, BaseJournalBackend):
        return "backend"
    if isinstance(storage, str) and "://" in storage:
        return "url"
    if isinstance(storage, (str, os.PathLike)):
        if os.fspath(storage).endswith(JOURNAL_SUFFIXES):
            return "journal"
        raise ValueError(
            f"storage {storage!r} is neither a database URL (such as 'sqlite:///study.db') nor a "
            f"journal file path ending in {' or '.join(JOURNAL_SUFFIXES)}"
        )
    raise TypeError(
        "storage must be None, a database URL, a journal file path (str or os.PathLike), an "
        f"optuna storage or journal backend; got {type(storage).__name__}"
    )


def _make_storage(storage: Any) -> Any:
    """Turn ``storage`` into what :func:`optuna.create_study` takes (None: in memory)."""
    optuna = _import_optuna()
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    kind = _storage_kind(storage)
    if kind == "backend":
        return JournalStorage(storage)
    if kind == "journal":
        return JournalStorage(JournalFileBackend(os.fspath(storage)))
    if kind == "url" and storage.startswith("sqlite"):
        # SQLite locks the whole file on writes: let concurrent workers wait for the lock
        # (60 s) instead of failing after pysqlite's default 5 s.
        return optuna.storages.RDBStorage(storage, engine_kwargs={"connect_args": {"timeout": 60}})
    if kind == "url":
        return optuna.storages.RDBStorage(storage)
    return storage


def _check_positive_int(name: str, value: Any, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if not isinstance(value, Integral) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value!r}")


def tune(
    estimator: BaseNitroClassifier,
    X: Any,
    y: Any,
    *,
    n_trials: int | None = None,
    timeout: float | None = None,
    storage: Any = None,
    study_name: str | None = None,
    search_space: Mapping[str, Any] | None = None,
    max_epochs: int | None = None,
    n_iter_no_change: int | None = None,
    validation_fraction: float = 0.1,
    pruner: optuna.pruners.BasePruner | None = None,
    sampler: optuna.samplers.BaseSampler | None = None,
    random_state: int | np.random.RandomState | None = None,
    refit: bool = True,
    enqueue_estimator: bool = True,
    callbacks: Sequence[Callable[..., Any]] | None = None,
    show_progress_bar: bool = False,
) -> tuple[BaseNitroClassifier | None, optuna.study.Study]:
    """Tune a NITRO-D classifier with an Optuna study, pruning trials epoch by epoch.

    A stratified ``validation_fraction`` of ``(X, y)`` is held out once (the same split for
    every trial). Each trial clones ``estimator`` with the trial's parameters and trains it on
    the rest with :meth:`~sknitro.NitroMLPClassifier.partial_fit`, one epoch at a time (so with
    a constant ``lr_inv``); after every epoch it reports the validation accuracy
    (``trial.report(accuracy, epoch)``) and stops when the pruner says so
    (``trial.should_prune()``), when ``n_iter_no_change`` epochs brought no new best, or after
    ``max_epochs``. A trial's value is its best validation accuracy; the epoch that reached it
    is stored as the trial's user attribute ``"best_epoch"`` (and the epochs run as
    ``"n_epochs"``).

    Parameters
    ----------
    estimator : NitroMLPClassifier or NitroCNNClassifier
        The estimator to tune; its parameters outside the search space are kept.
    X : array-like of shape (n_samples, ...)
        Training data.
    y : array-like of shape (n_samples,)
        Class labels; every class needs at least 2 samples (stratified split).
    n_trials : int, default=None
        Trials this call runs (with a shared storage: this worker's trials; the study's total is
        the sum over workers). At least one of ``n_trials`` and ``timeout`` is required.
    timeout : float, default=None
        Stop starting trials after this many seconds.
    storage : None, str, os.PathLike or optuna storage, default=None
        Where the study lives. ``None``: in memory, this process only. A database URL
        (``"sqlite:///study.db"``, ``"postgresql://user:pass@host/db"``...): an
        :class:`optuna.storages.RDBStorage`. A path ending in ``.log`` or ``.journal``: an
        :class:`optuna.storages.JournalStorage` on a :class:`~optuna.storages.journal.JournalFileBackend`
        (a file on a shared file system is enough for several machines). An Optuna storage
        object is used as is (a journal backend is wrapped in a ``JournalStorage``). With a
        storage an existing study of that name is loaded, so several processes or machines
        running the same call work on one study.
    study_name : str, default=None
        Name of the study; give one to share or resume a study (None: a new unique name).
    search_space : dict of str to optuna distribution, default=None
        The parameters to tune; None: :func:`sknitro.tuning.search_space` of ``estimator``.
        Every name must be a parameter of ``estimator``.
    max_epochs : int, default=None
        Most epochs per trial; None: ``estimator.max_iter``.
    n_iter_no_change : int, default=None
        End a trial after this many epochs without a new best validation accuracy;
        None: ``estimator.n_iter_no_change``.
    validation_fraction : float, default=0.1
        Fraction of ``(X, y)`` held out to score the trials, in (0, 1).
    pruner : optuna.pruners.BasePruner, default=None
        None: ``MedianPruner(n_startup_trials=5, n_warmup_steps=w)`` with
        ``w = min(10, max(2, max_epochs // 5))``: no trial is pruned before epoch ``w`` (steps
        are epochs, from 1), since NITRO-D networks often sit at chance accuracy for an epoch or
        two before they take off.
    sampler : optuna.samplers.BaseSampler, default=None
        None: ``TPESampler``, seeded from ``random_state`` when the study is in memory. With a
        storage it is left unseeded, so that workers sharing ``random_state`` (as they should,
        for the split) do not all propose the same points; pass a sampler with a different seed
        per worker for reproducible proposals.
    random_state : int, RandomState instance or None, default=None
        Seeds the validation split (and the default in-memory sampler). Workers sharing a study
        must use the same int, so that they score trials on the same split: the split's seed is
        recorded in the study's user attributes and a worker with another one warns.
    refit : bool, default=True
        Fit a clone of ``estimator`` with the best trial's parameters on all of ``(X, y)``.
        The refit repeats the trials' training for the best trial's ``best_epoch`` epochs:
        ``max_iter=best_epoch``, ``early_stopping=False`` (the epoch count was already chosen
        on the validation split, and holding out data again would train on less),
        ``lr_plateau_factor=1`` (``partial_fit`` keeps ``lr_inv`` constant, so the trials did)
        and ``n_iter_no_change`` at least ``best_epoch`` (nothing stops it early). Calling
        ``fit`` on the result again retrains exactly this way.
    enqueue_estimator : bool, default=True
        Make the study's first trial the estimator's own values of the searched parameters
        (those inside the search space; ``lr_amp=None`` counts as ``64 * n_classes``), so the
        search starts from, and is measured against, the settings you gave (by default the
        published ones). Skipped when the shared study already has a trial with these values.
    callbacks : list of callable, default=None
        Passed to :meth:`optuna.study.Study.optimize` (for instance
        ``optuna.study.MaxTrialsCallback`` to cap a shared study's total).
    show_progress_bar : bool, default=False
        Show Optuna's progress bar.

    Returns
    -------
    best_estimator : NitroMLPClassifier or NitroCNNClassifier or None
        The refitted best estimator (None when ``refit=False``).
    study : optuna.study.Study
        The study, with every trial of every worker so far.

    Raises
    ------
    ValueError
        When neither ``n_trials`` nor ``timeout`` is given, a search-space name is not a
        parameter of ``estimator``, the storage string is neither a URL nor a journal path,
        or the loaded study minimises.
    TypeError
        When ``estimator`` is not a sknitro classifier or an argument has the wrong type.
    RuntimeError
        When ``refit`` is on and no trial completed.

    Examples
    --------
    >>> import optuna
    >>> from sklearn.datasets import load_digits
    >>> from sknitro import NitroMLPClassifier
    >>> from sknitro.tuning import tune
    >>> optuna.logging.set_verbosity(optuna.logging.WARNING)
    >>> X, y = load_digits(return_X_y=True)
    >>> best, study = tune(NitroMLPClassifier(hidden_layer_sizes=(32,), random_state=0), X, y,
    ...                    n_trials=3, max_epochs=4, random_state=0)
    >>> len(study.trials), best.n_iter_ == study.best_trial.user_attrs["best_epoch"]
    (3, True)
    """
    optuna = _import_optuna()

    # -- arguments -----------------------------------------------------------------------
    if not isinstance(estimator, BaseNitroClassifier):
        raise TypeError(f"tune needs a sknitro classifier (NitroMLPClassifier, NitroCNNClassifier), "
                        f"got {type(estimator).__name__}")
    if n_trials is None and timeout is None:
        raise ValueError("give n_trials, timeout or both: otherwise the study would never end")
    _check_positive_int("n_trials", n_trials, allow_none=True)
    if timeout is not None:
        if not isinstance(timeout, Real) or isinstance(timeout, bool):
            raise TypeError(f"timeout must be a number of seconds, got {type(timeout).__name__}")
        if not timeout > 0:
            raise ValueError(f"timeout must be > 0, got {timeout!r}")
    max_epochs = estimator.max_iter if max_epochs is None else max_epochs
    _check_positive_int("max_epochs", max_epochs)
    n_iter_no_change = estimator.n_iter_no_change if n_iter_no_change is None else n_iter_no_change
    _check_positive_int("n_iter_no_change", n_iter_no_change)
    if not isinstance(validation_fraction, Real) or isinstance(validation_fraction, bool):
        raise TypeError(f"validation_fraction must be a float, got {type(validation_fraction).__name__}")
    if not 0 < validation_fraction < 1:
        raise ValueError(f"validation_fraction must be in (0, 1), got {validation_fraction!r}")
    if pruner is not None and not isinstance(pruner, optuna.pruners.BasePruner):
        raise TypeError(f"pruner must be an optuna pruner, got {type(pruner).__name__}")
    if sampler is not None and not isinstance(sampler, optuna.samplers.BaseSampler):
        raise TypeError(f"sampler must be an optuna sampler, got {type(sampler).__name__}")
    if study_name is not None and not isinstance(study_name, str):
        raise TypeError(f"study_name must be a str, got {type(study_name).__name__}")
    space = _check_search_space(estimator, search_space)
    storage_kind = _storage_kind(storage)

    # -- the fixed validation split --------------------------------------------------------
    rng = check_random_state(random_state)
    split_seed = int(rng.randint(np.iinfo(np.int32).max))
    y_arr = np.asarray(y)
    X_train, X_val, y_train, y_val = train_test_split(
        X, y_arr, test_size=validation_fraction, random_state=split_seed, stratify=y_arr)
    classes = np.unique(y_arr)  # all of them, for partial_fit's first call

    # -- the study ---------------------------------------------------------------------------
    if sampler is None:
        seed = int(rng.randint(np.iinfo(np.int32).max)) if storage_kind == "memory" else None
        sampler = optuna.samplers.TPESampler(seed=seed)
    if pruner is None:
        pruner = optuna.pruners.MedianPruner(n_startup_trials=5,
                                             n_warmup_steps=min(10, max(2, max_epochs // 5)))
    start = _estimator_point(estimator, space, len(classes)) if enqueue_estimator else {}
    study = _open_study(storage, study_name, sampler, pruner, validation_fraction, split_seed, start)

    def objective(trial: optuna.trial.Trial) -> float:
        params = {name: _suggest(trial, name, dist) for name, dist in space.items()}
        model = clone(estimator).set_params(**params)
        best_score, best_epoch, since_best = -math.inf, 0, 0
        for epoch in range(1, max_epochs + 1):
            model.partial_fit(X_train, y_train, classes=classes)
            score = float(model.score(X_val, y_val))
            trial.report(score, epoch)
            if score > best_score:
                best_score, best_epoch, since_best = score, epoch, 0
            else:
                since_best += 1
            pruned = trial.should_prune()
            if pruned or since_best >= n_iter_no_change or epoch == max_epochs:
                break
        trial.set_user_attr("best_epoch", best_epoch)
        trial.set_user_attr("n_epochs", epoch)
        if pruned:
            raise optuna.TrialPruned(f"pruned after epoch {epoch} (validation accuracy {score:.4f})")
        return best_score

    study.optimize(objective, n_trials=n_trials, timeout=timeout, callbacks=callbacks,
                   show_progress_bar=show_progress_bar)

    if not refit:
        return None, study
    completed = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if not completed:
        raise RuntimeError(f"no trial of study {study.study_name!r} completed, nothing to refit")
    best = study.best_trial
    best_epoch = best.user_attrs.get("best_epoch")
    if best_epoch is None:
        raise RuntimeError(f"the best trial (number {best.number}) of study {study.study_name!r} was "
                           "not run by sknitro.tuning.tune: it has no 'best_epoch'")
    return _refit(estimator, best.params, int(best_epoch), X, y), study


def _check_search_space(estimator: BaseNitroClassifier, space: Mapping[str, Any] | None) -> dict[str, Any]:
    from optuna.distributions import BaseDistribution

    if space is None:
        return search_space(estimator)
    if not isinstance(space, Mapping):
        raise TypeError("search_space must be a dict of name -> optuna distribution, got "
                        f"{type(space).__name__}")
    if not space:
        raise ValueError("search_space is empty: nothing to tune")
    valid = estimator.get_params(deep=False)
    unknown = sorted(set(space) - set(valid))
    if unknown:
        raise ValueError(f"search_space has names that are not parameters of {type(estimator).__name__}: "
                         f"{unknown}; valid names are {sorted(valid)}")
    for name, dist in space.items():
        if not isinstance(dist, BaseDistribution):
            raise TypeError(f"search_space[{name!r}] must be an optuna distribution (such as "
                            f"optuna.distributions.IntDistribution), got {dist!r}")
    return dict(space)


def _open_study(storage: Any, study_name: str | None, sampler: Any, pruner: Any, fraction: float,
                split_seed: int, start: dict[str, Any]) -> optuna.study.Study:
    """Create or load the study, record the split and enqueue the starting point.

    Workers started together on a fresh SQLite or journal file would race to create the tables
    (SQLAlchemy's ``create_all`` checks, then creates) and to enqueue the same starting point:
    a lock file next to the storage file makes this setup one worker at a time. Server
    databases get a few retries instead.
    """
    optuna = _import_optuna()
    import sqlalchemy.exc

    lock_path = _storage_file(storage)
    server = lock_path is None and _storage_kind(storage) == "url"
    retry_on = (sqlalchemy.exc.SQLAlchemyError,) if server else ()
    for attempt in range(5):
        try:
            with _file_lock(lock_path):
                study = optuna.create_study(storage=_make_storage(storage), study_name=study_name,
                                            direction="maximize", sampler=sampler, pruner=pruner,
                                            load_if_exists=True)
                if study.direction != optuna.study.StudyDirection.MAXIMIZE:
                    raise ValueError(f"study {study.study_name!r} minimises; tune maximises validation "
                                     "accuracy")
                _record_split(study, fraction, split_seed)
                if start:
                    study.enqueue_trial(start, skip_if_exists=True)
                return study
        except retry_on:
            if attempt == 4:
                raise
            time.sleep(0.2 * (attempt + 1))
    raise AssertionError("unreachable")  # pragma: no cover


def _storage_file(storage: Any) -> str | None:
    """The file behind a SQLite URL or a journal path, or None."""
    kind = _storage_kind(storage)
    if kind == "journal":
        return os.fspath(storage)
    if kind == "url" and storage.startswith("sqlite"):
        from sqlalchemy.engine import make_url

        database = make_url(storage).database
        return database if database and database != ":memory:" else None
    return None


@contextlib.contextmanager
def _file_lock(path: str | None) -> Iterator[None]:
    """An inter-process lock on ``path + ".sknitro.lock"`` (nothing when ``path`` is None).

    An operating-system lock (``filelock``): it is held for as long as its holder lives,
    however slow the guarded setup, and released by the system when the holder dies. The
    lock file itself stays (removing it could let two workers lock two different files).
    Not the journal's own lock file (``path + ".lock"``), which the backend takes per write.
    """
    if path is None:
        yield
        return
    from filelock import FileLock

    with FileLock(path + ".sknitro.lock"):
        yield


def _estimator_point(estimator: BaseNitroClassifier, space: Mapping[str, Any], n_classes: int
                     ) -> dict[str, Any]:
    """The estimator's values of the searched parameters that lie in their distributions."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    params = estimator.get_params(deep=False)
    if params.get("lr_amp", 0) is None:
        params["lr_amp"] = 64 * n_classes  # what the network uses for None
    point = {}
    for name, dist in space.items():
        value = params[name]
        if isinstance(dist, CategoricalDistribution):
            inside = any(value == choice and type(value) is type(choice) for choice in dist.choices)
        elif isinstance(dist, (IntDistribution, FloatDistribution)):
            is_int = isinstance(value, Integral) and not isinstance(value, bool)
            inside = (is_int or (isinstance(dist, FloatDistribution) and isinstance(value, Real)
                                 and not isinstance(value, bool)))
            inside = inside and dist.low <= value <= dist.high
            if inside and dist.step is not None:
                steps = (value - dist.low) / dist.step
                inside = abs(steps - round(steps)) < 1e-8
        else:
            inside = False
        if inside:
            point[name] = value
    return point


def _record_split(study: optuna.study.Study, fraction: float, seed: int) -> None:
    """Record the validation split in the study; warn when it differs from an earlier worker's."""
    mine = {"validation_fraction": float(fraction), "seed": seed}
    recorded = study.user_attrs.get(_SPLIT_ATTR)
    if recorded is None:
        study.set_user_attr(_SPLIT_ATTR, mine)
    elif recorded != mine:
        warnings.warn(
            f"study {study.study_name!r} was scored on another validation split ({recorded}) than "
            f"this call's ({mine}): trial values are not comparable; give every worker the same "
            "int random_state and validation_fraction", UserWarning, stacklevel=3)


def _refit(estimator: BaseNitroClassifier, params: dict[str, Any], n_epochs: int, X: Any, y: Any
           ) -> BaseNitroClassifier:
    """``fit`` a clone with ``params`` for exactly ``n_epochs`` epochs, as the trials trained."""
    model = clone(estimator).set_params(
        **params, max_iter=n_epochs, early_stopping=False, lr_plateau_factor=1,
        n_iter_no_change=max(n_epochs, estimator.n_iter_no_change))
    with warnings.catch_warnings():
        # reaching max_iter is the point here, not a failure to converge
        warnings.simplefilter("ignore", ConvergenceWarning)
        return model.fit(X, y)
