"""python -m genlab.table: a table file run (continued to a longer budget), recorded, rendered; the shipped tables."""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
from pathlib import Path

import matplotlib.image
import pytest
import yaml
from conftest import REPO
from hydra import compose, initialize_config_dir

from genlab import provenance
from genlab.compare.curves import late_change
from genlab.compare.groups import Stat
from genlab.config import product  # noqa: F401 - registers ${mul:...}, as `python -m genlab` does at start
from genlab.table import TableError, load_table, table_names, total
from genlab.table import __main__ as table_runner
from genlab.table.__main__ import main
from genlab.table.render import render, section

# The README's example ("Reproduce a table, or add your model to one"): a table of one's own on the digits, two rows,
# two seeds, two budgets, the longer continuing the shorter.
MINE = yaml.safe_load((REPO / "README.md").read_text().split("# my_table.yaml\n", 1)[1].split("```", 1)[0])


def write_table(folder: Path, node: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "mine.yaml"
    path.write_text(yaml.safe_dump(node, sort_keys=False))
    return path


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.with_suffix(".jsonl").read_text().splitlines()]


def test_my_table_runs_continues_to_the_longer_budget_resumes_and_renders(tmp_path: Path, monkeypatch, capsys):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    started = time.monotonic()
    path, out = write_table(tmp_path / "a", MINE), tmp_path / "a" / "runs"
    for budget in ("short", "long"):
        assert main(["run", str(path), "--budget", budget, "--out", str(out), "--allow-dirty"]) == 0
    recs = {(r["row"], r["budget"], r["seed"]): r for r in records(path)}
    assert len(recs) == 8
    long = recs[("ae", "long", 0)]
    assert long["epochs"] == 2 and long["continued_from"]["budget"] == "short"
    assert [x for x, _ in long["curve"]["val/loss"]] == [1, 2]  # the shorter run's validation stays in the curve
    assert long["curve"]["val/loss"][0] == recs[("ae", "short", 0)]["curve"]["val/loss"][0]
    folder = Path(long["folder"])
    assert folder == Path(recs[("ae", "short", 0)]["folder"])  # trained on in the shorter run's folder ...
    assert "ckpt_path=last" in (folder / ".hydra" / "overrides.yaml").read_text()  # ... from its last checkpoint
    prov = long["provenance"]
    # The run's own clock, in seconds: inside the time this test has taken so far (a clock in other units, or the
    # absolute perf_counter, would not be).
    assert 0 < prov["wall_s"] < time.monotonic() - started and prov["threads"] == 1
    # The shorter run's process, up to the checkpoint trained on from, is part of the longer run's cost.
    short_wall = recs[("ae", "short", 0)]["provenance"]["wall_s"]
    assert prov["earlier"]["processes"] == 1 and 0 < prov["earlier"]["wall_s"] <= short_wall
    assert total(long, "wall_s") == pytest.approx(prov["wall_s"] + prov["earlier"]["wall_s"])
    assert prov["cpu_matmul"] == "blas"  # the suite's seeded verdict, read by the run
    assert (prov["commit"], prov["dirty"]) == provenance.git_commit()
    assert prov["machine"].startswith(provenance.cpu_model()) and prov["load"]["start"] >= 0
    assert long["command"] == "python -m genlab data=digits logger=csv callbacks=lean trainer.limit_val_batches=2 " \
        "trainer.limit_test_batches=2 model=ae trainer.max_epochs=2 seed=0"

    # From scratch, the longer budget ends where the continued run ended.
    fresh_path = write_table(tmp_path / "b", MINE)
    assert main(["run", str(fresh_path), "--budget", "long", "--rows", "ae", "--seeds", "0", "--out",
                 str(tmp_path / "b" / "runs"), "--allow-dirty"]) == 0
    fresh = records(fresh_path)[0]
    assert "continued_from" not in fresh
    assert fresh["metrics"] == pytest.approx(long["metrics"], abs=1e-6) and fresh["curve"] == long["curve"]

    # Interrupted: one run killed after its last checkpoint, one after its metrics.json, neither recorded. The same
    # command resumes the first from its last.ckpt and records the second without training it again.
    lines = path.with_suffix(".jsonl").read_text().splitlines()
    path.with_suffix(".jsonl").write_text("\n".join(lines[:-2]) + "\n")
    killed, finished = (json.loads(line) for line in lines[-2:])
    (Path(killed["folder"]) / "metrics.json").unlink()
    stamp = (Path(finished["folder"]) / "metrics.json").stat().st_mtime_ns
    capsys.readouterr()
    assert main(["status", str(path), "--budget", "long", "--out", str(out)]) == 0
    status = capsys.readouterr().out
    assert f"| long | seed {killed['seed']}: resumable" in status and f"seed {finished['seed']}: finished, not" in status
    assert main(["run", str(path), "--budget", "long", "--out", str(out), "--allow-dirty"]) == 0
    again = {(r["row"], r["seed"]): r for r in records(path) if r["budget"] == "long"}
    assert len(again) == 4 and (Path(finished["folder"]) / "metrics.json").stat().st_mtime_ns == stamp
    # Its folder holds checkpoints, so genlab accepted it only as a resume (ckpt_path=last); at its last epoch already,
    # it was tested again, not validated.
    assert again[killed["row"], killed["seed"]]["metrics"]["test/recon"] == pytest.approx(killed["metrics"]["test/recon"])

    results = path.with_suffix(".md")
    results.write_text("# Results\n\nkept above\n")
    for _ in range(2):  # a second render replaces the section
        assert main(["render", str(path)]) == 0
    text = results.read_text()
    assert text.startswith("# Results\n\nkept above\n") and text.count("<!-- table:mine -->") == 1
    rows = [line for line in text.splitlines() if line.startswith("| ae")]
    assert [r.split(" | ")[:2] for r in rows] == [["| ae", "short"], ["| ae, 8-d codes", "short"], ["| ae", "long"],
                                                  ["| ae, 8-d codes", "long"]]
    values = [r["metrics"]["test/recon"] for k, r in recs.items() if k[:2] == ("ae", "long")]
    stat = Stat.of(values)
    assert f"**{stat.mean:.3f} ± {stat.sem:.3f}**" in rows[2] and "| 5.000 ± 0.100 |" in rows[2]
    assert "Eight dimensions reconstruct better" in text and (tmp_path / "a" / "curves" / "mine.png").stat().st_size


