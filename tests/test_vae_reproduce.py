"""experiments/reproduce.py: one subcommand per table; its commands compose; it rewrites only its own section."""

from __future__ import annotations

import importlib.util
import shlex
import sys
from pathlib import Path

import pytest
from conftest import REPO
from hydra import compose, initialize_config_dir

sys.path.insert(0, str(REPO / "experiments"))  # reproduce.py imports its sibling provenance.py
spec = importlib.util.spec_from_file_location("reproduce", REPO / "experiments" / "reproduce.py")
reproduce = importlib.util.module_from_spec(spec)
sys.modules["reproduce"] = reproduce  # dataclasses look their module up there
spec.loader.exec_module(reproduce)


def test_write_section_replaces_only_its_section(tmp_path: Path) -> None:
    results = tmp_path / "RESULTS.md"
    results.write_text("# Results\n\n## GAN family\n\ngan rows\n\n## VAE family\n\nold rows\n\n## Later\n\nkept\n")
    reproduce.write_section("## VAE family", "## VAE family\n\nnew rows\n", results)
    text = results.read_text()
    assert "gan rows" in text and "kept" in text and "new rows" in text and "old rows" not in text
    assert text.index("## GAN family") < text.index("## VAE family") < text.index("## Later")
    fresh = tmp_path / "NEW.md"
    reproduce.write_section("## VaDE", "## VaDE\n\nrows\n", fresh)
    assert fresh.read_text().startswith("# Results\n\n## VaDE")


def dry_run(capsys, tmp_path: Path, *args: str) -> list[list[str]]:
    records = tmp_path / "records.json"
    reproduce.main([*args, "--dry-run", "--records", str(records), "--results", str(tmp_path / "R.md")])
    assert not records.exists() and not (tmp_path / "R.md").exists()  # a dry run runs and writes nothing
    lines = capsys.readouterr().out.strip().splitlines()
    assert all(line.startswith("python -m genlab ") for line in lines)
    return [shlex.split(line)[3:] for line in lines]


def composed(overrides: list[str]):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        keep = [o for o in overrides if not o.startswith(("hydra.", "trainer.enable_progress_bar"))]
        return compose(config_name="config", overrides=keep)


@pytest.mark.parametrize(
    ("budget", "batch", "epochs", "schedule"), [("cpu", 100, 200, "step"), ("paper", 20, 3280, "iwae_passes")]
)
def test_vae_dry_run_prints_the_three_runs_on_the_papers_protocol(capsys, tmp_path, budget, batch, epochs, schedule):
    commands = dry_run(capsys, tmp_path, "vae", "--budget", budget, "--only", "vae,iwae5,iwae50")  # 2 layers: own test
    ks = []
    for overrides in commands:
        cfg = composed(overrides)
        assert (cfg.data.batch_size, cfg.trainer.max_epochs, cfg.model.lr_schedule) == (batch, epochs, schedule)
        assert (cfg.data.val_size, cfg.model.init_output_bias, cfg.model.active_units_train) == (400, "data", 500)
        assert cfg.model.encoder.hidden == [200, 200] and cfg.model.latent_dim == 50 and cfg.model.eval_k == 5000
        assert cfg.callbacks.learning_curve.k == 5000
        ks.append((cfg.model.objective, cfg.model.k))
        assert f"hydra.run.dir={tmp_path}" not in overrides[-1]  # run folders are under --out, not the records
    assert ks == [("elbo", 1), ("iwae", 5), ("iwae", 50)]
    if budget == "cpu":
        assert cfg.trainer.max_time == "00:02:50:00" and cfg.model.lr_decay == pytest.approx(10 ** (-1 / 7), abs=1e-4)


def test_vade_dry_run_gives_one_command_per_seed_scored_on_all_images(capsys, tmp_path) -> None:
    commands = dry_run(capsys, tmp_path, "vade", "--budget", "paper")
    assert len(commands) == 5
    cfgs = [composed(c) for c in commands]
    assert [c.seed for c in cfgs] == [0, 1, 2, 3, 4]
    assert len({c[-1] for c in commands}) == 5  # a run folder per seed
    for cfg in cfgs:
        assert (cfg.model.eval_on, cfg.model.finetune_lr_factor, cfg.trainer.max_epochs) == ("all", 1.0, 510)
        assert cfg.model.encoder.hidden == [500, 500, 2000] and cfg.data.batch_size == 100


