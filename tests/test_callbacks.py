"""The ``callbacks`` parameter: one call per epoch with its record, stopping, errors undoing
the epoch, parameter checks, cloning and pickling; and sknitro.callbacks.TimeLimit."""

import pickle
import warnings

import numpy as np
import pytest
from conftest import weights_equal
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning, NotFittedError

from sknitro import NitroCNNClassifier, NitroMLPClassifier
from sknitro.callbacks import TimeLimit

SMALL = dict(hidden_layer_sizes=(16,), random_state=0)


def _all_weights(clf):
    return clf.weights_ + clf.head_weights_


def _fit_quietly(clf, X, y):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return clf.fit(X, y)


def stop_after(epoch):
    """A callback that asks to stop once ``epoch`` epochs have finished."""
    return lambda estimator, record: record["epoch"] >= epoch


def keep_going(estimator, record):  # module level: picklable
    return None


class Failure(Exception):
    pass


def fail_at(epoch):
    def callback(estimator, record):
        if record["epoch"] == epoch:
            raise Failure(f"epoch {epoch}")
    return callback


# -- what callbacks see ----------------------------------------------------------------------

@pytest.mark.parametrize("early_stopping", [False, True])
def test_one_call_per_epoch_with_its_record(digits_small, early_stopping):
    X, y = digits_small
    calls = []
    clf = _fit_quietly(NitroMLPClassifier(max_iter=4, early_stopping=early_stopping, **SMALL,
                                          callbacks=lambda est, record: calls.append((est, record))), X, y)
    assert [record["epoch"] for _, record in calls] == [1, 2, 3, 4]
    assert all(est is clf for est, _ in calls)
    # the very dicts of history_, complete when the callback sees them
    assert all(record is kept for (_, record), kept in zip(calls, clf.history_))
    assert [record["lr_inv"] for _, record in calls] == [256] * 4
    if early_stopping:
        assert [record["validation_accuracy"] for _, record in calls] == clf.validation_scores_
    else:
        assert all("validation_accuracy" not in record for _, record in calls)
    elapsed = [record["elapsed"] for _, record in calls]
    assert elapsed == sorted(elapsed) and all(r["elapsed"] >= r["seconds"] > 0 for _, r in calls)


def test_callbacks_run_in_order_and_may_add_to_the_record(digits_small):
    X, y = digits_small
    order = []

    def first(est, record):
        order.append(("first", record["epoch"]))
        record["doubled"] = 2 * record["epoch"]

    def second(est, record):
        order.append(("second", record["doubled"]))

    clf = _fit_quietly(NitroMLPClassifier(max_iter=2, callbacks=(first, second), **SMALL), X, y)
    assert order == [("first", 1), ("second", 2), ("first", 2), ("second", 4)]
    assert [r["doubled"] for r in clf.history_] == [2, 4]


def test_callback_may_score_the_model_being_trained(digits_small):
    X, y = digits_small
    scores = []
    clf = _fit_quietly(NitroMLPClassifier(max_iter=3, callbacks=lambda est, r: scores.append(est.score(X, y)),
                                          **SMALL), X, y)
    reference = _fit_quietly(NitroMLPClassifier(max_iter=3, **SMALL), X, y)
    assert weights_equal(_all_weights(clf), _all_weights(reference))  # scoring changes nothing
    assert scores[-1] == clf.score(X, y) and len(scores) == 3


def test_partial_fit_calls_back_and_ignores_a_stop(digits_small):
    X, y = digits_small
    epochs = []
    clf = NitroMLPClassifier(**SMALL, callbacks=lambda est, record: epochs.append(record["epoch"]) or True)
    for _ in range(3):
        clf.partial_fit(X, y, classes=np.unique(y))
    assert epochs == [1, 2, 3] and clf.n_iter_ == 3


# -- stopping ----------------------------------------------------------------------------------

