"""``python -m genlab.compare``: the offline counterpart of the W&B dashboard.

Runs (every folder with a ``metrics.json`` below the given DIRs): a table of the config values that differ and
the headline metrics (:mod:`.table`), groups over seeds with mean ± std and standard error (:mod:`.groups`),
learning curves from the runs' CSV/TensorBoard logs (:mod:`.curves`). Optuna studies: best trials and
optuna's own plots (:mod:`.study`).
"""

from genlab.compare.cli import main
from genlab.compare.groups import Stat, build_group_table, group_runs
from genlab.compare.runs import Run, differing_keys, find_runs, headline_metrics, read_run, select_metrics
from genlab.compare.table import build_table

__all__ = ["Run", "Stat", "build_group_table", "build_table", "differing_keys", "find_runs", "group_runs",
           "headline_metrics", "main", "read_run", "select_metrics"]