def test_vade_section_has_a_row_per_seed_and_mean_std_best_over_seeds(tmp_path: Path) -> None:
    def record(seed: int, acc: float) -> dict:
        return {
            "name": "vade",
            "budget": "cpu",
            "seed": seed,
            "command": f"python -m genlab model.pretrain_epochs=1 seed={seed}",
            "wall_s": 600.0,
            "cpu_s": 900.0,
            "load": [2.0, 3.0],
            "epochs": 150,
            "machine": "cpu, 2 cores",
            "date": "2026-01-01 00:00 UTC",
            "curve": [[0, 0.5], [1, acc - 0.3], [2, acc]],
            "metrics": {"test/all_acc": acc, "test/all_nmi": acc - 0.1, "test/all_ari": acc - 0.2, "test/acc": acc},
        }

    records = {f"vade:cpu:{s}": record(s, acc) for s, acc in enumerate([0.8, 0.9, 0.85])}
    text = reproduce.section(reproduce.TABLES["vade"], records, tmp_path / "curves", tmp_path / "RESULTS.md")
    rows = [line for line in text.splitlines() if line.startswith("| VaDE")]
    assert len(rows) == 4 and "**acc 90.00%** (all 70k)" in rows[1]
    assert "val acc after the GMM initialisation 60.00%" in rows[1]  # the curve at epoch pretrain_epochs
    assert "acc 85.00 ± 5.00%, best 90.00%" in rows[3] and "NMI 0.75 ± 0.05" in rows[3]
    assert "10.0 min wall (15.0 CPU-min; load average 2.0 -> 3.0)" in rows[0]
    assert (tmp_path / "curves" / "vade_cpu.png").is_file() and "](curves/vade_cpu.png)" in text


def test_a_delegated_subcommand_gets_its_own_options_and_is_dispatched(tmp_path, monkeypatch, capsys) -> None:
    (tmp_path / "fake_bench.py").write_text(
        "def add_arguments(parser, name):\n    parser.add_argument('--budget', default='cpu')\n"
        "def dispatch(args):\n    print('dispatched', args.what, args.budget)\n"
    )
    monkeypatch.setattr(reproduce, "EXPERIMENTS", tmp_path)
    monkeypatch.setattr(reproduce, "DELEGATED", {"toy": "fake_bench.py"})
    reproduce.main(["toy", "--budget", "paper"])
    assert capsys.readouterr().out.strip() == "dispatched toy paper"
    with pytest.raises(SystemExit):
        reproduce.main(["toy", "--unknown"])


def test_vae_section_compares_the_runs_at_the_epochs_every_curve_has(tmp_path: Path) -> None:
    def record(name: str, seed: int, curve: list[list[float]]) -> dict:
        return {
            "name": name, "budget": "cpu", "seed": seed, "command": "python -m genlab", "wall_s": 60.0,
            "cpu_s": 60.0, "load": [1.0, 1.0], "epochs": 30, "machine": "cpu", "date": "2026-01-01 00:00 UTC",
            "curve": curve, "metrics": {"test/nll": curve[-1][1]},
        }

    records = {
        "vae:cpu:0": record("vae", 0, [[9, 100.0], [19, 95.0], [29, 90.0]]),
        "iwae5:cpu:0": record("iwae5", 0, [[9, 99.0], [19, 96.0], [29, 89.0]]),
        "iwae5:cpu:1": record("iwae5", 1, [[9, 101.0], [19, 98.0], [29, 87.0]]),
        "iwae50:cpu:0": record("iwae50", 0, [[9, 98.0], [19, 94.0]]),  # stopped early: epoch 30 is not shared
    }
    text = reproduce.section(reproduce.TABLES["vae"], records, tmp_path / "curves", tmp_path / "RESULTS.md")
    rows = [line for line in text.splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert rows == [
        "| 10 | 100.00 | 100.00 | 98.00 | iwae50 < vae < iwae5 |",
        "| 20 | 95.00 | 97.00 | 94.00 | iwae50 < vae < iwae5 |",
    ]
    assert "| epoch | vae | iwae5 | iwae50 | order, best first |" in text
