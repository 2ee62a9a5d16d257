"""Sweeps: the Optuna presets return their metric and survive a failing trial; joblib runs jobs in parallel and
keeps the finished ones when one fails; the SLURM launcher composes. Persistent searches (genlab_optuna): a killed
search resumes without rerunning or replaying trials, parallel workers share one study, failures are recorded."""

from __future__ import annotations

import json
import pickle
import re
import signal
import time
from pathlib import Path

import pytest
import yaml
from conftest import TINY, run_cli
from handshake import LIMIT, children, handshake_overrides, release, start_cli, wait_until_ready
from hydra.utils import instantiate
from in_process import composed

from genlab.callbacks.interrupt import Interrupted
from genlab.checks import ConfigError
from genlab.sweeps.study import display_url, open_storage

# The sweeps read validation metrics only: no test stage.
RUN = [*TINY, "test=false"]


def metrics_of(sweep: Path) -> dict[int, dict]:
    return {int(p.parent.name): json.loads(p.read_text()) for p in sweep.glob("*/metrics.json")}


def test_gan_optuna_minimises_the_classifier_frechet_distance(tmp_path):
    sweep = tmp_path / "gan"
    proc = run_cli("hparams_search=gan_optuna", "data=digits", "hydra.sweeper.n_trials=2",
                   "model.feature_classifier_steps=20", "model.eval_samples=200", *RUN, f"hydra.sweep.dir={sweep}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    finished = metrics_of(sweep)
    assert sorted(finished) == [0, 1] and all(m["model"] == "gan_conv" for m in finished.values())
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert results["best_value"] == min(m["val/fd"] for m in finished.values())
    assert results["best_params"]["loss"] in ("nonsaturating", "hinge", "lsgan", "wgan_gp")


def test_joblib_runs_jobs_in_parallel_and_a_failed_job_keeps_the_others(tmp_path):
    sweep = tmp_path / "joblib"
    proc = run_cli("-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "model.latent_dim=2,0,3", *RUN,
                   f"hydra.sweep.dir={sweep}")
    log = proc.stdout + proc.stderr
    assert "Joblib.Parallel(n_jobs=2" in log
    assert proc.returncode != 0 and "model.latent_dim=0 is not accepted" in log  # the sweep reports the failure
    finished = metrics_of(sweep)
    assert sorted(finished) == [0, 2]  # the job after the failed one ran too
    for job, latent in ((0, 2), (2, 3)):
        config = yaml.safe_load((sweep / str(job) / ".hydra" / "config.yaml").read_text())
        assert config["model"]["latent_dim"] == latent


def test_slurm_launcher_composes_with_the_trainer_s_nodes_and_devices():
    # What `python -m genlab hydra/launcher=slurm ... --cfg all` prints, composed in this process.
    cfg = composed("hydra/launcher=slurm", "hydra.launcher.partition=gpu", "trainer=ddp", "trainer.devices=4",
                   "trainer.num_nodes=2", hydra=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_ == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    assert (launcher.nodes, launcher.tasks_per_node, launcher.gpus_per_node) == (2, 4, 4)
    assert launcher.partition == "gpu" and launcher.timeout_min > 0
    assert cfg.trainer.strategy == "ddp_find_unused_parameters_true"


# ---- persistent searches (hydra/sweeper=genlab_optuna): resume, parallel workers, failures --------------------
TRIAL = ["data=digits", "model.eval_k=10", *RUN]


def load_study(sweep: Path, name: str = "vae_optuna"):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.load_study(study_name=name, storage=f"sqlite:///{sweep}/optuna.db")


def n_beating_trials(sweep: Path) -> int:
    """The number of trials with a recorded heartbeat, read straight from the search's SQLite file (fast to poll)."""
    import sqlite3

    if not (sweep / "optuna.db").exists():
        return 0
    try:
        with sqlite3.connect(f"file:{sweep / 'optuna.db'}?mode=ro", uri=True, timeout=0.1) as db:
            return db.execute("SELECT COUNT(DISTINCT trial_id) FROM trial_heartbeats").fetchone()[0]
    except sqlite3.Error:  # tables not created yet, or the file is locked for a moment
        return 0


def completed(study) -> dict[int, object]:
    return {t.number: t for t in study.get_trials() if t.state.name == "COMPLETE"}


def assert_folders_belong_to_trials(sweep: Path, study) -> None:
    """Folder N holds trial N's run: its metrics.json value is the value the study recorded for trial N."""
    for number, trial in completed(study).items():
        assert metrics_of(sweep)[number]["val/elbo"] == trial.value, number


def hold_trials(hold: Path) -> list[str]:
    """Overrides that make every trial wait at its first batch in ``hold/<trial number>`` (handshake.Handshake)."""
    return handshake_overrides(hold / "${hydra:job.num}", at_step=0)


def test_a_killed_search_resumes_where_it_stopped_and_runs_no_trial_twice(tmp_path):
    sweep, hold = tmp_path / "search", tmp_path / "hold"
    cmd = ["hparams_search=vae_optuna", *TRIAL, f"hydra.sweep.dir={sweep}", "hydra.sweeper.n_trials=2",
           "hydra.sweeper.heartbeat_interval=1", "hydra.sweeper.grace_period=2", *hold_trials(hold)]
    for number in (0, 2):  # trial 0 runs through; trial 1 waits and is killed there; the rerun's trial 2 runs
        (hold / str(number)).mkdir(parents=True)
        release(hold / str(number))
    with children() as procs:
        procs["search"] = start_cli(*cmd, log=tmp_path / "search.log")
        wait_until_ready({1: hold / "1"}, procs.values())
        # The premise: trial 1 runs and its heartbeat is stored (the search records one before it launches a trial)
        deadline = time.monotonic() + LIMIT
        while n_beating_trials(sweep) < 2:
            assert time.monotonic() < deadline, "no heartbeat of trial 1"
            time.sleep(0.01)
        procs["search"].proc.send_signal(signal.SIGKILL)  # no handler runs: trial 1 stays RUNNING
    before = {n: (t.params, t.value) for n, t in completed(load_study(sweep)).items()}
    assert list(before) == [0]
    stamps = {n: (sweep / str(n) / "metrics.json").stat().st_mtime_ns for n in before}
    time.sleep(2.5)  # longer than the grace period: the killed trial's last heartbeat is stale for the rerun

    with children() as procs:
        procs["rerun"] = start_cli(*cmd, log=tmp_path / "rerun.log")
        output = procs["rerun"].finish()
    assert procs["rerun"].proc.returncode == 0, output[-3000:]
    assert "1 of 2 trials done" in output
    study = load_study(sweep)
    done = completed(study)
    assert sorted(done) == [0, 2]  # n_trials counted the trial finished before the kill
    others = [t for t in study.get_trials() if t.number not in done]
    assert [(t.number, t.state.name) for t in others] == [(1, "FAIL")] and "error" not in others[0].user_attrs
    assert {n: (done[n].params, done[n].value) for n in before} == before  # the finished trial stayed
    assert {n: (sweep / str(n) / "metrics.json").stat().st_mtime_ns for n in before} == stamps  # not rerun
    assert_folders_belong_to_trials(sweep, study)
    # The rerun draws new values: the configured seed would replay trial 0's values as the rerun's first trial.
    assert done[0].params != done[2].params


def test_two_workers_started_together_share_one_study(tmp_path):
    sweep, hold = tmp_path / "shared", tmp_path / "hold"
    cmd = ["hparams_search=vae_optuna", *TRIAL, f"hydra.sweep.dir={sweep}", "hydra.sweeper.n_trials=2",
           *hold_trials(hold)]
    with children() as workers:
        for i in range(2):
            workers[i] = start_cli(*cmd, log=tmp_path / f"worker{i}.log")
        # Trials 0 and 1 both waiting at once: a worker runs one trial at a time, so each worker holds one.
        wait_until_ready({n: hold / str(n) for n in range(2)}, workers.values())
        for n in range(2):
            release(hold / str(n))
        logs = [w.finish() for w in workers.values()]
    assert [w.proc.returncode for w in workers.values()] == [0, 0], logs[0][-2000:] + logs[1][-2000:]
    ran = [set(map(int, re.findall(r"Trial (\d+): \{", log))) for log in logs]
    assert len(ran[0]) == len(ran[1]) == 1 and not ran[0] & ran[1], ran  # each worker ran one, not the same one
    study = load_study(sweep)
    assert sorted(completed(study)) == sorted(ran[0] | ran[1]) == [0, 1]  # 2 in all, not 2 each
    assert_folders_belong_to_trials(sweep, study)
    params = [json.dumps(t.params, sort_keys=True) for t in completed(study).values()]
    assert len(set(params)) == 2, params  # the second worker re-seeds: no replay of the first one's values


def test_vae_optuna_on_joblib_maximises_val_elbo_and_records_and_counts_a_failed_trial(tmp_path):
    # The sweeper's failure handling does not depend on the launcher (the basic one runs the searches above).
    sweep = tmp_path / "joblib_search"
    # latent_dim=0 is refused (ConfigError) in the trials that draw it.
    args = ["-m", "hparams_search=vae_optuna", "model.latent_dim=choice(3,0)", "hydra.sweeper.n_trials=4",
            "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "hydra.sweeper.n_jobs=2", *TRIAL,
            f"hydra.sweep.dir={sweep}"]
    proc = run_cli(*args)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    assert "Joblib.Parallel(n_jobs=2" in log
    study = load_study(sweep)
    trials = study.get_trials()
    assert [t.number for t in trials] == [0, 1, 2, 3]
    failed = [t for t in trials if t.state.name == "FAIL"]
    assert failed and all(t.params["model.latent_dim"] == 0 for t in failed)
    assert all("model.latent_dim=0 is not accepted" in t.user_attrs["error"] for t in failed)
    assert "Failed experiment: model.latent_dim=0" in log  # the search went on after it
    finished = metrics_of(sweep)
    assert {t.number for t in failed} == {t.number for t in trials} - set(finished)  # no metrics.json
    assert all((sweep / str(t.number) / ".hydra" / "config.yaml").is_file() for t in failed)  # but its folder
    assert completed(study) and all(t.params["model.latent_dim"] == 3 for t in completed(study).values())
    assert_folders_belong_to_trials(sweep, study)
    # The best trial, by the preset's direction (maximize val/elbo), and its config.
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert results["best_value"] == max(m["val/elbo"] for m in finished.values())
    assert results["best_params"]["model.latent_dim"] == 3
    assert set(results["best_params"]) == {"model.optimizer.lr", "model.latent_dim", "search.hidden_width", "model.beta"}
    best = max(finished, key=lambda i: finished[i]["val/elbo"])
    config = yaml.safe_load((sweep / str(best) / ".hydra" / "config.yaml").read_text())
    width = results["best_params"]["search.hidden_width"]
    assert config["search"]["hidden_width"] == width and config["model"]["encoder"]["hidden"] == ["${search.hidden_width}"]
    # The failed trial counts: the same command again finds the study full and runs nothing.
    stamps = {p: p.stat().st_mtime_ns for p in sweep.glob("*/metrics.json")}
    again = run_cli(*args)
    assert again.returncode == 0 and "4 of 4 trials done" in again.stdout + again.stderr, again.stderr[-2000:]
    assert len(load_study(sweep).get_trials()) == 4
    assert {p: p.stat().st_mtime_ns for p in sweep.glob("*/metrics.json")} == stamps


def test_bad_storage_and_a_nameless_study_are_refused_naming_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"hydra\.sweeper\.storage='study\.db'.*sqlite:///"):
        open_storage("study.db", 10, 30)
    with pytest.raises(ConfigError, match=r"hydra\.sweeper\.grace_period=0"):
        open_storage(f"sqlite:///{tmp_path}/s.db", 10, 0)
    # the storage URL is logged and written to optimization_results.yaml: never with its password
    assert display_url("postgresql://optuna:s3cret@dbhost/studies") == "postgresql://optuna:***@dbhost/studies"
    # The sweeper a search builds, in this process: it refuses before it opens or writes anything.
    cfg = composed("hparams_search=vae_optuna", "hydra.sweeper.study_name=null", f"hydra.sweep.dir={tmp_path / 's'}",
                   hydra=True)
    with pytest.raises(ConfigError, match=r"hydra\.sweeper\.study_name=null is not accepted"):
        instantiate(cfg.hydra.sweeper).sweep([])
    assert not (tmp_path / "s").exists()


def test_an_interrupted_run_s_error_survives_pickling_for_parallel_launchers():
    # joblib and submitit send a job's exception back pickled; the sweeper reads exit_code to stop the search
    err = pickle.loads(pickle.dumps(Interrupted("stopped by SIGINT", 130)))
    assert isinstance(err, Interrupted) and (str(err), err.exit_code) == ("stopped by SIGINT", 130)


def _open_storage_at_once(url: str, barrier, results) -> None:
    barrier.wait()
    try:
        open_storage(url, 10, 30)
        results.put("ok")
    except Exception as err:
        results.put(type(err).__name__)


def test_workers_that_start_together_on_a_new_database_both_open_it(tmp_path):
    import multiprocessing

    # Both create the tables at once; without the retry one failed each time (IntegrityError/OperationalError).
    ctx = multiprocessing.get_context("fork")
    barrier, results = ctx.Barrier(2), ctx.Queue()
    url = f"sqlite:///{tmp_path}/new/optuna.db"
    workers = [ctx.Process(target=_open_storage_at_once, args=(url, barrier, results)) for _ in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=120)
    assert sorted(results.get(timeout=5) for _ in workers) == ["ok", "ok"]
