"""Ready-made training callbacks for the ``callbacks`` parameter of the estimators.

A callback is any callable ``callback(estimator, record) -> bool | None``, called at the end
of every epoch of ``fit`` and ``partial_fit`` with the estimator and the epoch's record (the
dict appended to ``history_``). Returning ``True`` ends ``fit`` after that epoch, as early
stopping would (see :class:`sknitro.NitroMLPClassifier`). A plain function will do for
most needs; this module holds the ones worth sharing.
"""

from __future__ import annotations

from numbers import Real
from typing import Any

__all__ = ["TimeLimit"]


class TimeLimit:
    """Stop ``fit`` when a wall-clock budget is spent.

    The clock is the record's ``elapsed``: wall seconds since training began in this ``fit``
    call (input checks and encoding come before it), up to the end of the epoch, validation
    included. At least one epoch always runs, since callbacks are called after epochs.

    Parameters
    ----------
    seconds : float
        The budget, in seconds (at least 0).
    anticipate : bool, default=True
        Also stop when one more epoch, at the pace of the last one (training, validation and
        callbacks), would end past the budget: training then ends within it as long as the
        epochs keep their pace and the first does not overrun it alone. With ``False``,
        training stops after the first epoch that ends past the budget, and so overruns it
        by less than an epoch.

    Notes
    -----
    The pace is the time between the calls for two successive epochs of one ``fit`` (for
    its first epoch: the whole ``elapsed``), never less than the epoch's training
    ``seconds``. A ``TimeLimit`` may serve several fits, and ``clone`` (a grid search)
    copies it. ``partial_fit`` trains one epoch per call and ignores the answer.

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from sknitro import NitroMLPClassifier
    >>> from sknitro.callbacks import TimeLimit
    >>> X, y = load_digits(return_X_y=True)
    >>> clf = NitroMLPClassifier(max_iter=100, callbacks=TimeLimit(0.001), random_state=0)
    >>> clf.fit(X, y).n_iter_  # the first epoch already took more than a millisecond
    1
    """

    def __init__(self, seconds: float, *, anticipate: bool = True) -> None:
        if isinstance(seconds, bool) or not isinstance(seconds, Real):
            raise TypeError(f"seconds must be a number, got {type(seconds).__name__}: {seconds!r}")
        if not seconds >= 0:  # NaN too
            raise ValueError(f"seconds must be at least 0, got {seconds!r}")
        if not isinstance(anticipate, bool):
            raise TypeError(f"anticipate must be a bool, got {type(anticipate).__name__}: {anticipate!r}")
        self.seconds = seconds
        self.anticipate = anticipate
        self._last: tuple[int, int, float] | None = None  # estimator id, epoch, elapsed of the last call

    def __call__(self, estimator: Any, record: dict) -> bool:
        """Whether to stop after the epoch of ``record`` (its ``elapsed`` and ``seconds``)."""
        elapsed, epoch = record["elapsed"], record["epoch"]
        last, self._last = self._last, (id(estimator), epoch, elapsed)
        if elapsed >= self.seconds:
            return True
        if not self.anticipate:
            return False
        same_fit = last is not None and last[:2] == (id(estimator), epoch - 1) and last[2] < elapsed
        pace = elapsed - last[2] if same_fit else elapsed  # a fit's first epoch: since the start
        # an epoch lasts at least its training; this also covers a fit taken for the last one's
        return elapsed + max(pace, record["seconds"]) > self.seconds

    def __repr__(self) -> str:
        return f"TimeLimit({self.seconds!r}" + ("" if self.anticipate else ", anticipate=False") + ")"
