"""The study side of a persistent search: open its storage, count what is done, keep its trials' heartbeats.

A trial ends in one of three ways and only the first two count towards ``n_trials``:
COMPLETE (or PRUNED); FAIL with an ``error`` user attribute (the run raised: bad values, a diverged loss);
FAIL without it (the run was interrupted: Ctrl+C/SIGTERM, or its worker died and the heartbeat went stale),
which a rerun replaces by a new trial. RUNNING trials of live workers count too, so that parallel workers
stop together at ``n_trials``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, Trial, TrialState
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from genlab.checks import ConfigError, positive_int

log = logging.getLogger(__name__)

ERROR_ATTR = "error"  # user attribute of a trial whose run raised: the exception, one line
INTERRUPTED_ATTR = "interrupted"  # user attribute of a trial stopped by a signal: its message
STORAGE_ATTEMPTS = 5


def display_url(url: str | None) -> str:
    """``url`` with any password masked (``postgresql://user:***@host/db``), for logs and result files."""
    if url is None:
        return "memory"
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL: open_storage reports it
        return str(url)


def open_storage(url: str | None, heartbeat_interval: int, grace_period: int) -> optuna.storages.RDBStorage | None:
    """An RDB storage at ``url`` with heartbeats (a dead worker's trial turns FAIL after ``grace_period`` s);
    None (in memory) for ``url=None``. A SQLite file's folder is created, and SQLite waits for locks
    held by parallel workers instead of failing at once."""
    if url is None:
        return None
    if not isinstance(url, str) or "://" not in url:
        raise ConfigError(
            f"hydra.sweeper.storage={url!r} is not accepted: expected null (in memory) or a database URL "
            "such as sqlite:///path/to/study.db or postgresql://user@host/db"
        )
    positive_int("hydra.sweeper.heartbeat_interval", heartbeat_interval)
    positive_int("hydra.sweeper.grace_period", grace_period)
    engine_kwargs: dict[str, Any] = {}
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        engine_kwargs["connect_args"] = {"timeout": 60}
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(STORAGE_ATTEMPTS):
        try:
            return optuna.storages.RDBStorage(
                url, engine_kwargs=engine_kwargs, heartbeat_interval=heartbeat_interval, grace_period=grace_period
            )
        except SQLAlchemyError as err:
            # Workers started together on a new database race to create its tables: the loser's INSERT of the
            # schema version fails (UNIQUE constraint); the tables exist by its next try.
            if attempt == STORAGE_ATTEMPTS - 1:
                raise
            log.info("storage %s not ready (%s); retrying", url, type(err).__name__)
            time.sleep(1.0 + attempt)
    raise AssertionError("unreachable")


def counts_towards_n_trials(trial: FrozenTrial) -> bool:
    """True for finished or running trials; False for interrupted ones (FAIL without an ``error`` attribute)."""
    if trial.state == TrialState.FAIL:
        return ERROR_ATTR in trial.user_attrs
    return True


def trials_done(study: optuna.Study) -> int:
    """The number of the study's trials that count towards ``n_trials`` (see the module docstring)."""
    return sum(counts_towards_n_trials(t) for t in study.get_trials(deepcopy=False))


def state_counts(study: optuna.Study) -> dict[str, int]:
    """How many trials are in each state, interrupted FAILs apart: e.g. {"COMPLETE": 3, "interrupted": 1}."""
    counts: dict[str, int] = {}
    for trial in study.get_trials(deepcopy=False):
        key = trial.state.name if counts_towards_n_trials(trial) else "interrupted"
        counts[key] = counts.get(key, 0) + 1
    return counts


def fail_interrupted(study: optuna.Study, trials: Sequence[Trial], message: str) -> None:
    """Record ``trials`` (still RUNNING) as FAIL with the ``interrupted`` attribute: a rerun replaces them."""
    for trial in trials:
        trial.set_user_attr(INTERRUPTED_ATTR, message)
        study.tell(trial, state=TrialState.FAIL)


def fail_with_error(study: optuna.Study, trial: Trial, error: BaseException) -> None:
    """Record ``trial`` as FAIL with the ``error`` attribute (the run's exception): it counts as done."""
    trial.set_user_attr(ERROR_ATTR, f"{type(error).__name__}: {error}")
    study.tell(trial, state=TrialState.FAIL)


@contextmanager
def heartbeats(storage: optuna.storages.RDBStorage | None, study: optuna.Study,
               trials: Sequence[Trial]) -> Iterator[None]:
    """Record a heartbeat for each of ``trials`` now and every ``heartbeat_interval`` s until the block ends.

    Another worker (or a rerun) fails a RUNNING trial whose heartbeat is older than the grace period, so a
    killed worker's trials do not stay RUNNING for ever. Optuna's own heartbeat lives inside
    ``study.optimize``, which a Hydra sweeper does not use (it asks, launches and tells).
    """
    if storage is None:
        yield
        return
    study_id = storage.get_study_id_from_name(study.study_name)
    ids = [storage.get_trial_id_from_study_id_trial_number(study_id, t.number) for t in trials]
    stop = threading.Event()

    def beat_all() -> None:
        for trial_id in ids:
            try:
                storage.record_heartbeat(trial_id)
            except Exception as err:  # a locked database now and then must not kill the search
                log.warning("heartbeat of trial id %d not recorded: %s", trial_id, err)

    def beat() -> None:
        while not stop.wait(storage.get_heartbeat_interval() or 1):
            beat_all()

    beat_all()  # at once: a trial without any heartbeat is never found stale
    thread = threading.Thread(target=beat, name="optuna-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