def test_a_runs_cost_adds_its_earlier_processes_or_for_older_records_the_run_it_continued():
    continued = {"budget": "short", "wall_s": 100.0, "cpu_s": 90.0}
    older = {"provenance": {"wall_s": 60.0, "cpu_s": 50.0}, "continued_from": continued}
    clocked = {"provenance": {"wall_s": 60.0, "cpu_s": 50.0, "earlier": {"wall_s": 130.0, "cpu_s": 95.0,
                                                                        "processes": 2}}, "continued_from": continued}
    assert [total(r, "wall_s") for r in (older, clocked)] == [160.0, 190.0]  # the earlier processes include `short`
    assert total({"provenance": {"wall_s": 60.0, "cpu_s": 50.0}}, "cpu_s") == 50.0


def fake_run(folder: Path, dirty: bool) -> table_runner.Job:
    folder.mkdir(parents=True)
    prov = {"commit": "0123456789", "dirty": dirty, "wall_s": 60.0, "cpu_s": 50.0, "threads": 1, "machine": "cpu"}
    (folder / "metrics.json").write_text(json.dumps({"test/recon": 4.5, "epoch": 0.0, "provenance": prov}))
    return table_runner.Job("ae", "short", 0, folder, table_runner.FINISHED)


def test_a_run_from_uncommitted_code_is_recorded_only_when_allowed_and_says_so(tmp_path, monkeypatch, capsys):
    table = load_table(str(write_table(tmp_path, MINE)))
    job = fake_run(tmp_path / "run", dirty=True)
    assert table_runner.record(table, job, allow_dirty=False) is None and not table.records.exists()
    assert "not recorded" in capsys.readouterr().out
    monkeypatch.setattr(table_runner, "git_commit", lambda: ("0123456789", True))
    with pytest.raises(TableError, match="uncommitted changes .* --allow-dirty"):
        table_runner.run(table, [job], 1, allow_dirty=False, dry_run=False)
    assert table_runner.record(table, job, allow_dirty=True)["provenance"]["dirty"] is True
    render(table)
    assert "commit 0123456789 with uncommitted changes (seeds 0)" in table.results.read_text()