@pytest.mark.parametrize("early_stopping", [False, True])
def test_stop_after_two_epochs_is_max_iter_two(digits_small, early_stopping):
    X, y = digits_small
    params = dict(early_stopping=early_stopping, n_iter_no_change=50, **SMALL)
    reference = _fit_quietly(NitroMLPClassifier(max_iter=2, **params), X, y)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)  # a requested stop is not a failure to converge
        stopped = NitroMLPClassifier(max_iter=50, callbacks=stop_after(2), **params).fit(X, y)
    assert stopped.n_iter_ == 2 and len(stopped.history_) == 2
    assert weights_equal(_all_weights(stopped), _all_weights(reference))
    assert stopped.lr_inv_ == reference.lr_inv_ and stopped.t_ == reference.t_
    assert stopped.loss_curve_ == reference.loss_curve_
    assert stopped.validation_scores_ == reference.validation_scores_
    assert stopped.best_validation_score_ == reference.best_validation_score_
    np.testing.assert_array_equal(stopped.decision_function(X), reference.decision_function(X))


def test_stop_keeps_the_best_validated_model(digits_small):
    X, y = digits_small
    params = dict(early_stopping=True, lr_inv=128, n_iter_no_change=50, **SMALL)
    stopped = NitroMLPClassifier(max_iter=50, callbacks=stop_after(14), **params).fit(X, y)
    best_epoch = int(np.argmax(stopped.validation_scores_)) + 1
    assert best_epoch < 14  # (epoch 12 here) so the kept model is not the last epoch's
    best = _fit_quietly(NitroMLPClassifier(max_iter=best_epoch, **params), X, y)
    assert stopped.n_iter_ == 14 and stopped.best_validation_score_ == max(stopped.validation_scores_)
    assert weights_equal(_all_weights(stopped), _all_weights(best))


def test_every_callback_runs_before_the_stop(digits_small):
    X, y = digits_small
    seen = []
    clf = NitroMLPClassifier(max_iter=10, callbacks=[stop_after(1), lambda est, r: seen.append(r["epoch"])],
                             **SMALL).fit(X, y)
    assert clf.n_iter_ == 1 and seen == [1]


@pytest.mark.parametrize("answer, stops", [
    (True, True), (np.True_, True), (np.bool_(False), False), (False, False), (None, False),
    (1, False), ("yes", False), ([0], False),  # only a bool stops: no accidental stop
])
def test_only_a_true_bool_stops(digits_small, answer, stops):
    X, y = digits_small
    clf = _fit_quietly(NitroMLPClassifier(max_iter=3, callbacks=lambda est, r: answer, **SMALL), X, y)
    assert clf.n_iter_ == (1 if stops else 3)


def test_warm_start_fit_stops_again(digits_small):
    X, y = digits_small
    clf = NitroMLPClassifier(max_iter=10, warm_start=True, **SMALL,
                             callbacks=lambda est, record: record["epoch"] % 2 == 0)
    clf.fit(X, y)
    clf.fit(X, y)
    assert clf.n_iter_ == 4 and [r["epoch"] for r in clf.history_] == [1, 2, 3, 4]
    reference = _fit_quietly(NitroMLPClassifier(max_iter=4, **SMALL), X, y)
    assert weights_equal(_all_weights(clf), _all_weights(reference))


def test_cnn_takes_callbacks(digits_small):
    X, y = digits_small
    params = dict(architecture=(4, "M"), hidden_layer_sizes=(), random_state=0)
    records = []

    def callback(est, record):
        records.append(record["epoch"])
        return record["epoch"] == 2

    stopped = NitroCNNClassifier(max_iter=5, callbacks=callback, **params).fit(X, y)
    reference = _fit_quietly(NitroCNNClassifier(max_iter=2, **params), X, y)
    assert records == [1, 2] and stopped.n_iter_ == 2
    assert weights_equal(_all_weights(stopped), _all_weights(reference))


# -- errors ------------------------------------------------------------------------------------

