"""Sweeps: the Optuna presets return their metric and survive a failing trial; joblib runs jobs in parallel and
keeps the finished ones when one fails; the SLURM launcher composes. Persistent searches (genlab_optuna): a killed
search resumes without rerunning or replaying trials, parallel workers share one study, failures are recorded."""

from __future__ import annotations

import json
import os
import pickle
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import REPO, TINY, run_cli
from omegaconf import OmegaConf

from genlab.callbacks.interrupt import Interrupted
from genlab.checks import ConfigError
from genlab.sweeps.study import display_url, open_storage


def metrics_of(sweep: Path) -> dict[int, dict]:
    return {int(p.parent.name): json.loads(p.read_text()) for p in sweep.glob("*/metrics.json")}


def test_vae_optuna_maximises_val_elbo_and_a_failed_trial_does_not_stop_it(tmp_path):
    sweep = tmp_path / "vae"
    # latent_dim=0 is refused (ConfigError) in whichever trial draws it: trial 2 with this seed.
    proc = run_cli("-m", "hparams_search=vae_optuna", "data=digits", "model.latent_dim=choice(3,0)",
                   "hydra.sweeper.n_trials=4", "model.eval_k=10", *TINY, f"hydra.sweep.dir={sweep}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Failed experiment: model.latent_dim=0" in proc.stdout + proc.stderr
    finished = metrics_of(sweep)
    assert sorted(finished) == [0, 1, 3]  # the trials before and after the failed one
    assert (sweep / "2" / ".hydra" / "config.yaml").is_file() and not (sweep / "2" / "metrics.json").exists()
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert results["best_value"] == max(m["val/elbo"] for m in finished.values())
    assert results["best_params"]["model.latent_dim"] == 3
    assert set(results["best_params"]) == {"model.optimizer.lr", "model.latent_dim", "search.hidden_width", "model.beta"}
    best = max(finished, key=lambda i: finished[i]["val/elbo"])
    config = yaml.safe_load((sweep / str(best) / ".hydra" / "config.yaml").read_text())
    width = results["best_params"]["search.hidden_width"]
    assert config["search"]["hidden_width"] == width and config["model"]["encoder"]["hidden"] == ["${search.hidden_width}"]


def test_gan_optuna_minimises_the_classifier_frechet_distance(tmp_path):
    sweep = tmp_path / "gan"
    proc = run_cli("hparams_search=gan_optuna", "data=digits", "hydra.sweeper.n_trials=2",
                   "model.feature_classifier_steps=20", "model.eval_samples=200", *TINY, f"hydra.sweep.dir={sweep}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    finished = metrics_of(sweep)
    assert sorted(finished) == [0, 1] and all(m["model"] == "gan_conv" for m in finished.values())
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert results["best_value"] == min(m["val/fd"] for m in finished.values())
    assert results["best_params"]["loss"] in ("nonsaturating", "hinge", "lsgan", "wgan_gp")


def test_joblib_runs_jobs_in_parallel_and_a_failed_job_keeps_the_others(tmp_path):
    sweep = tmp_path / "joblib"
    proc = run_cli("-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "model.latent_dim=2,0,3", *TINY,
                   f"hydra.sweep.dir={sweep}")
    log = proc.stdout + proc.stderr
    assert "Joblib.Parallel(n_jobs=2" in log
    assert proc.returncode != 0 and "model.latent_dim=0 is not accepted" in log  # the sweep reports the failure
    finished = metrics_of(sweep)
    assert sorted(finished) == [0, 2]  # the job after the failed one ran too
    for job, latent in ((0, 2), (2, 3)):
        config = yaml.safe_load((sweep / str(job) / ".hydra" / "config.yaml").read_text())
        assert config["model"]["latent_dim"] == latent


def test_slurm_launcher_composes_with_the_trainer_s_nodes_and_devices(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "genlab", "hydra/launcher=slurm", "hydra.launcher.partition=gpu", "trainer=ddp",
         "trainer.devices=4", "trainer.num_nodes=2", "--cfg", "all"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    cfg = OmegaConf.create(proc.stdout)
    launcher = cfg.hydra.launcher
    assert launcher._target_ == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    assert (launcher.nodes, launcher.tasks_per_node, launcher.gpus_per_node) == (2, 4, 4)
    assert launcher.partition == "gpu" and launcher.timeout_min > 0
    assert cfg.trainer.strategy == "ddp_find_unused_parameters_true"


# ---- persistent searches (hydra/sweeper=genlab_optuna): resume, parallel workers, failures --------------------
TRIAL = ["data=digits", "model.eval_k=10", *TINY]


def search_cmd(sweep: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "genlab", "hparams_search=vae_optuna", *TRIAL, f"hydra.sweep.dir={sweep}", *extra]


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


def test_a_killed_search_resumes_where_it_stopped_and_runs_no_trial_twice(tmp_path):
    sweep = tmp_path / "search"
    cmd = search_cmd(sweep, "hydra.sweeper.n_trials=3", "hydra.sweeper.heartbeat_interval=1",
                     "hydra.sweeper.grace_period=2")
    env = {**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    try:
        while time.time() < deadline and proc.poll() is None:
            if n_beating_trials(sweep) >= 3:  # the third trial runs and its first heartbeat is stored
                break
            time.sleep(0.02)
    finally:
        proc.send_signal(signal.SIGKILL)  # no handler runs: the third trial (if asked) stays RUNNING
        proc.wait()
    before = {n: (t.params, t.value) for n, t in completed(load_study(sweep)).items()}
    assert len(before) == 2, "the search ended before it could be killed"
    stamps = {n: (sweep / str(n) / "metrics.json").stat().st_mtime_ns for n in before}
    time.sleep(2.5)  # past the grace period: the killed trial's heartbeat is stale

    rerun = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "2 of 3 trials done" in rerun.stdout + rerun.stderr
    study = load_study(sweep)
    done = completed(study)
    assert len(done) == 3  # n_trials counted the trials finished before the kill
    others = [t for t in study.get_trials() if t.number not in done]
    assert len(others) <= 1 and all(t.state.name == "FAIL" and "error" not in t.user_attrs for t in others)
    assert {n: (done[n].params, done[n].value) for n in before} == before  # the finished trials stayed
    assert {n: (sweep / str(n) / "metrics.json").stat().st_mtime_ns for n in before} == stamps  # not rerun
    assert_folders_belong_to_trials(sweep, study)
    # The rerun draws new values: the configured seed would replay trial 0's values as the rerun's first trial.
    params = [json.dumps(t.params, sort_keys=True) for t in done.values()]
    assert len(set(params)) == 3, params


def test_two_workers_started_together_share_one_study(tmp_path):
    sweep = tmp_path / "shared"
    env = {**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}
    # Longer trials than the start-up of a worker, so both take part.
    cmd = search_cmd(sweep, "hydra.sweeper.n_trials=4", "trainer.limit_train_batches=8")
    workers = [subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
               for _ in range(2)]
    logs = [w.communicate(timeout=300)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], logs[0][-2000:] + logs[1][-2000:]
    ran = [set(map(int, re.findall(r"Trial (\d+): \{", log))) for log in logs]
    assert ran[0] and ran[1] and not ran[0] & ran[1], ran  # each worker ran trials, none ran the same one
    study = load_study(sweep)
    assert sorted(completed(study)) == sorted(ran[0] | ran[1]) == [0, 1, 2, 3]  # 4 in all, not 4 each
    assert_folders_belong_to_trials(sweep, study)
    params = [json.dumps(t.params, sort_keys=True) for t in completed(study).values()]
    assert len(set(params)) == 4, params  # the second worker re-seeds: no replay of the first one's values


def test_joblib_trials_share_the_study_and_a_failed_trial_is_recorded_and_counted(tmp_path):
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
    assert {t.number for t in failed} == {t.number for t in trials} - set(metrics_of(sweep))  # no metrics.json
    assert all(t.params["model.latent_dim"] == 3 for t in completed(study).values())
    assert_folders_belong_to_trials(sweep, study)
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
    proc = run_cli("hparams_search=vae_optuna", "hydra.sweeper.study_name=null", *TRIAL,
                   f"hydra.sweep.dir={tmp_path / 's'}")
    assert proc.returncode != 0 and "hydra.sweeper.study_name=null is not accepted" in proc.stderr


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
