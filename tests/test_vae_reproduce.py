"""experiments/reproduce.py: its commands compose, and it rewrites only the VAE section of RESULTS.md."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from conftest import REPO
from hydra import compose, initialize_config_dir

spec = importlib.util.spec_from_file_location("reproduce", REPO / "experiments" / "reproduce.py")
reproduce = importlib.util.module_from_spec(spec)
sys.modules["reproduce"] = reproduce  # dataclasses look their module up there
spec.loader.exec_module(reproduce)


def test_write_section_replaces_only_the_vae_section(tmp_path: Path) -> None:
    results = tmp_path / "RESULTS.md"
    results.write_text("# Results\n\n## GAN family\n\ngan rows\n\n## VAE family\n\nold rows\n\n## Later\n\nkept\n")
    reproduce.write_section("## VAE family\n\nnew rows\n", results)
    text = results.read_text()
    assert "gan rows" in text and "kept" in text and "new rows" in text and "old rows" not in text
    assert text.index("## GAN family") < text.index("## VAE family") < text.index("## Later")
    fresh = tmp_path / "NEW.md"
    reproduce.write_section("## VAE family\n\nrows\n", fresh)
    assert fresh.read_text().startswith("# Results\n\n## VAE family")


def test_section_shows_measured_beside_paper_with_command_and_budget() -> None:
    record = {
        "command": "python -m genlab experiment=iwae_mnist model.k=50",
        "wall_s": 300.0,
        "cpu_s": 540.0,
        "load": 2.0,
        "epochs": 5,
        "machine": "cpu, 2 cores",
        "date": "2026-01-01 00:00 UTC",
        "metrics": {"test/nll": 95.123, "test/elbo": -99.0, "test/kl": 20.0, "test/active_units": 17.0},
    }
    text = reproduce.section({"iwae50:small": record})
    row = next(line for line in text.splitlines() if line.startswith("| IWAE k=50"))
    assert (
        "NLL 95.12" in row
        and "NLL 84.78" in row
        and "model.k=50" in row
        and "5 epochs, 5.0 min wall (9.0 CPU-min" in row
    )


def test_every_reproduction_command_composes_with_its_budget() -> None:
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        for budget in ("small", "paper"):
            for rep in reproduce.REPRODUCTIONS:
                overrides = [o for o in reproduce.command(rep, budget, None) if "enable_progress_bar" not in o]
                cfg = compose(config_name="config", overrides=overrides)
                assert cfg.data.dataset == "mnist", rep.name
                if rep.preset == "iwae_mnist":
                    assert cfg.model.encoder.hidden == [200, 200] and cfg.model.latent_dim == 50
                    assert cfg.trainer.max_epochs == (3 if budget == "small" else 3280)
                else:
                    assert cfg.model.encoder.hidden == [500, 500, 2000] and cfg.model.n_clusters == 10
