"""W&B: the resolved config is the run config, sweep jobs are separate runs grouped by sweep, a summary table and
images are logged, and a failed online start falls back to offline without stopping training."""

from __future__ import annotations

import json
import math
import os
import socket
from pathlib import Path

import pytest
from conftest import TINY, read_metrics, run_cli
from test_cli import scored_batches, squared_error

import genlab.loggers.wandb_run as wandb_run

NO_LOGGER = [o for o in TINY if not o.startswith("logger=")]


def offline_run(run_dir: Path) -> Path:
    runs = list((run_dir / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, runs
    return runs[0]


def run_record(run: Path) -> bytes:
    # The .wandb file is W&B's protobuf record log; the run's group, name, job type, tags and config values are
    # stored in it as plain strings.
    return next(run.glob("run-*.wandb")).read_bytes()


def closed_port() -> int:
    """A loopback port that nothing listens on: one the kernel just handed out and that is closed again."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """A two-job sweep told to log online to an unreachable W&B server (a closed loopback port) with a bogus key."""
    sweep = tmp_path_factory.mktemp("wandb") / "mysweep"
    url = f"http://127.0.0.1:{closed_port()}"
    env = {"WANDB_MODE": "online", "WANDB_API_KEY": "x" * 40, "WANDB_BASE_URL": url}
    with pytest.MonkeyPatch.context() as mp:  # a proxy would answer for the closed port
        for name in [n for n in os.environ if n.lower().endswith("_proxy")]:
            mp.delenv(name)
        proc = run_cli("-m", "model.latent_dim=2,3", *NO_LOGGER, "logger=wandb", "logger.wandb.init_timeout=5",
                       "tags=[genlab_test]", "logger.wandb.job_type=sweep_test", f"hydra.sweep.dir={sweep}", env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return sweep, proc, url


def test_unreachable_server_falls_back_offline_and_training_completes(sweep):
    sweep, proc, url = sweep
    assert proc.stderr.count(f"{url} is unreachable; logging offline instead") == 2  # once per job
    assert "wandb sync" in proc.stderr
    x = scored_batches("digits")[0]["val"]
    for job in ("0", "1"):
        offline_run(sweep / job)
        # the AE's summed squared error after 3 steps: below that of a zero output, far above 1 % of it
        loss, zeros = read_metrics(sweep / job)["val/loss"], squared_error(x, 0.0)
        assert math.isfinite(loss) and 0.01 * zeros < loss < zeros, (loss, zeros)


def test_sweep_jobs_are_separate_runs_grouped_by_the_sweep_with_config_table_and_images(sweep):
    sweep, *_ = sweep
    ids = set()
    for job, latent in (("0", 2), ("1", 3)):
        run = offline_run(sweep / job)
        ids.add(run.name.rsplit("-", 1)[-1])
        record = run_record(run)
        assert b"train-mysweep" in record  # group: <task_name>-<sweep folder>
        assert f"{job}: ".encode() in record and b"sweep_test" in record and b"genlab_test" in record
        assert f'"latent_dim":{latent}'.encode() in record  # the resolved config is the run config
        tables = list((run / "files" / "media" / "table" / "summary").glob("metrics_*.table.json"))
        table = dict(json.loads(tables[0].read_text())["data"])
        metrics = read_metrics(sweep / job)
        assert table["val/loss"] == metrics["val/loss"] and table["test/recon"] == metrics["test/recon"]
        images = {p.name.split("_")[0] for p in (run / "files" / "media" / "images").rglob("*.png")}
        assert {"reconstructions", "latent"} <= images
    assert len(ids) == 2, "each sweep job must be its own W&B run"


def _refuse_online(mode, *args, **kwargs):  # noqa: ANN001, ANN202
    """wandb.init as with a bad API key: online starts fail, offline starts work."""
    if mode == "online":
        raise RuntimeError("permission denied: invalid API key")
    return _REAL_INIT_RUN(mode, *args, **kwargs)


_REAL_INIT_RUN = wandb_run.init_run


def test_a_failed_online_start_falls_back_offline(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(wandb_run, "init_run", _refuse_online)
    monkeypatch.setattr(wandb_run, "server_reachable", lambda url, timeout: True)
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_MODE", raising=False)
    logger = wandb_run.make_wandb_logger(mode="online", save_dir=tmp_path)
    try:
        assert logger._offline
        assert "could not start online (permission denied: invalid API key)" in capsys.readouterr().err
        wandb_run.publish_summary([logger], {"val/loss": 1.5, "model": "ae"})
    finally:
        import wandb

        wandb.finish()
    table = next((tmp_path / "wandb").glob("offline-run-*/files/media/table/summary/metrics_*.table.json"))
    assert json.loads(table.read_text())["data"] == [["val/loss", 1.5]]


def test_bad_settings_are_refused():
    from genlab.checks import ConfigError

    with pytest.raises(ConfigError, match="logger.wandb.mode='cloud'"):
        wandb_run.make_wandb_logger(mode="cloud")
    with pytest.raises(ConfigError, match="logger.wandb.init_timeout=0"):
        wandb_run.make_wandb_logger(init_timeout=0)