def test_a_run_of_a_live_runner_is_running_until_it_finishes_and_is_recorded_once(tmp_path: Path) -> None:
    table, out = load_table(str(write_table(tmp_path, MINE))), tmp_path / "runs"
    folder = table_runner.plan(table, "short", ["ae"], [0], out)[0].folder
    folder.mkdir(parents=True)
    (folder / table_runner.OWNER).write_text("short")
    folder.with_suffix(".running").write_text(json.dumps([socket.gethostname(), os.getpid()]))  # this process: alive
    assert table_runner.plan(table, "short", ["ae"], [0], out)[0].state == table_runner.RUNNING
    shutil.rmtree(folder)
    job = fake_run(folder, dirty=False)  # its metrics.json: finished, while the multirun's other runs go on
    (folder / table_runner.OWNER).write_text("short")
    assert table_runner.plan(table, "short", ["ae"], [0], out)[0].state == table_runner.FINISHED
    first = table_runner.record(table, job, allow_dirty=False)
    assert table_runner.record(table, job, allow_dirty=False) == first and len(table.recorded()) == 1  # a 2nd runner


@pytest.mark.parametrize(("change", "message"), [
    ({"colour": 1}, "colour: Key 'colour' not in 'Table'"),
    ({"columns": [{"metric": "test/recon", "better": "up"}]}, "expected one of \\[higher, lower\\]"),
    ({"rows": {"ae": ["model=ae", "seed=3"]}}, "rows.ae: expected KEY=VALUE overrides other than seed"),
    ({"published": {"ae": {"val/nll": [1.0, 0.1]}}}, "published.ae: expected {COLUMN METRIC"),
    ({"budgets": {"short": {"share": "1", "overrides": ["trainer.max_epochs=1"]},
                  "long": {"share": "2", "overrides": ["trainer.max_epochs=2", "model.latent_dim=4"],
                           "continues": "short"}}}, "continues \\(row ae\\): .* got \\['model.latent_dim'\\]"),
])
def test_a_bad_table_file_names_its_key(tmp_path: Path, change: dict, message: str) -> None:
    with pytest.raises(TableError, match=message):
        load_table(str(write_table(tmp_path, {**MINE, **change})))


def test_a_bad_choice_on_the_command_line_is_one_line_naming_the_choices(tmp_path, capsys) -> None:
    path = str(write_table(tmp_path, MINE))
    assert main(["status", path, "--budget", "full"]) == 2
    assert capsys.readouterr().err.strip() == "genlab.table: error: --budget 'full': not in table mine; choices: " \
        "'short', 'long'"
    assert main(["run", path, "--rows", "vae", "--dry-run"]) == 2
    assert "--rows 'vae': not in table mine; choices: 'ae', 'ae, 8-d codes'" in capsys.readouterr().err


def test_overrides_after_the_options_go_to_every_run(tmp_path, capsys) -> None:
    # As the README runs a table on a GPU: argparse alone fills the overrides only when they come right after TABLE.
    path = str(write_table(tmp_path, MINE))
    argv = ["run", path, "--budget", "long", "--seeds", "1", "--out", str(tmp_path / "runs"), "--dry-run"]
    assert main([*argv, "trainer.max_epochs=3", "hydra/launcher=joblib"]) == 0
    out = capsys.readouterr().out
    commands = [line.split(" hydra.run.dir=")[0] for line in out.splitlines() if line.startswith("python -m genlab ")]
    assert [c.endswith(" trainer.max_epochs=2 trainer.max_epochs=3 seed=1") for c in commands] == [True, True]
    assert "hydra/launcher" not in out  # the multirun's, not a run's
    with pytest.raises(SystemExit):
        main(["status", path, "trainer.max_epochs=3"])


def test_verdict_compares_within_two_standard_errors() -> None:
    # |6.0 - 6.3| = 0.3 <= 2 hypot(0.3, 0.5): within; 8 modes against 6.3 ± 0.5 better; a lower KL is better.
    assert Stat.of([5.7, 6.0, 6.3]).verdict(6.3, 0.5, True) == "within 2 SE"
    assert Stat.of([8.0, 8.0]).verdict(6.3, 0.5, True) == "better"
    assert Stat.of([0.8]).verdict(0.45, 0.09, False) == "worse"
    assert Stat.of([0.1]).verdict(0.45, None, False) == "better"
    assert Stat.of([0.1, 0.5]).cell(2) == "0.30 ± 0.20" and Stat.of([None]).cell(1) == "–"


