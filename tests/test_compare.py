"""``python -m genlab.compare``: the differing config values and metrics of run folders, sorted, exported, plotted."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import REPO, TINY, run_cli

from genlab.compare import build_table, differing_keys, find_runs
from genlab.compare import main as compare_main

NO_LOGGER = [o for o in TINY if not o.startswith("logger=")]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    """A real two-job sweep over the AE latent size, logged to TensorBoard."""
    root = tmp_path_factory.mktemp("compare") / "sweep"
    proc = run_cli("-m", "model=ae", "model.latent_dim=2,3", *NO_LOGGER, "logger=tensorboard", f"hydra.sweep.dir={root}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root


def fake_run(folder: Path, config: dict, choices: dict, metrics: dict) -> Path:
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    (folder / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump({"hydra": {"runtime": {"choices": choices}}}))
    (folder / "metrics.json").write_text(json.dumps(metrics))
    return folder


def test_a_real_sweep_shows_the_varied_key_and_the_metrics(sweep, capsys):
    assert compare_main([str(sweep), "--sort", "val/loss"]) == 0
    out = capsys.readouterr().out
    header = out.splitlines()[0].split()
    assert header[:2] == ["run", "model.latent_dim"]  # the only config value that differs between the jobs
    assert "val/loss" in header and "test/recon" in header
    assert not any("dir" in h or h.startswith("paths") for h in header)
    losses = {int(p.name): json.loads((p / "metrics.json").read_text())["val/loss"] for p in sweep.iterdir() if p.name.isdigit()}
    rows = [line.split() for line in out.splitlines()[2:4]]
    col = header.index("val/loss")
    assert [float(r[col]) for r in rows] == pytest.approx(sorted(losses.values()), rel=1e-5)


def test_tensorboard_logger_writes_event_files(sweep):
    for job in ("0", "1"):
        assert list((sweep / job / "tensorboard").rglob("events.out.tfevents.*")), job


def test_exports_csv_markdown_and_a_line_plot(sweep, tmp_path, capsys):
    args = [str(sweep), "--metrics", "val/loss,test/recon", "--sort", "test/recon", "--desc",
            "--csv", str(tmp_path / "t.csv"), "--markdown", str(tmp_path / "t.md"),
            "--plot", "val/loss", "--out", str(tmp_path / "p.png")]
    assert compare_main(args) == 0
    assert "line plot of val/loss" in capsys.readouterr().out
    with (tmp_path / "t.csv").open() as f:
        table = list(csv.DictReader(f))
    assert list(table[0]) == ["run", "model.latent_dim", "val/loss", "test/recon"]
    recon = [float(r["test/recon"]) for r in table]
    assert recon == sorted(recon, reverse=True)
    for row in table:  # full precision, straight from each job's metrics.json
        metrics = json.loads((sweep / row["run"] / "metrics.json").read_text())
        assert float(row["val/loss"]) == metrics["val/loss"]
        assert int(row["model.latent_dim"]) == metrics_config(sweep / row["run"])["model"]["latent_dim"]
    md = (tmp_path / "t.md").read_text().splitlines()
    assert md[0] == "| run | model.latent_dim | val/loss | test/recon |" and md[1] == "|---|---:|---:|---:|"
    assert len(md) == 4
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"


def metrics_config(run: Path) -> dict:
    return yaml.safe_load((run / ".hydra" / "config.yaml").read_text())


def test_runs_from_several_folders_differing_in_groups_and_strings(tmp_path, capsys):
    base = {"seed": 0, "paths": {"output_dir": "x"}, "model": {"hidden": [8, 8], "lr": 0.1}}
    fake_run(tmp_path / "a" / "run", {**base, "paths": {"output_dir": "/a"}}, {"model": "vae", "data": "mnist"},
             {"val/loss": 3.0, "val/elbo": -3.0})
    fake_run(tmp_path / "b" / "multiruns" / "s" / "10", {**base, "model": {"hidden": [16], "lr": 0.1}},
             {"model": "iwae", "data": "mnist"}, {"val/loss": 1.0})
    fake_run(tmp_path / "b" / "multiruns" / "s" / "2", base, {"model": "vade", "data": "mnist"},
             {"val/loss": float("nan"), "val/elbo": -2.0})
    runs = find_runs([tmp_path / "a", tmp_path / "b"])
    assert [r.path.name for r in runs] == ["run", "2", "10"]  # numbered jobs in numeric order
    assert differing_keys(runs) == ["model", "model.hidden"]  # group choice and a list; paths and equal keys dropped
    header, rows = build_table(runs, sort="val/loss")
    assert header == ["run", "model", "model.hidden", "val/elbo", "val/loss"]
    assert [r[0] for r in rows] == ["b/multiruns/s/10", "a/run", "b/multiruns/s/2"]  # NaN last
    header, rows = build_table(runs, sort="val/elbo", descending=True)
    assert [r[1] for r in rows] == ["vade", "vae", "iwae"]  # missing last in either direction
    assert compare_main([str(tmp_path), "--plot", "val/loss", "--out", str(tmp_path / "bar.png")]) == 0
    assert "bar plot" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "words"),
    [(["{empty}"], ["no metrics.json"]), (["{empty}/nope"], ["no such folder"]),
     (["{runs}", "--sort", "val/nope"], ["'val/nope'", "val/loss"])],
)
def test_bad_input_names_the_problem(tmp_path, args, words, capsys):
    (tmp_path / "empty").mkdir()
    fake_run(tmp_path / "runs" / "r", {"seed": 0}, {}, {"val/loss": 1.0})
    args = [a.format(empty=tmp_path / "empty", runs=tmp_path / "runs") for a in args]
    assert compare_main(args) == 2
    err = capsys.readouterr().err
    for word in words:
        assert word in err, err


def test_the_module_runs_from_the_command_line(tmp_path):
    fake_run(tmp_path / "r", {"seed": 0}, {}, {"val/loss": 1.0})
    proc = subprocess.run([sys.executable, "-m", "genlab.compare", str(tmp_path)], cwd=REPO, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0 and "val/loss" in proc.stdout, proc.stderr
