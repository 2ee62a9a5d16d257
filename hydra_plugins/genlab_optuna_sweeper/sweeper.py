"""The Hydra plugin entry of ``hydra/sweeper=genlab_optuna`` (Hydra loads plugins only from ``hydra_plugins``).

The logic lives in :mod:`genlab.sweeps`; this class only adds the heartbeat settings to Hydra's OptunaSweeper.
"""

from __future__ import annotations

from typing import Any

from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper
from omegaconf import DictConfig


class PersistentOptunaSweeper(OptunaSweeper):
    """Hydra's Optuna sweeper on a persistent study (storage URL + study_name): rerun = continue, workers share."""

    def __init__(self, sampler: Any, direction: Any, storage: str | None, study_name: str | None, n_trials: int,
                 n_jobs: int, max_failure_rate: float, search_space: DictConfig | None,
                 custom_search_space: str | None, params: DictConfig | None, heartbeat_interval: int = 10,
                 grace_period: int = 30) -> None:
        # Imported here, not at the top: Hydra imports every plugin module at each start, and optuna (with
        # sqlalchemy, alembic, scikit-learn) would add ~1 s to every `python -m genlab` that does not sweep.
        from genlab.sweeps.sweeper import PersistentSweeperImpl

        self.sweeper = PersistentSweeperImpl(
            sampler, direction, storage, study_name, n_trials, n_jobs, max_failure_rate, search_space,
            custom_search_space, params, heartbeat_interval=heartbeat_interval, grace_period=grace_period,
        )