def test_every_shipped_table_loads_and_its_runs_compose() -> None:
    assert {"pacgan_ring", "pacgan_grid", "losses_ring8", "losses_grid25", "gan_mnist", "iwae", "vade"} <= set(
        table_names())
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        for table in map(load_table, table_names()):
            for budget in table.budgets:  # one row per budget: composing them all takes long on a loaded CPU
                compose(config_name="config", overrides=[*table.overrides(list(table.rows)[-1], budget), "seed=0"])
        # PacGAN-m keeps the reference's 100 packed discriminator inputs and 400,000 generator steps per run.
        table = load_table("pacgan_grid")
        for m, row in enumerate(["GAN", "PacGAN2", "PacGAN3", "PacGAN4"], start=1):
            cfg = compose(config_name="config", overrides=table.overrides(row, "full"))
            assert (cfg.model.pack, cfg.data.batch_size, cfg.trainer.max_epochs) == (m, 100 * m, 400 * m)
            assert cfg.trainer.check_val_every_n_epoch == 10 * m and cfg.data.n_train == 100_000
        # The losses tables train every loss at their one Adam setting, whatever a loss's own defaults.
        cfg = compose(config_name="config", overrides=load_table("losses_ring8").overrides("wgan_gp", "cpu"))
        assert cfg.model.optimizer_g.lr == cfg.model.optimizer_d.lr == 1e-3 and cfg.model.optimizer_d.betas == [0.5, 0.999]


def test_late_change_is_the_plateau_test_last_fifth_against_the_fifth_before() -> None:
    # steps 1,000-10,000: the last fifth is 9,000 and 10,000 (mean 0.8), the fifth before 7,000 and 8,000 (0.6);
    # the value at half the run (5,000: 0.1) plays no part.
    climb = [(1000 * i, v) for i, v in enumerate([0.0, 0.0, 0.0, 0.0, 0.1, 0.3, 0.5, 0.7, 0.8, 0.8], start=1)]
    assert late_change(climb) == pytest.approx(0.2)
    assert late_change([(s, 0.9) for s, _ in climb]) == 0.0
    assert late_change(climb, share=0.5) == pytest.approx(0.62 - 0.02)  # halves: 6,000-10,000 and 1,000-5,000
    assert late_change(climb[:1]) is None and late_change([]) is None  # no window before the last fifth


def test_the_recorded_pacgan_ring_table_gives_the_numbers_of_its_runs(tmp_path: Path) -> None:
    text = render(load_table("pacgan_ring"), tmp_path / "RESULTS.md").read_text()
    line = next(ln for ln in text.splitlines() if ln.startswith("| GAN | cpu |"))
    # 5 seeds at 20,000 generator steps: modes 7.8 ± 0.2, high quality 78.2 ± 7.6 %, reverse KL 0.30 ± 0.10; the mean
    # over steps 17,000-20,000 minus that over 13,000-16,000: modes 0, -0.25, 0, -0.5, 0 and high quality +2.95,
    # -17.23, +0.42, +6.64, +4.32 points (seeds 0-4).
    assert "| **7.8 ± 0.2** | **78.2 ± 7.6** | **0.30 ± 0.10** | **-0.1 ± 0.1** | **-0.6 ± 4.3** | " \
           "6.3 ± 0.5 / 98.2 ± 0.2 / 0.45 ± 0.09 | better / worse / within 2 SE | 0, 1, 2, 3, 4 |" in line
    picture = matplotlib.image.imread(tmp_path / "curves" / "pacgan_ring.png")
    assert picture.ndim == 3 and picture[..., :3].std() > 0.05  # drawn, not a blank canvas


def test_the_committed_results_are_what_the_records_give() -> None:
    results = REPO / "experiments" / "RESULTS.md"
    committed = results.read_text()
    for table in map(load_table, table_names()):
        block = committed.split(f"<!-- table:{table.name} -->\n")[1].split(f"\n<!-- /table:{table.name} -->")[0]
        assert block == section(table, table.recorded(), results), f"rerun: python -m genlab.table render {table.name}"

