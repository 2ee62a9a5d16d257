"""experiments/gan_bench.py: the table's commands, budgets, dry run, statistics, curves and the RESULTS.md section."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "experiments"))
import gan_bench  # noqa: E402


def overrides_of(row: gan_bench.Row) -> dict[str, str]:
    return dict(o.split("=", 1) for o in row.overrides)


def test_pacgan_m_rows_keep_100_packs_per_step_and_the_reference_step_count() -> None:
    rows = gan_bench.gan2d_rows(gan_bench.BUDGETS["full"], 400, ("pacgan", "losses"), ("ring", "grid"))
    pacgan = [r for r in rows if r.table == "pacgan"]
    assert [r.name for r in pacgan[:4]] == ["GAN", "PacGAN2", "PacGAN3", "PacGAN4"] and len(pacgan) == 8
    for row in pacgan:
        m = int(overrides_of(row)["model.pack"])
        o = overrides_of(row)
        assert (o["data.batch_size"], o["trainer.max_epochs"]) == (str(100 * m), str(400 * m))
        assert o["trainer.check_val_every_n_epoch"] == str(10 * m)  # the same 10,000-step curve spacing
        # 1,000 steps per 100k samples at batch 100 for 400 epochs; pack 3's batch 300 leaves a partial batch.
        assert gan_bench.steps_of(row) == (400 * 3 * 334 if m == 3 else 400_000)
        assert row.seeds == tuple(range(10)) and row.published == gan_bench.PACGAN_TABLE1[(row.data, m)]
    losses = {r.name: r for r in rows if r.table == "losses" and r.data == "ring"}
    assert list(losses) == list(gan_bench.LOSSES) and all(r.seeds == (0, 1, 2) for r in losses.values())
    assert losses["nonsaturating"].overrides == pacgan[0].overrides  # shared runs
    assert overrides_of(losses["wgan_gp"])["loss"] == "wgan_gp"
    cpu = gan_bench.gan2d_rows(gan_bench.BUDGETS["cpu"], 20, ("pacgan",), ("grid",))
    assert [len(r.seeds) for r in cpu] == [5] * 4 and gan_bench.steps_of(cpu[1]) == 20_000
    # MNIST: 30 epochs of ceil(54,000 / 64) = 844 batches at full; 10 epochs of 500 batches at cpu.
    classifier = Path("c.pt")
    assert gan_bench.steps_of(gan_bench.mnist_rows(gan_bench.BUDGETS["full"], "/d", None, classifier)[0]) == 25_320
    assert gan_bench.steps_of(gan_bench.mnist_rows(gan_bench.BUDGETS["cpu"], "/d", None, classifier)[0]) == 5_000


def test_every_table_command_composes() -> None:
    budget = gan_bench.BUDGETS["cpu"]
    rows = gan_bench.gan2d_rows(budget, 20, ("pacgan", "losses"), ("ring", "grid"))
    # One of each kind (composing all 18 takes long on a loaded CPU): packed, each non-default loss, each data.
    wanted = {"pacgan/grid/PacGAN3", "pacgan/ring/GAN", "losses/ring/wgan_gp", "losses/grid/minimax",
              "losses/ring/hinge", "losses/grid/lsgan"}  # fmt: skip
    rows = [r for r in rows if r.key in wanted]
    rows += gan_bench.mnist_rows(budget, "/data", None, Path("outputs/gan_bench/feature_classifier.pt"))
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        for row in rows:
            cfg = compose(config_name="config", overrides=list(row.overrides))
            o = overrides_of(row)
            if row.table == "mnist":
                assert cfg.data.dataset == "mnist" and cfg.trainer.max_epochs == 10
                assert cfg.model.feature_classifier_path == "outputs/gan_bench/feature_classifier.pt"
                continue
            assert cfg.model.pack == int(o["model.pack"]) and cfg.data.batch_size == int(o["data.batch_size"])
            assert cfg.data.scale == (1.0 if row.data == "ring" else 2.0)
            loss = o.get("loss", "nonsaturating")
            assert cfg.loss._target_.lower().replace("_", "").endswith(loss.replace("_", "")), row.key


def test_dry_run_prints_each_command_and_runs_nothing(tmp_path: Path, capsys) -> None:
    args = ["gan2d", "--budget", "cpu", "--only", "pacgan", "--data", "ring", "--seeds", "0,1", "--dry-run",
            "--write-to", str(tmp_path / "w"), "--out", str(tmp_path / "out")]  # fmt: skip
    gan_bench.main(args)
    lines = capsys.readouterr().out.splitlines()
    commands = [ln for ln in lines if ln.startswith("[pacgan/ring/")]
    assert len(commands) == 8 and all(": to run] OMP_NUM_THREADS=1 python -m genlab" in ln for ln in commands)
    assert any("model.pack=3 data.batch_size=300 trainer.max_epochs=60" in ln and "seed=1" in ln for ln in commands)
    # 20,000 steps per run (pack 3: 60 epochs x 334 batches), 2 seeds.
    assert lines[-1] == "8 (row, seed) pairs, 8 distinct runs; 160,080 generator steps still to run"
    assert not (tmp_path / "w").exists() and not (tmp_path / "out").exists()
    # A recorded run is reported as such and not counted again.
    (tmp_path / "w").mkdir()
    row = gan_bench.gan2d_rows(gan_bench.BUDGETS["cpu"], 20, ("pacgan",), ("ring",))[0]
    key = gan_bench.run_key(row.overrides, 0)
    (tmp_path / "w" / "gan_results.json").write_text(json.dumps({"runs": {key: {"overrides": list(row.overrides)}}}))
    gan_bench.main(args)
    out = capsys.readouterr().out
    assert "[pacgan/ring/GAN seed 0: recorded]" in out and "140,080 generator steps still to run" in out
    # A shorter recorded run of a row, its checkpoint on disk, is continued: only the steps left are counted.
    short = gan_bench.gan2d_rows(gan_bench.BUDGETS["cpu"], 10, ("pacgan",), ("ring",))[1]  # PacGAN2, 10,000 steps
    (tmp_path / "short" / "checkpoints").mkdir(parents=True)
    (tmp_path / "short" / "checkpoints" / "last.ckpt").write_bytes(b"")
    records = {"runs": {key: {"overrides": list(row.overrides)},
                        gan_bench.run_key(short.overrides, 1): {"overrides": list(short.overrides), "seed": 1,
                                                                "epochs": 20, "steps": 10000,
                                                                "run_dir": str(tmp_path / "short")}}}  # fmt: skip
    (tmp_path / "w" / "gan_results.json").write_text(json.dumps(records))
    gan_bench.main(args)
    out = capsys.readouterr().out
    assert "[pacgan/ring/PacGAN2 seed 1: to run, continuing its 10,000-step run]" in out
    assert "[pacgan/ring/PacGAN2 seed 0: to run]" in out and "130,080 generator steps still to run" in out


def test_mean_standard_error_and_verdict() -> None:
    mean, se = gan_bench.mean_se([6.0, 7.0, 8.0])
    assert mean == 7.0 and se == pytest.approx(1 / math.sqrt(3))
    assert gan_bench.mean_se([5.0]) == (5.0, None)
    # |6.0 - 6.3| = 0.3 <= 2 * hypot(0.3, 0.5): within; 8 modes vs 6.3 ± 0.5 is better; KL lower is better.
    assert gan_bench.verdict((6.0, 0.3), (6.3, 0.5), True) == "within 2 SE"
    assert gan_bench.verdict((8.0, 0.0), (6.3, 0.5), True) == "better"
    assert gan_bench.verdict((50.0, 5.0), (98.2, 0.2), True) == "worse"
    assert gan_bench.verdict((0.1, 0.01), (0.45, 0.09), False) == "better"
    assert gan_bench.verdict((0.8, 0.01), (0.45, 0.09), False) == "worse"


def fake_run(row: gan_bench.Row, seed: int, modes: float, hq: float, kl: float) -> dict:
    curve = [{"step": s, "epoch": s // 1000 - 1, "modes": modes * s / 2000, "hq": hq * s / 2000, "mode_kl": kl}
             for s in (1000, 2000)]  # fmt: skip
    return {
        "command": gan_bench.command_line(row, seed, 1, None), "overrides": list(row.overrides), "seed": seed,
        "steps": 2000, "epochs": 2, "wall_s": 120.0 + 60 * seed, "cpu_s": 100.0, "load_mean": 2.0 + seed,
        "load_max": 3.5 + seed, "threads": 1, "machine": "cpu", "date": "today", "run_dir": "x", "picture": None,
        "final": {"val/modes": modes, "val/hq": hq, "val/mode_kl": kl}, "curve": curve,
    }  # fmt: skip


def test_section_rows_carry_statistics_budget_cost_command_and_curve(tmp_path: Path) -> None:
    rows = gan_bench.gan2d_rows(gan_bench.BUDGETS["cpu"], 2, ("pacgan",), ("ring",), seeds=(0, 1))
    gan, pac2 = rows[0], rows[1]
    records = {"runs": {}, "rows": {r.ident: r.as_record() for r in rows}}
    for row, values in ((gan, [(6, 0.97, 0.5), (8, 0.99, 0.3)]), (pac2, [(8, 0.95, 0.06), (8, 0.96, 0.08)])):
        for seed, v in enumerate(values):
            records["runs"][gan_bench.run_key(row.overrides, seed)] = fake_run(row, seed, *v)
    (tmp_path / "RESULTS.md").write_text("# Results\n\n## GANs\n\nold\n\n## VAE family\n\nkept\n")
    shown = gan_bench.recorded_rows(records)
    assert [r.name for r in shown] == ["GAN", "PacGAN2"]  # rows without runs are left out
    gan_bench.write_outputs(records, shown, tmp_path)
    text = (tmp_path / "RESULTS.md").read_text()
    assert "old" not in text and text.rstrip().endswith("## VAE family\n\nkept")
    line = next(ln for ln in text.splitlines() if ln.startswith("| GAN |"))
    # modes 7 ± 1 (SE of 6, 8), hq 98.0 ± 1.0 %, KL 0.40 ± 0.10; published 6.3 ± 0.5: within 2 SE.
    assert "**7.0 ± 1.0** | **98.0 ± 1.0** | **0.40 ± 0.10**" in line
    assert "6.3 ± 0.5 / 98.2 ± 0.2 / 0.45 ± 0.09" in line and "within 2 SE / within 2 SE / within 2 SE" in line
    assert "| 0, 1 |" in line and "2,000 G steps; 2.5 min/run (0.08 h in all), 1 thread/run; load 2.5 mean, 4.5 max" in line
    # Budget: 2 epochs of 1,000 batches of 100 = 2,000 of the protocol's 400,000 steps. Late change: the fake
    # curves are half their final value at step 1,000, so modes +3.5 (mean of 3, 4) and hq +49.0 points.
    assert "| 2,000 G steps = 0.5 % of the protocol's 400,000 |" in line
    assert "| +3.5 / +49.0 since 1,000 |" in line
    assert "`OMP_NUM_THREADS=1 python -m genlab experiment=pacgan_ring model.pack=1" in line
    pac_line = next(ln for ln in text.splitlines() if ln.startswith("| PacGAN2 |"))
    assert "**8.0 ± 0.0** | **95.5 ± 0.5** | **0.07 ± 0.01**" in pac_line
    assert "![pacgan ring curves](gan2d_pacgan_ring.png)" in text and (tmp_path / "gan2d_pacgan_ring.png").stat().st_size > 0
    assert "fjxmlzn/PacGAN" in text and "pacgan_task.py" in text


def test_one_real_run_is_recorded_with_its_curve(tmp_path: Path) -> None:
    """One tiny PacGAN2 run through ``python -m genlab``: 2 epochs of 5 batches, a validation after each."""
    row = gan_bench.Row(
        "pacgan", "ring", "PacGAN2",
        ("experiment=pacgan_ring", "model.pack=2", "data.batch_size=200", "trainer.max_epochs=2",
         "trainer.check_val_every_n_epoch=1", "data.n_train=1000", "data.n_val=300", "data.n_test=300",
         "model.eval_samples=500", "test=false"),
        (0,),
    )  # fmt: skip
    rec = gan_bench.run_one(row, 0, tmp_path, threads=1, trainer=None)
    assert rec["steps"] == 10 and [p["step"] for p in rec["curve"]] == [5, 10]
    # a longer budget of the same row goes to its own folder instead of deleting this one
    assert Path(rec["run_dir"]) == tmp_path / "pacgan" / "ring" / "PacGAN2" / "10_steps" / "seed0"
    assert [p["epoch"] for p in rec["curve"]] == [0, 1]
    metrics = json.loads((Path(rec["run_dir"]) / "metrics.json").read_text())
    assert rec["final"]["val/modes"] == metrics["val/modes"] == rec["curve"][-1]["modes"]
    assert rec["command"].startswith("OMP_NUM_THREADS=1 python -m genlab experiment=pacgan_ring model.pack=2")
    assert rec["wall_s"] > 0 and rec["load_max"] >= rec["load_mean"] > 0 and rec["picture"].endswith(".png")
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    if head:  # the code that ran, and the matmul library python -m genlab picked
        assert head.startswith(rec["commit"].removesuffix("+dirty"))
    assert rec["cpu_matmul"] == metrics["cpu_matmul"] in ("blas", "onednn")


def test_reproduce_py_gan2d_subcommand_delegates_here(tmp_path: Path, capsys) -> None:
    import reproduce

    reproduce.main(["gan2d", "--budget", "full", "--only", "losses", "--data", "grid", "--seeds", "0", "--dry-run",
                    "--write-to", str(tmp_path)])  # fmt: skip
    lines = capsys.readouterr().out.splitlines()
    assert len([ln for ln in lines if ln.startswith("[losses/grid/")]) == 5
    assert any("loss=wgan_gp seed=0" in ln and "trainer.max_epochs=400" in ln for ln in lines)
    assert lines[-1] == "5 (row, seed) pairs, 5 distinct runs; 2,000,000 generator steps still to run"


def test_veegan_toy_loss_rows_budget_and_table(tmp_path: Path) -> None:
    """The five losses on ring8: commands, budget as a fraction of PacGAN's, VEEGAN's GAN row beside nonsaturating."""
    budget = gan_bench.BUDGETS["cpu"]
    rows = gan_bench.gan2d_rows(budget, 20, ("pacgan", "losses"), ("ring8",), toy_epochs=100)
    assert [r.name for r in rows] == list(gan_bench.LOSSES) and all(r.data == "ring8" for r in rows)
    ns = next(r for r in rows if r.name == "nonsaturating")
    o = overrides_of(ns)
    assert o["experiment"] == "gan_ring8" and o["trainer.max_epochs"] == "100" and "loss" not in o
    assert overrides_of(rows[0])["loss"] == "minimax" and ns.published == gan_bench.VEEGAN_GAN["ring8"]
    assert o["trainer.check_val_every_n_epoch"] == "10"  # 10 points of the curve
    chapter = gan_bench.gan2d_rows(budget, 20, ("losses",), ("grid25",), losses=("minimax", "nonsaturating"))
    assert [(r.data, r.name) for r in chapter] == [("grid25", "minimax"), ("grid25", "nonsaturating")]
    assert overrides_of(chapter[0])["trainer.max_epochs"] == str(gan_bench.TOY_CPU_EPOCHS)
    # ceil(20,000 / 256) = 79 steps an epoch; 100 epochs draw 2M samples = 5 % of PacGAN's 40M.
    assert gan_bench.steps_and_samples(ns) == (7900, 2_000_000)
    assert gan_bench.budget_text(ns) == (
        "7,900 G steps = 1.98 % of the protocol's 400,000 (batch 256: 2M samples = 5 % of its 40M)"
    )
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=list(rows[2].overrides))  # wgan_gp
    assert cfg.data.kind == "ring8" and cfg.data.n_train == 20000 and cfg.loss._target_.endswith("WGANGP")
    records = {"runs": {}, "rows": {r.ident: r.as_record() for r in rows[:2]}}
    for row, modes in ((rows[0], (7.0, 8.0, 8.0)), (ns, (8.0, 8.0, 8.0))):
        for seed, m in enumerate(modes):
            records["runs"][gan_bench.run_key(row.overrides, seed)] = fake_run(row, seed, m, 0.5, 0.1)
    shown = gan_bench.recorded_rows(records)
    assert [r.name for r in shown] == ["minimax", "nonsaturating"]
    gan_bench.write_outputs(records, shown, tmp_path)
    text = (tmp_path / "RESULTS.md").read_text()
    assert "### The five losses on the VEEGAN-style toys" in text and "published (VEEGAN Table 1)" in text
    line = next(ln for ln in text.splitlines() if ln.startswith("| minimax |"))
    # modes (7, 8, 8): mean 7.667, SE = std / sqrt(3) = 0.5774 / 1.732 = 0.333.
    assert "**7.7 ± 0.3** | **50.0 ± 0.0** | **0.10 ± 0.00** | – | – |" in line
    ns_line = next(ln for ln in text.splitlines() if ln.startswith("| nonsaturating |"))
    # VEEGAN's GAN: 1 mode, 99.3 % (no error bars, taken as exact): 8 modes is better, 50 % worse, KL not published.
    assert "GAN row: 1.0 / 99.3 | better / worse / – |" in ns_line
    assert (tmp_path / "gan2d_losses_ring8.png").stat().st_size > 0
    # PacGAN's protocol is still announced as not run, since only the VEEGAN-style toys have rows.
    assert "Not run yet." in text


def test_budget_curve_is_drawn_and_cited_before_any_toy_row(tmp_path: Path) -> None:
    """A recorded single-seed budget curve: its PNG, reading and commands appear; the toy table says it is not run."""
    curve = [{"step": 790 * k, "modes": 8.0, "hq": 0.1 * k, "mode_kl": 0.5} for k in (1, 2, 3)]
    records = {"runs": {}, "budget_curves": {"ring8": {
        "what": "nonsaturating, seed 0", "reading": "HQ rises to 30 %.", "commands": ["a", "b"],
        "cost": "1 s", "date": "today", "chosen_steps": [1580], "curve": curve,
    }}}  # fmt: skip
    gan_bench.write_outputs(records, [], tmp_path)
    text = (tmp_path / "RESULTS.md").read_text()
    assert "Budget chosen from one measured curve, VEEGAN-style ring8, nonsaturating, seed 0: HQ rises to 30 %." in text
    assert "Commands: `a`; then `b` (1 s, today)." in text and "![ring8 budget curve](gan2d_budget_curve_ring8.png)" in text
    assert (tmp_path / "gan2d_budget_curve_ring8.png").stat().st_size > 0
    assert "Not run yet. `python experiments/reproduce.py gan2d --budget cpu --only losses --data ring8,grid25`" in text


def test_records_written_by_two_tables_at_once_keep_each_others_runs(tmp_path: Path) -> None:
    """Two processes' saves interleave: each save adds its own entries to the file instead of overwriting it."""
    import threading

    def table(name: str) -> None:
        for i in range(20):
            gan_bench.update_records(tmp_path, lambda r, i=i: r["runs"].__setitem__(f"{name} seed={i}", {"i": i}))

    threads = [threading.Thread(target=table, args=(n,)) for n in ("ring", "grid")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    gan_bench.update_records(tmp_path, lambda r: r.update(speed={"steps": 1}))
    records = json.loads((tmp_path / "gan_results.json").read_text())
    assert len(records["runs"]) == 40 and records["speed"] == {"steps": 1}


def fake_mnist_run(row: gan_bench.Row, seed: int, fd: float, precision: float, recall: float, classes: float) -> dict:
    curve = [{"step": s, "epoch": s // 1000 - 1, "fd": fd * 2000 / s, "precision": precision, "recall": recall * s / 2000,
              "classes": classes, "class_entropy": 2.26} for s in (1000, 2000)]  # fmt: skip
    final = {f"val/{k}": v for k, v in curve[-1].items() if k not in ("step", "epoch")}
    return {**fake_run(row, seed, 0, 0, 0), "final": final, "curve": curve}


def test_mnist_table_has_a_row_per_variant_with_its_targets_and_the_real_data_reference(tmp_path: Path) -> None:
    classifier = Path("outputs/gan_bench/feature_classifier.pt")
    plain = gan_bench.mnist_rows(gan_bench.BUDGETS["full"], "/d", (0, 1), classifier)[0]
    ema = gan_bench.mnist_rows(gan_bench.BUDGETS["full"], "/d", (0, 1), classifier, ["model.ema_decay=0.999"])[0]
    assert ema.overrides == (*plain.overrides, "model.ema_decay=0.999")
    assert ema.name == "DCGAN-style, nonsaturating, model.ema_decay=0.999"
    records = {"runs": {}, "rows": {r.ident: r.as_record() for r in (plain, ema)}}
    for row, values in ((plain, [(30.0, 0.60, 0.90, 10), (26.0, 0.64, 0.88, 9)]),
                        (ema, [(12.0, 0.82, 0.86, 10), (10.0, 0.84, 0.90, 10)])):  # fmt: skip
        for seed, v in enumerate(values):
            records["runs"][gan_bench.run_key(row.overrides, seed)] = fake_mnist_run(row, seed, *v)
    records["mnist_real_reference"] = {"values": {"fd": 11.28, "precision": 0.912, "recall": 0.869, "classes": 10.0,
                                                  "class_entropy": 2.297}, "n": 2000, "seed": 0}  # fmt: skip
    (tmp_path / "RESULTS.md").write_text("# Results\n\n## GANs\n\nold\n")
    gan_bench.write_outputs(records, gan_bench.recorded_rows(records), tmp_path)
    lines = (tmp_path / "RESULTS.md").read_text().splitlines()
    assert sum(ln == "### MNIST GAN against steps" for ln in lines) == 1
    plain_line = next(ln for ln in lines if ln.startswith("| DCGAN-style, nonsaturating |"))
    ema_line = next(ln for ln in lines if ln.startswith("| DCGAN-style, nonsaturating, model.ema_decay=0.999 |"))
    assert "**28.00 ± 2.00** | **0.620 ± 0.020** | **0.890 ± 0.010** | **9.5 ± 0.5**" in plain_line
    # seed 1 of the plain row has 9 classes; its precision is below 0.8
    assert "10/10 in every seed: no; class_entropy ≥ 2.25: yes; precision ≥ 0.8: no; recall ≥ 0.8: yes" in plain_line
    assert "10/10 in every seed: yes; class_entropy ≥ 2.25: yes; precision ≥ 0.8: yes; recall ≥ 0.8: yes" in ema_line
    # late change: FD halves from step 1,000 to 2,000 (-11.00 mean), precision flat, recall doubles
    assert "| -11.00 / +0.000 / +0.440 since 1,000 |" in ema_line
    ref = next(ln for ln in lines if ln.startswith("| real test images (reference) |"))
    assert "| 11.28 | 0.912 | 0.869 | 10 | 2.297 |" in ref
    assert (tmp_path / "gan_mnist_curves.png").stat().st_size > 0


def test_gan_mnist_override_must_be_key_value_and_not_the_seed(tmp_path: Path) -> None:
    for bad in ("model.ema_decay", "seed=3"):
        with pytest.raises(SystemExit, match="--override takes KEY=VALUE"):
            gan_bench.main(["gan_mnist", "--override", bad, "--dry-run", "--write-to", str(tmp_path)])


def test_a_reading_is_printed_under_its_table_and_an_unknown_key_is_refused(tmp_path: Path) -> None:
    rows = gan_bench.gan2d_rows(gan_bench.BUDGETS["cpu"], 2, ("pacgan",), ("grid",), seeds=(0,))
    records = {"runs": {gan_bench.run_key(rows[0].overrides, 0): fake_run(rows[0], 0, 20, 0.5, 0.6)},
               "rows": {r.ident: r.as_record() for r in rows}}  # fmt: skip
    (tmp_path / "gan_results.json").write_text(json.dumps(records))
    (tmp_path / "RESULTS.md").write_text("# Results\n\n## GANs\n\nold\n")
    gan_bench.main(["reading", "pacgan_grid", "HQ still rises at the end.", "--write-to", str(tmp_path)])
    text = (tmp_path / "RESULTS.md").read_text()
    table_end = text.index("![pacgan grid curves]")
    assert text.index("*Reading:* HQ still rises at the end.") > table_end
    gan_bench.main(["reading", "pacgan_grid", "", "--write-to", str(tmp_path)])
    assert "*Reading:*" not in (tmp_path / "RESULTS.md").read_text()
    with pytest.raises(SystemExit, match="not one of"):
        gan_bench.main(["reading", "pacgan_gird", "x", "--write-to", str(tmp_path)])


def test_a_longer_budget_continues_the_shorter_run_and_ends_where_a_fresh_run_ends(tmp_path: Path) -> None:
    base = ("experiment=pacgan_ring", "model.pack=1", "data.batch_size=100", "trainer.check_val_every_n_epoch=1",
            "data.n_train=500", "data.n_val=300", "data.n_test=300", "model.eval_samples=500", "test=false")

    def row(epochs: int) -> gan_bench.Row:
        return gan_bench.Row("pacgan", "ring", "GAN", (*base[:3], f"trainer.max_epochs={epochs}", *base[3:]), (0,))

    short = gan_bench.run_one(row(1), 0, tmp_path / "a", threads=1, trainer=None)
    del short["commit"]  # as in the records written before runs recorded their commit
    records = {"runs": {gan_bench.run_key(row(1).overrides, 0): short}}
    start = gan_bench.shorter_run(row(2), 0, records)
    assert start is short and gan_bench.shorter_run(row(1), 0, records) is None
    assert gan_bench.shorter_run(gan_bench.Row("pacgan", "ring", "GAN", (*row(2).overrides, "loss=hinge"), (0,)), 0,
                                 records) is None  # other overrides differ: nothing to continue  # fmt: skip
    longer = gan_bench.run_one(row(2), 0, tmp_path / "a", threads=1, trainer=None, start_from=start)
    fresh = gan_bench.run_one(row(2), 0, tmp_path / "b", threads=1, trainer=None)
    assert [p["step"] for p in longer["curve"]] == [p["step"] for p in fresh["curve"]] == [5, 10]
    assert longer["curve"][0] == short["curve"][0]  # the shorter run's validation stays in the curve
    # it trained on from the checkpoint rather than again from scratch in the copied folder
    assert "Restored all states from the checkpoint" in (tmp_path / "a/logs/pacgan_ring_GAN_10_steps_0.log").read_text()
    assert longer["final"] == pytest.approx(fresh["final"], abs=1e-6)  # as if trained in one go
    assert longer["continued_from"]["steps"] == 5 and longer["wall_s"] > short["wall_s"]
    assert (Path(short["run_dir"]) / "checkpoints" / "last.ckpt").is_file()  # the shorter run's folder is kept
    assert "continued from the 5-step runs" in gan_bench.cost_cell([longer])


def test_packs_choose_the_pacgan_rows_and_a_bad_pack_is_refused(tmp_path: Path, capsys) -> None:
    gan_bench.main(["gan2d", "--only", "pacgan", "--data", "grid", "--packs", "1,3", "--seeds", "0", "--dry-run",
                    "--write-to", str(tmp_path)])  # fmt: skip
    shown = [ln.split(" seed")[0] for ln in capsys.readouterr().out.splitlines() if ln.startswith("[pacgan/")]
    assert shown == ["[pacgan/grid/GAN", "[pacgan/grid/PacGAN3"]
    with pytest.raises(SystemExit, match="--packs takes a subset"):
        gan_bench.main(["gan2d", "--packs", "1,5", "--dry-run", "--write-to", str(tmp_path)])


def test_wgan_gp_with_its_papers_five_critic_steps_is_a_row_of_its_own(tmp_path: Path, capsys) -> None:
    rows = gan_bench.gan2d_rows(gan_bench.BUDGETS["cpu"], 20, ("losses",), ("ring8",),
                                losses=("wgan_gp", "wgan_gp, 5 critic steps"))  # fmt: skip
    plain, five = (overrides_of(r) for r in rows)
    assert plain["loss"] == five["loss"] == "wgan_gp" and "model.n_critic" not in plain and five["model.n_critic"] == "5"
    assert gan_bench.steps_of(rows[0]) == gan_bench.steps_of(rows[1]) == 300 * 79  # generator steps, not critic steps
    gan_bench.main(["gan2d", "--only", "losses", "--data", "grid25", "--losses", "wgan_gp5", "--seeds", "0",
                    "--dry-run", "--write-to", str(tmp_path)])  # fmt: skip
    assert "[losses/grid25/wgan_gp, 5 critic steps seed 0: to run]" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="--losses takes a subset"):
        gan_bench.main(["gan2d", "--losses", "wgan", "--dry-run", "--write-to", str(tmp_path)])
