"""``python -m genlab.sample``: a checkpoint alone rebuilds its model and writes samples and reconstructions."""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from conftest import REPO, TINY, run_cli

from genlab.sample import main as sample_main

MODELS = ["vae", "ae", "gan"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Run folders of a VAE and an AE on digits (8x8 images) and a GAN on ring8 (2-D points), by model name."""
    root = tmp_path_factory.mktemp("sample_runs")
    # Two processes side by side (each mostly imports and tiny training); no test stage: only the checkpoints count.
    with ThreadPoolExecutor(2) as pool:
        procs = list(pool.map(lambda args: run_cli(*args, "test=false"), [
            ("-m", "model=vae,ae", "data=digits", *TINY, f"hydra.sweep.dir={root / 'digits'}"),
            ("model=gan", "data=ring8", "data.n_train=512", "model.eval_samples=200", *TINY, f"hydra.run.dir={root / 'gan'}"),
        ]))
    for proc in procs:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return {"vae": root / "digits" / "0", "ae": root / "digits" / "1", "gan": root / "gan"}


def test_vae_writes_samples_and_reconstructions_from_its_checkpoint(runs, tmp_path):
    out = tmp_path / "out"
    assert sample_main([f"ckpt={runs['vae'] / 'checkpoints' / 'best.ckpt'}", "n=12", f"out={out}"]) == 0
    assert {p.name for p in out.iterdir()} == {"samples.png", "samples.npz", "reconstructions.png", "reconstructions.npz"}
    samples = np.load(out / "samples.npz")["samples"]
    assert samples.shape == (12, 1, 8, 8) and np.isfinite(samples).all()
    assert samples.min() >= 0 and samples.max() <= 1  # Bernoulli means
    rec = np.load(out / "reconstructions.npz")
    assert rec["inputs"].shape == rec["reconstructions"].shape == (12, 1, 8, 8) and rec["labels"].shape == (12,)


def test_same_seed_same_samples_and_the_weights_are_the_checkpoint_s(runs, tmp_path):
    ckpt = runs["vae"] / "checkpoints" / "last.ckpt"
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        assert sample_main([f"ckpt={ckpt}", "n=5", f"seed={seed}", f"out={tmp_path / name}"]) == 0
    a, b, c = (np.load(tmp_path / name / "samples.npz")["samples"] for name in "abc")
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    # The decoder mean of z from the same seed, recomputed by hand from the stored weights.
    from genlab.checkpoints import load_genlab_checkpoint
    from genlab.sample import load_model

    model, _ = load_model(load_genlab_checkpoint(ckpt))
    torch.manual_seed(0)
    with torch.no_grad():
        assert np.allclose(model.sample(5).numpy(), a, atol=1e-6)
    state = torch.load(ckpt, weights_only=True)["state_dict"]
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


def test_ae_reconstructs_and_gan_samples_points(runs, tmp_path):
    assert sample_main([f"ckpt={runs['ae'] / 'checkpoints' / 'best.ckpt'}", "n=8", f"out={tmp_path / 'ae'}"]) == 0
    assert {p.name for p in (tmp_path / "ae").iterdir()} == {"reconstructions.png", "reconstructions.npz"}
    # The command line, with the default output folder: <run>/samples.
    proc = subprocess.run([sys.executable, "-m", "genlab.sample", f"ckpt={runs['gan'] / 'checkpoints' / 'last.ckpt'}",
                           "n=64"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    samples = np.load(runs["gan"] / "samples" / "samples.npz")["samples"]
    assert samples.shape == (64, 2) and (runs["gan"] / "samples" / "samples.png").is_file()
    assert "genlab.sample: wrote" in proc.stdout


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["n=4"], ["ckpt is required"]),
        (["ckpt=x.ckpt", "num=4"], ["'num=4'", "ckpt", "n"]),
        (["ckpt=x.ckpt", "n=zero"], ["n='zero'", "integer"]),
        (["ckpt=x.ckpt", "n=0"], ["n=0"]),
        (["ckpt=/nonexistent/x.ckpt"], ["no such file"]),
    ],
)
def test_bad_arguments_name_the_problem(args, words, capsys):
    assert sample_main(args) == 2
    err = capsys.readouterr().err
    for word in words:
        assert word in err, err


def test_unreadable_and_foreign_checkpoints_are_refused(tmp_path, capsys):
    (tmp_path / "junk.ckpt").write_bytes(b"\x00" * 100)
    torch.save({"state_dict": {}, "epoch": 0}, tmp_path / "plain.ckpt")
    assert sample_main([f"ckpt={tmp_path / 'junk.ckpt'}"]) == 2
    assert "cannot be read" in capsys.readouterr().err
    assert sample_main([f"ckpt={tmp_path / 'plain.ckpt'}"]) == 2
    assert "not a genlab checkpoint" in capsys.readouterr().err