def test_error_in_first_epoch_leaves_a_new_model_unfitted(digits_small):
    X, y = digits_small
    clf = NitroMLPClassifier(max_iter=5, callbacks=fail_at(1), **SMALL)
    with pytest.raises(Failure, match="epoch 1"):
        clf.fit(X, y)
    with pytest.raises(NotFittedError):
        clf.predict(X)
    assert not hasattr(clf, "history_") and not hasattr(clf, "n_iter_")
    clf.set_params(callbacks=None)
    refit = _fit_quietly(clf, X, y)  # and it fits again from scratch, as a new estimator would
    fresh = _fit_quietly(NitroMLPClassifier(max_iter=5, **SMALL), X, y)
    assert weights_equal(_all_weights(refit), _all_weights(fresh))


@pytest.mark.parametrize("early_stopping", [False, True])
def test_error_in_a_later_epoch_keeps_the_previous_epoch(digits_small, early_stopping):
    X, y = digits_small
    params = dict(early_stopping=early_stopping, **SMALL)
    clf = NitroMLPClassifier(max_iter=5, callbacks=fail_at(3), **params)
    with pytest.raises(Failure):
        clf.fit(X, y)
    reference = _fit_quietly(NitroMLPClassifier(max_iter=2, **params), X, y)
    assert clf.n_iter_ == 2 and [r["epoch"] for r in clf.history_] == [1, 2]
    assert len(clf.loss_curve_) == 2 and clf.t_ == reference.t_
    assert clf.validation_scores_ == reference.validation_scores_
    if not early_stopping:  # (with it, the reference restores its best epoch, which may be the first)
        assert weights_equal(_all_weights(clf), _all_weights(reference))
    # the RNG is back too: one more epoch is the third epoch of an uninterrupted run
    clf.set_params(callbacks=None, warm_start=True, max_iter=1, early_stopping=False)
    _fit_quietly(clf, X, y)
    if not early_stopping:
        three = _fit_quietly(NitroMLPClassifier(max_iter=3, **params), X, y)
        assert weights_equal(_all_weights(clf), _all_weights(three))


def test_error_in_a_warm_start_fit_keeps_the_previous_fit(digits_small):
    X, y = digits_small
    clf = _fit_quietly(NitroMLPClassifier(max_iter=2, warm_start=True, **SMALL), X, y)
    before = [w.copy() for w in _all_weights(clf)]  # weights_ are the live arrays
    clf.set_params(callbacks=fail_at(3))
    with pytest.raises(Failure):
        clf.fit(X, y)
    assert clf.n_iter_ == 2 and weights_equal(_all_weights(clf), before)
    clf.predict(X)


def test_keyboard_interrupt_in_a_callback_keeps_the_last_finished_epoch(digits_small):
    X, y = digits_small

    def interrupt(est, record):
        if record["epoch"] == 3:
            raise KeyboardInterrupt

    clf = NitroMLPClassifier(max_iter=5, callbacks=interrupt, **SMALL)
    with pytest.warns(UserWarning, match="keeping the model of epoch 2"):
        clf.fit(X, y)
    reference = _fit_quietly(NitroMLPClassifier(max_iter=2, **SMALL), X, y)
    assert clf.n_iter_ == 2 and len(clf.history_) == 2
    assert weights_equal(_all_weights(clf), _all_weights(reference))


@pytest.mark.parametrize("callbacks, error, message", [
    (3, (TypeError, ValueError), "'callbacks' parameter"),
    ("print", (TypeError, ValueError), "'callbacks' parameter"),
    ({"a": print}, (TypeError, ValueError), "'callbacks' parameter"),
    ([print, 3], TypeError, r"callbacks\[1\] must be a callable"),
    ((None,), TypeError, r"callbacks\[0\] must be a callable"),
])
def test_invalid_callbacks_raise_naming_the_parameter(digits_small, callbacks, error, message):
    X, y = digits_small
    clf = NitroMLPClassifier(max_iter=1, callbacks=callbacks)
    with pytest.raises(error, match=message):
        clf.fit(X, y)
    with pytest.raises(error, match=message):
        clf.partial_fit(X, y, classes=np.unique(y))
    with pytest.raises(NotFittedError):
        clf.predict(X)


