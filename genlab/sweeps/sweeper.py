"""Hydra's Optuna sweeper on a persistent study: a rerun continues it, parallel workers share it.

Differences from ``hydra_optuna_sweeper`` (whose search-space parsing and trial configuration are reused):

* ``n_trials`` is the size the study should reach, not the number to add: a rerun of the same command runs only
  the missing trials (see :mod:`genlab.sweeps.study` for what counts), and parallel workers stop together.
* Trial ``N`` runs in ``<sweep dir>/N/`` (``hydra.sweep.subdir``), so a rerun or a second worker never
  overwrites another trial's folder and a folder's number is the trial's number in the study.
* Heartbeats: a trial whose worker was killed turns FAIL after ``grace_period`` seconds and is replaced.
* Ctrl+C / SIGTERM: the running trials are recorded as interrupted (replaced on rerun), the search stops.
* A rerun or a second worker reseeds the sampler at random: the configured seed would replay the values of the
  study's first trials (a fresh study with one worker keeps the seed, so it stays reproducible).
"""

from __future__ import annotations

import functools
import logging
import sys
import warnings
from typing import Any

import optuna
from hydra.core.utils import JobReturn
from hydra_plugins.hydra_optuna_sweeper._impl import OptunaSweeperImpl, create_params_from_overrides
from omegaconf import OmegaConf

from genlab.callbacks.interrupt import Interrupted
from genlab.checks import ConfigError
from genlab.sweeps.study import (
    display_url,
    fail_interrupted,
    fail_with_error,
    heartbeats,
    open_storage,
    state_counts,
    trials_done,
)

log = logging.getLogger(__name__)


def _values(ret: JobReturn, n_objectives: int) -> list[float]:
    """The job's return value as a list of ``n_objectives`` floats (re-raises the job's exception)."""
    value = ret.return_value
    values = [value] if n_objectives == 1 else list(value)
    if len(values) != n_objectives or any(v is None for v in values):
        raise ValueError(f"the job returned {value!r}; expected {n_objectives} number(s) (optimized_metric missing?)")
    return [float(v) for v in values]


class PersistentSweeperImpl(OptunaSweeperImpl):
    """The sweep loop over a persistent study (see the module docstring)."""

    def __init__(self, *args: Any, heartbeat_interval: int, grace_period: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.heartbeat_interval = heartbeat_interval
        self.grace_period = grace_period

    def _search_space(self, arguments: list[str]) -> tuple[dict[str, Any], dict[str, Any]]:
        """(distributions, fixed values) from ``hydra.sweeper.params`` and the command line."""
        self._process_searchspace_config()
        distributions, fixed = create_params_from_overrides([*self._parse_sweeper_params_config(), *arguments])
        if self.search_space_distributions:
            distributions = {**self.search_space_distributions, **distributions}
        return {k: v for k, v in distributions.items() if k not in fixed}, fixed

    def _open_study(self) -> tuple[optuna.Study, optuna.storages.RDBStorage | None]:
        if isinstance(self.sampler, functools.partial):  # GridSampler needs the search space first
            raise ConfigError("hydra/sweeper/sampler=grid is not supported by genlab_optuna: use the basic sweeper "
                              "(comma-separated values) for grids")
        if self.storage is not None and not self.study_name:
            raise ConfigError("hydra.sweeper.study_name=null is not accepted with a storage: expected a name, "
                              "which a rerun uses to find the study")
        storage = open_storage(self.storage, self.heartbeat_interval, self.grace_period)
        directions = self._get_directions()
        study = optuna.create_study(study_name=self.study_name, storage=storage, sampler=self.sampler,
                                    directions=directions, load_if_exists=True)
        stored = [d.name.lower() for d in study.directions]
        if stored != [d.lower() for d in directions]:
            raise ConfigError(f"hydra.sweeper.direction={directions} is not accepted: study {study.study_name!r} "
                              f"in {display_url(self.storage)} was created with {stored}; use another study_name")
        if storage is not None:
            with warnings.catch_warnings():  # experimental in optuna 2.10, stable API from 3.0
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                optuna.storages.fail_stale_trials(study)  # trials of workers that died
        return study, storage

    def sweep(self, arguments: list[str]) -> None:
        """Ask, launch and tell batches of ``n_jobs`` trials until the study holds ``n_trials`` that count."""
        distributions, fixed = self._search_space(list(arguments))
        study, storage = self._open_study()
        n_objectives = len(study.directions)
        done = trials_done(study)
        log.info("Study %s in %s: %d of %d trials done %s", study.study_name, display_url(self.storage), done,
                 self.n_trials, state_counts(study))
        first_batch = True
        while (to_go := self.n_trials - trials_done(study)) > 0:
            trials = [study.ask() for _ in range(min(to_go, self.n_jobs))]
            try:
                with heartbeats(storage, study, trials):
                    if first_batch and trials[0].number > 0:
                        # A rerun or a second worker: the configured seed would replay the first trials' values.
                        self.sampler.reseed_rng()
                    first_batch = False
                    overrides = [
                        (*job, f"hydra.sweep.subdir={trial.number}")
                        for job, trial in zip(self._configure_trials(trials, distributions, fixed), trials)
                    ]
                    for trial in trials:
                        log.info("Trial %d: %s", trial.number, trial.params)
                    returns = self.launcher.launch(overrides, initial_job_idx=trials[0].number)
            except BaseException as err:  # Ctrl+C between runs, SIGTERM turned into SystemExit, a launcher crash
                fail_interrupted(study, trials, f"{type(err).__name__}: {err}")
                raise
            self._tell(study, trials, returns, n_objectives)
        log.info("Study %s: %s", study.study_name, state_counts(study))
        self._write_results(study)

    def _tell(self, study: optuna.Study, trials: list[optuna.Trial], returns: list[JobReturn],
              n_objectives: int) -> None:
        failures: list[BaseException] = []
        interrupted: Interrupted | None = None
        for trial, ret in zip(trials, returns):
            try:
                study.tell(trial, values=_values(ret, n_objectives))
            except Interrupted as err:
                fail_interrupted(study, [trial], str(err))
                interrupted = err
            except Exception as err:
                fail_with_error(study, trial, err)
                log.warning("Failed experiment: %s", err)
                failures.append(err)
        if interrupted is not None:
            log.error("Search interrupted: trial(s) %s recorded as interrupted; rerun the same command to continue",
                      [t.number for t in trials])
            sys.exit(interrupted.exit_code)
        if failures and len(failures) / len(returns) > self.max_failure_rate:
            log.error("%d of %d trials failed with max_failure_rate=%s", len(failures), len(returns),
                      self.max_failure_rate)
            raise failures[0]

    def _write_results(self, study: optuna.Study) -> None:
        """``<sweep dir>/optimization_results.yaml``: the best trial(s) so far, as Hydra's sweeper writes it."""
        complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        if not complete:
            log.warning("Study %s has no complete trial: no optimization_results.yaml", study.study_name)
            return
        results: dict[str, Any] = {"name": "optuna", "study_name": study.study_name,
                                   "storage": display_url(self.storage)}
        if len(study.directions) == 1:
            best = study.best_trial
            results.update(best_trial=best.number, best_params=best.params, best_value=best.value)
            log.info("Best trial %d: value %s, parameters %s", best.number, best.value, best.params)
        else:
            results["solutions"] = [{"trial": t.number, "params": t.params, "values": t.values}
                                    for t in study.best_trials]
        OmegaConf.save(OmegaConf.create(results), f"{self.config.hydra.sweep.dir}/optimization_results.yaml")
