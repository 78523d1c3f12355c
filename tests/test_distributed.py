"""Scale-out through joblib's Dask backend: the same scores on a cluster as on one core.

sknitro's training is bit-for-bit reproducible from ``random_state`` and its estimators pickle
and clone, so a search sent to Dask workers (separate processes) must give exactly, not
approximately, the scores of the same search run sequentially.
"""

from __future__ import annotations

import logging
import pickle

import joblib
import numpy as np
import pytest
from dask.distributed import Client, LocalCluster, get_task_stream
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV, StratifiedKFold, cross_val_score

from conftest import weights_equal
from sknitro import NitroCNNClassifier, NitroMLPClassifier

# short trainings on purpose: reaching max_iter is expected
pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

CV = StratifiedKFold(3, shuffle=True, random_state=0)
GRID = {"lr_inv": [128, 256], "hidden_layer_sizes": [(16,), (32,)]}


@pytest.fixture(scope="module")
def client():
    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                           dashboard_address=None, silence_logs=logging.ERROR)
    try:
        with Client(cluster) as dask_client:
            yield dask_client
    finally:
        cluster.close()


def scores_of(results: dict) -> dict:
    return {key: value for key, value in results.items()
            if key.startswith("split") and key.endswith("_test_score") or key == "mean_test_score"}


def test_grid_search_on_dask_equals_sequential(client, digits):
    X, y = digits
    estimator = NitroMLPClassifier(max_iter=4, random_state=0)
    sequential = GridSearchCV(estimator, GRID, cv=CV, n_jobs=1).fit(X, y)
    with get_task_stream(client) as tasks, joblib.parallel_config(backend="dask"):
        on_dask = GridSearchCV(estimator, GRID, cv=CV, n_jobs=-1).fit(X, y)

    assert len(tasks.data) > 0  # the fits ran on the cluster's workers
    assert {task["worker"] for task in tasks.data} <= set(client.scheduler_info()["workers"])
    assert on_dask.cv_results_["params"] == sequential.cv_results_["params"]
    expected, got = scores_of(sequential.cv_results_), scores_of(on_dask.cv_results_)
    assert sorted(got) == sorted(expected) == ["mean_test_score"] + [f"split{i}_test_score" for i in range(3)]
    for key in expected:
        assert np.array_equal(got[key], expected[key]), key  # exactly equal, not approximately
    assert on_dask.best_params_ == sequential.best_params_
    assert weights_equal(on_dask.best_estimator_.weights_, sequential.best_estimator_.weights_)
    assert sequential.best_score_ > 0.9  # the search learned something worth distributing


def test_cnn_cross_val_score_on_dask_equals_sequential(client, digits):
    X, y = digits
    images = X.reshape(-1, 1, 8, 8)
    estimator = NitroCNNClassifier(architecture=[8, "M"], max_iter=3, random_state=0)
    sequential = cross_val_score(estimator, images, y, cv=CV, n_jobs=1)
    with joblib.parallel_config(backend="dask"):
        on_dask = cross_val_score(estimator, images, y, cv=CV, n_jobs=-1)
    assert np.array_equal(on_dask, sequential)
    assert sequential.mean() > 0.85  # measured: 0.907, 0.883, 0.881 after 3 epochs


def test_estimators_travel_to_workers_and_back(client, digits):
    """What Dask does with an estimator: clone it, pickle it, train or predict in another
    process, and send the fitted one back, without changing a bit."""
    X, y = digits
    X, y = X[:600], y[:600]
    estimator = NitroMLPClassifier(hidden_layer_sizes=(16,), max_iter=3, random_state=0)
    assert clone(estimator).get_params() == estimator.get_params()
    local = clone(estimator).fit(X, y)

    restored = pickle.loads(pickle.dumps(local))
    assert weights_equal(restored.weights_, local.weights_)
    assert np.array_equal(restored.predict(X), local.predict(X))

    remote = client.submit(clone(estimator).fit, X, y).result()  # trained in a worker process
    assert weights_equal(remote.weights_, local.weights_)
    assert np.array_equal(client.submit(local.predict, X).result(), local.predict(X))
