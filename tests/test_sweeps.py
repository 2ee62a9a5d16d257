"""Sweeps: the Optuna presets return their metric and survive a failing trial; joblib runs jobs in parallel and
keeps the finished ones when one fails; the SLURM launcher composes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml
from conftest import REPO, TINY, run_cli
from omegaconf import OmegaConf


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