def test_invalid_callbacks_on_a_later_partial_fit(digits_small):
    X, y = digits_small
    clf = NitroMLPClassifier(**SMALL).partial_fit(X, y, classes=np.unique(y))
    clf.set_params(callbacks=[keep_going, "not callable"])
    with pytest.raises(TypeError, match=r"callbacks\[1\]"):
        clf.partial_fit(X, y)
    assert clf.n_iter_ == 1


# -- parameters, clone, pickling ---------------------------------------------------------------

def test_get_params_and_clone():
    limit = TimeLimit(5)
    clf = NitroMLPClassifier(callbacks=[keep_going, limit])
    assert clf.get_params()["callbacks"] == [keep_going, limit]
    copy = clone(clf).get_params()["callbacks"]
    # clone deep-copies objects (a fresh TimeLimit per fit of a search), not functions
    assert copy[0] is keep_going and copy[1] is not limit and copy[1].seconds == 5
    assert clone(NitroCNNClassifier(callbacks=keep_going)).callbacks is keep_going
    assert "callbacks=TimeLimit(5)" in repr(NitroMLPClassifier(callbacks=TimeLimit(5)))


def test_pickling_with_callbacks(digits_small):
    X, y = digits_small
    clf = _fit_quietly(NitroMLPClassifier(max_iter=2, callbacks=[keep_going, TimeLimit(60)], **SMALL), X, y)
    loaded = pickle.loads(pickle.dumps(clf))
    assert loaded.callbacks[0] is keep_going and loaded.callbacks[1].seconds == 60
    np.testing.assert_array_equal(loaded.decision_function(X), clf.decision_function(X))
    # a lambda cannot be pickled, as anywhere in Python; without the callbacks the model can
    clf.set_params(callbacks=lambda est, record: None)
    with pytest.raises((pickle.PicklingError, AttributeError)):
        pickle.dumps(clf)
    loaded = pickle.loads(pickle.dumps(clf.set_params(callbacks=None)))
    np.testing.assert_array_equal(loaded.decision_function(X), clf.decision_function(X))


# -- TimeLimit ---------------------------------------------------------------------------------

def _records(*elapsed, seconds=1.0, first_epoch=1):
    return [{"epoch": first_epoch + i, "elapsed": e, "seconds": seconds} for i, e in enumerate(elapsed)]


def test_time_limit_rule():
    est = object()
    limit = TimeLimit(10)
    # 3 s per epoch: after epoch 3 (9 s), a fourth would end at 12 s
    assert [limit(est, r) for r in _records(3, 6, 9)] == [False, False, True]
    late = TimeLimit(10, anticipate=False)
    assert [late(est, r) for r in _records(3, 6, 9, 12)] == [False, False, False, True]
    # a new fit (epochs start again) measures its first epoch from its start
    assert [limit(est, r) for r in _records(4, 8)] == [False, True]
    # an epoch lasts at least its training seconds, whatever the clock differences say
    assert TimeLimit(10)(est, _records(7, seconds=4)[0]) is True
    assert TimeLimit(0)(est, _records(0.5)[0]) is True


def test_time_limit_stops_a_fit(digits_small):
    X, y = digits_small
    clf = NitroMLPClassifier(max_iter=100, callbacks=TimeLimit(0.001), **SMALL).fit(X, y)
    assert clf.n_iter_ == 1
    budget = 0.5
    clf = NitroMLPClassifier(max_iter=100_000, n_iter_no_change=100_000, callbacks=TimeLimit(budget),
                             **SMALL).fit(X, y)
    assert 1 < clf.n_iter_ < 100_000
    # every epoch but the last ended with room for another one at its pace
    assert all(r["elapsed"] < budget for r in clf.history_[:-1])


@pytest.mark.parametrize("seconds, error", [(-1, ValueError), (float("nan"), ValueError),
                                            ("10", TypeError), (True, TypeError), (None, TypeError)])
def test_time_limit_checks_its_budget(seconds, error):
    with pytest.raises(error, match="seconds"):
        TimeLimit(seconds)
    with pytest.raises(TypeError, match="anticipate"):
        TimeLimit(1, anticipate="no")
