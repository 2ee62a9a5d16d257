"""Every run gets its own folder, and no run writes into a folder that holds another run's results unless it
resumes that run (issue 10, point 8: two runs started in the same second used to share a folder)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, TINY, read_metrics, run_cli

from genlab.checks import ConfigError
from genlab.run_folder import check_run_folder, earlier_results, resumes

FOLDER_NAME = re.compile(r"\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d_[0-9a-f]{6}")


def test_concurrent_runs_get_their_own_folders_and_a_taken_folder_is_refused(tmp_path):
    log_dir = tmp_path / "outputs"
    env = {**os.environ, "GENLAB_LOG_DIR": str(log_dir), "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}
    env.pop("HYDRA_FULL_ERROR", None)
    procs = {
        seed: subprocess.Popen([sys.executable, "-m", "genlab", "model=ae", *TINY, "test=false", f"seed={seed}"],
                               cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for seed in (1, 2)
    }
    for seed, proc in procs.items():
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, f"seed {seed}: {err[-2000:]}"
    folders = sorted((log_dir / "train" / "runs").iterdir())
    assert len(folders) == 2 and all(FOLDER_NAME.fullmatch(f.name) for f in folders), folders
    assert sorted(read_metrics(f)["seed"] for f in folders) == [1, 2]

    # A new run pointed at a finished run's folder is refused before it writes anything there.
    taken = folders[0]
    seed = read_metrics(taken)["seed"]
    config = (taken / ".hydra" / "config.yaml").read_text()
    proc = run_cli("model=ae", *TINY, "seed=7", f"hydra.run.dir={taken}")
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert f"hydra.run.dir: the run folder {taken} already holds another run (metrics.json" in proc.stderr
    assert "ckpt_path=last" in proc.stderr and "Traceback" not in proc.stderr
    assert read_metrics(taken)["seed"] == seed and (taken / ".hydra" / "config.yaml").read_text() == config

    # Resuming a run in its folder (ckpt_path=last) is allowed: tests/test_resume.py and test_interrupts.py.


def test_earlier_results_and_resumes(tmp_path):
    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    (run / "train.log").write_text("")
    assert earlier_results(run) == []  # Hydra's own files and a log are not results
    check_run_folder(run, None)
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "last.ckpt").write_bytes(b"")
    assert earlier_results(run) == ["checkpoints/last.ckpt"]
    with pytest.raises(ConfigError, match=r"hydra.sweep.dir: the run folder .* already holds another run"):
        check_run_folder(run, None, "hydra.sweep.dir")
    with pytest.raises(ConfigError, match="already holds another run"):
        check_run_folder(run, str(tmp_path / "other" / "last.ckpt"))  # a checkpoint of another run
    assert resumes(run, "last") and resumes(run, str(run / "checkpoints" / "last.ckpt"))
    assert not resumes(Path(str(run) + "2"), str(run / "checkpoints" / "last.ckpt"))  # a prefix is not inside
    check_run_folder(run, "last")
