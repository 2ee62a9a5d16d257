"""``--study STORAGE``: the best trials of an Optuna study and optuna's own plots of it (history, importances).

STORAGE is a database URL (``sqlite:///...``, ``postgresql://...``), a SQLite file, or a search's sweep folder
(which holds ``optuna.db``, where ``hydra/sweeper=genlab_optuna`` keeps the study by default).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

STUDY_FILE = "optuna.db"

def storage_url(storage: str) -> str:
    """The database URL of ``storage`` (URL, SQLite file or sweep folder); FileNotFoundError if there is none."""
    if "://" in storage:
        return storage
    path = Path(storage)
    if path.is_dir():
        path = path / STUDY_FILE
    if not path.is_file():
        raise FileNotFoundError(f"--study {storage}: no such database (expected a URL, a SQLite file or a sweep "
                                f"folder holding {STUDY_FILE})")
    return f"sqlite:///{path.resolve()}"

def load_study(storage: str, name: str | None) -> optuna.Study:
    """The study ``name`` of ``storage``; with no name, its only study. KeyError naming the studies otherwise."""
    url = storage_url(storage)
    names = [s.study_name for s in optuna.get_all_study_summaries(url)]
    if name is None:
        if len(names) != 1:
            raise KeyError(f"{storage} holds {len(names)} studies {names}: choose one with --name")
        name = names[0]
    if name not in names:
        raise KeyError(f"--name {name!r} is no study of {storage}; its studies: {names}")
    return optuna.load_study(study_name=name, storage=url)

def state_summary(study: optuna.Study) -> str:
    """``name: direction; N trials (COMPLETE a, FAIL b, ...)``."""
    trials = study.get_trials(deepcopy=False)
    counts = {s.name: sum(t.state == s for t in trials) for s in TrialState}
    states = ", ".join(f"{k} {v}" for k, v in counts.items() if v)
    directions = ", ".join(d.name.lower() for d in study.directions)
    return f"study {study.study_name}: {directions}; {len(trials)} trials ({states or 'none'})"

def best_trials_table(study: optuna.Study, top: int, run_root: Path | None) -> tuple[list[str], list[list[Any]]]:
    """(header, rows) of the ``top`` complete trials, best first: number, value(s), parameters, run folder."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(study.directions) == 1:
        sign = -1.0 if study.direction == optuna.study.StudyDirection.MAXIMIZE else 1.0
        complete = sorted(complete, key=lambda t: sign * t.value)[:top]
        value_cols = ["value"]
    else:  # several objectives: the Pareto front, by trial number
        complete = sorted(study.best_trials, key=lambda t: t.number)[:top]
        value_cols = [f"value{i}" for i in range(len(study.directions))]
    params = sorted({p for t in complete for p in t.params})
    header = ["trial", *value_cols, *params, "run"]
    rows = []
    for t in complete:
        folder = run_root / str(t.number) if run_root is not None else None
        run = str(folder) if folder is not None and (folder / "metrics.json").is_file() else None
        rows.append([t.number, *t.values, *(t.params.get(p) for p in params), run])
    return header, rows

@contextmanager
def _matplotlib_cm_get_cmap() -> Iterator[None]:
    """optuna 2.10's importance plot calls ``matplotlib.cm.get_cmap``, removed in matplotlib 3.9: lend it
    ``pyplot.get_cmap`` (same contract) while optuna draws, then take it back."""
    import matplotlib.cm
    import matplotlib.pyplot as plt

    missing = not hasattr(matplotlib.cm, "get_cmap")
    if missing:
        matplotlib.cm.get_cmap = plt.get_cmap
    try:
        yield
    finally:
        if missing:
            del matplotlib.cm.get_cmap


def write_plots(study: optuna.Study, out_dir: Path) -> tuple[list[Path], list[str]]:
    """optuna.visualization.matplotlib's optimization history and parameter importances as PNGs in ``out_dir``.

    Returns (written files, reasons for plots left out: too few complete trials, several objectives).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as optuna_plots

    out_dir.mkdir(parents=True, exist_ok=True)
    n_complete = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    written: list[Path] = []
    skipped: list[str] = []
    if len(study.directions) > 1:
        return written, ["history and importances: the study has several objectives"]
    # Importances by optuna's mean-decrease-impurity evaluator (a random forest on the trials): its default
    # fANOVA evaluator of optuna 2.10 fails under numpy 2 ("setting an array element with a sequence").
    evaluator = optuna.importance.MeanDecreaseImpurityImportanceEvaluator(seed=0)
    plots = [("optimization_history", optuna_plots.plot_optimization_history, 1),
             ("param_importances", partial(optuna_plots.plot_param_importances, evaluator=evaluator), 2)]
    for name, plot, needed in plots:
        if n_complete < needed:
            skipped.append(f"{name}: needs {needed} complete trials, the study has {n_complete}")
            continue
        with warnings.catch_warnings(), _matplotlib_cm_get_cmap():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            try:
                ax = plot(study)
            except (ValueError, RuntimeError) as err:  # e.g. importances of a search space of one value
                skipped.append(f"{name}: {err}")
                continue
        path = out_dir / f"{study.study_name}_{name}.png"
        ax.figure.savefig(path, dpi=100, bbox_inches="tight")
        plt.close(ax.figure)
        written.append(path)
    return written, skipped

def run_root(storage: str) -> Path | None:
    """The folder whose numbered subfolders are the trials' runs: the SQLite file's folder, else None."""
    if "://" in storage:
        return None
    path = Path(storage)
    return path if path.is_dir() else path.parent

def report(storage: str, name: str | None, top: int, plots_dir: Path | None) -> tuple[str, list[str], list[list[Any]],
                                                                                   list[Path], list[str]]:
    """(summary line, best-trials header and rows, PNGs written, plots left out) of a study."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = load_study(storage, name)
    root = run_root(storage)
    header, rows = best_trials_table(study, top, root)
    out_dir = plots_dir or root or Path.cwd()
    written, skipped = write_plots(study, out_dir)
    return state_summary(study), header, rows, written, skipped

