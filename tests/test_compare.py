"""``python -m genlab.compare``: the differing config values and metrics of run folders, sorted, exported, plotted."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import warnings
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
    # the group choice; model.hidden differs only with it (one run per option); paths and equal keys dropped
    assert differing_keys(runs) == ["model"]
    header, rows = build_table(runs, sort="val/loss")
    assert header == ["run", "model", "val/elbo", "val/loss"]
    assert [r[0] for r in rows] == ["b/multiruns/s/10", "a/run", "b/multiruns/s/2"]  # NaN last
    header, rows = build_table(runs, sort="val/elbo", descending=True)
    assert [r[1] for r in rows] == ["vade", "vae", "iwae"]  # missing last in either direction
    assert compare_main([str(tmp_path), "--plot", "val/loss", "--out", str(tmp_path / "bar.png")]) == 0
    assert "bar plot" in capsys.readouterr().out


def test_keys_below_a_group_choice_show_only_when_they_vary_within_an_option(tmp_path):
    ae = {"_target_": "AE", "latent_dim": 2, "hidden": [8]}
    vae = {"_target_": "VAE", "latent_dim": 2, "hidden": [8], "beta": 1.0}
    fake_run(tmp_path / "0", {"model": ae}, {"model": "ae"}, {"val/loss": 1.0})
    fake_run(tmp_path / "1", {"model": {**ae, "latent_dim": 3}}, {"model": "ae"}, {"val/loss": 1.0})
    fake_run(tmp_path / "2", {"model": vae}, {"model": "vae"}, {"val/loss": 1.0})
    # model._target_ and model.beta come with the option; latent_dim was varied among the ae runs
    assert differing_keys(find_runs([tmp_path])) == ["model", "model.latent_dim"]
    # without group choices recorded every differing key shows
    for run in ("0", "1", "2"):
        (tmp_path / run / ".hydra" / "hydra.yaml").unlink()
    assert differing_keys(find_runs([tmp_path])) == ["model._target_", "model.beta", "model.latent_dim"]


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


# ---- the default table, --metrics globs, --by groups over seeds, --curves, --study -----------------------------
# Known metrics: test/nll of vae over seeds 0,1,2 is 100, 102, 107 (mean 103, deviations -3,-1,4: sample variance
# 26/2 = 13, std sqrt(13), se sqrt(13/3)); iwae has 95 and 96 and a run without test/nll (mean 95.5, std sqrt(.5),
# se .5, n=2 of 3).
NLL = {("vae", 0): 100.0, ("vae", 1): 102.0, ("vae", 2): 107.0, ("iwae", 0): 95.0, ("iwae", 1): 96.0}


@pytest.fixture
def seeds(tmp_path) -> Path:
    root = tmp_path / "seeds"
    for model in ("vae", "iwae"):
        for seed in range(3):
            metrics = {"val/loss": 10.0 * seed + (1 if model == "vae" else 2), "val/elbo": -1.0,
                       "train/loss_step": 9.0, "train/loss_epoch": 8.0, "train/loss": 8.0, "model": model, "seed": seed}
            if (model, seed) in NLL:
                metrics["test/nll"] = NLL[(model, seed)]
            config = {"seed": seed, "model": {"monitor": "val/loss", "latent_dim": 2}, "paths": {"output_dir": "x"}}
            run = fake_run(root / f"{model}_{seed}", config, {"model": model, "data": "mnist"}, metrics)
            # CSV logger file: train/loss_step at steps 0..3 = seed + (4, 3, 2, 1); vae only
            if model == "vae":
                rows = ["epoch,step,train/loss_step,val/loss"] + [f"0,{s},{seed + 4 - s}," for s in range(4)]
                rows.append(f"0,3,,{metrics['val/loss']}")
                (run / "csv").mkdir()
                (run / "csv" / "metrics.csv").write_text("\n".join(rows) + "\n")
    return root


def test_the_default_table_shows_the_monitor_and_test_metrics_without_step_epoch_duplicates(seeds, capsys):
    runs = find_runs([seeds])
    header, _ = build_table(runs)
    assert header == ["run", "model", "seed", "test/nll", "val/loss"]
    header, _ = build_table(runs, ["train/*"])  # asked for: the duplicates too
    assert header[3:] == ["train/loss", "train/loss_epoch", "train/loss_step"]
    assert compare_main([str(seeds), "--metrics", "val/*,test/nll"]) == 0
    assert capsys.readouterr().out.splitlines()[0].split() == ["run", "model", "seed", "val/elbo", "val/loss", "test/nll"]
    assert compare_main([str(seeds), "--metrics", "val/nope*"]) == 2
    assert "'val/nope*' matches no run" in capsys.readouterr().err


def test_by_model_gives_mean_std_and_standard_error_over_seeds(seeds, tmp_path, capsys):
    assert compare_main([str(seeds), "--by", "model", "--sort", "test/nll", "--csv", str(tmp_path / "g.csv"),
                         "--markdown", str(tmp_path / "g.md")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:3] == ["model", "n", "test/nll"]
    with (tmp_path / "g.csv").open() as f:
        table = {row["model"]: row for row in csv.DictReader(f)}
    assert list(table) == ["iwae", "vae"]  # sorted by mean test/nll
    vae, iwae = table["vae"], table["iwae"]
    assert (float(vae["test/nll mean"]), int(vae["test/nll n"]), int(vae["n"])) == (103.0, 3, 3)
    assert float(vae["test/nll std"]) == pytest.approx(13 ** 0.5, rel=1e-12)
    assert float(vae["test/nll sem"]) == pytest.approx((13 / 3) ** 0.5, rel=1e-12)
    assert (float(iwae["test/nll mean"]), int(iwae["test/nll n"])) == (95.5, 2)  # the run without it is left out
    assert float(iwae["test/nll std"]) == pytest.approx(0.5 ** 0.5) and float(iwae["test/nll sem"]) == pytest.approx(0.5)
    assert float(vae["val/loss mean"]) == 11.0 and float(vae["val/loss std"]) == pytest.approx(10.0)
    md = (tmp_path / "g.md").read_text().splitlines()
    assert md[0] == "| model | n | test/nll | val/loss |"
    assert md[2] == "| iwae | 3 | 95.5 ± 0.707 (se 0.5) n=2 | 12 ± 10 (se 5.8) |"
    assert md[3] == "| vae | 3 | 103 ± 3.61 (se 2.1) | 11 ± 10 (se 5.8) |"


def test_by_warns_when_a_group_mixes_other_settings_and_names_unknown_keys(seeds, capsys):
    assert compare_main([str(seeds), "--by", "seed"]) == 0  # each group mixes vae and iwae
    assert "runs of one group differ in ['model']" in capsys.readouterr().err
    assert compare_main([str(seeds), "--by", "modle"]) == 2
    assert "--by 'modle' is no config key" in capsys.readouterr().err


def test_curves_from_csv_logs_per_run_and_as_a_group_mean(seeds, tmp_path):
    from genlab.compare.curves import collect_curves

    runs = [r for r in find_runs([seeds]) if r.config["model"] == "vae"]
    name, curves = collect_curves(runs, "train/loss")  # found as train/loss_step
    assert name == "train/loss_step" and [c.mean for c in curves] == [[4, 3, 2, 1], [5, 4, 3, 2], [6, 5, 4, 3]]
    name, (group,) = collect_curves(runs, "train/loss", {"vae": runs})
    assert group.steps == [0, 1, 2, 3] and group.mean == [5, 4, 3, 2] and group.n_runs == 3
    assert group.std == pytest.approx([1.0] * 4)  # seeds 0, 1, 2 shift the curve by 0, 1, 2
    out = tmp_path / "c.png"
    assert compare_main([str(seeds), "--by", "model", "--curves", "train/loss", "--out", str(out)]) == 0
    assert out.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(KeyError, match="'val/nope' is in no run's CSV or TensorBoard log; logged: .*train/loss_step"):
        collect_curves(runs, "val/nope")


def test_curves_read_tensorboard_event_files_of_real_runs(sweep, tmp_path, capsys):
    from genlab.compare.curves import collect_curves

    runs = find_runs([sweep])
    name, curves = collect_curves(runs, "val/loss")
    assert name == "val/loss" and len(curves) == 2
    for run, curve in zip(runs, curves):  # the last logged val/loss is the final one in metrics.json
        assert curve.mean[-1] == pytest.approx(run.metrics["val/loss"], rel=1e-6)
    assert compare_main([str(sweep), "--curves", "train/loss", "--out", str(tmp_path / "tb.png")]) == 0
    # 3 steps log no train/loss_step (Lightning logs steps every 50): the epoch value is found instead
    assert "2 curves of train/loss_epoch" in capsys.readouterr().out


@pytest.fixture
def study_db(tmp_path) -> Path:
    """A SQLite study of 5 complete trials, value (x - 2)^2, and one failed trial."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    db = tmp_path / "search" / "optuna.db"
    db.parent.mkdir()
    study = optuna.create_study(study_name="toy", storage=f"sqlite:///{db}")
    dists = {"x": optuna.distributions.UniformDistribution(0, 4), "y": optuna.distributions.UniformDistribution(0, 1)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # add_trial is stable since 3.0
        for x, y in ((0.0, 0.1), (1.0, 0.9), (2.5, 0.5), (3.0, 0.2), (4.0, 0.7)):
            study.add_trial(optuna.trial.create_trial(params={"x": x, "y": y}, distributions=dists, value=(x - 2) ** 2))
        study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL))
    fake_run(db.parent / "2", {"seed": 0}, {}, {"val/loss": 0.25})  # the run folder of trial 2
    return db


def test_study_report_lists_the_best_trials_and_writes_optuna_plots(study_db, tmp_path, capsys):
    assert compare_main(["--study", str(study_db.parent), "--top", "3", "--csv", str(tmp_path / "s.csv")]) == 0
    out = capsys.readouterr().out
    assert "study toy: minimize; 6 trials (COMPLETE 5, FAIL 1)" in out
    with (tmp_path / "s.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [(r["trial"], float(r["value"]), float(r["x"])) for r in rows] == [("2", 0.25, 2.5), ("1", 1.0, 1.0),
                                                                            ("3", 1.0, 3.0)]
    assert rows[0]["run"] == str(study_db.parent / "2") and rows[1]["run"] == ""
    for name in ("optimization_history", "param_importances"):
        png = study_db.parent / f"toy_{name}.png"
        assert png.read_bytes()[:4] == b"\x89PNG" and f"wrote {png}" in out


def test_study_report_names_the_studies_when_the_name_is_wrong(study_db, capsys):
    assert compare_main(["--study", f"sqlite:///{study_db}", "--name", "tyo"]) == 2
    err = capsys.readouterr().err
    assert "--name 'tyo' is no study" in err and "its studies: ['toy']" in err
    assert compare_main(["--study", str(study_db.parent / "nope.db")]) == 2
    assert "no such database" in capsys.readouterr().err


@pytest.mark.parametrize(("n_curves", "legends"), [(3, [None, None]), (14, [(1.02, 1.0)])])
def test_a_crowded_figure_keeps_one_legend_beside_it_and_no_two_curves_look_alike(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, n_curves: int, legends: list
) -> None:
    from matplotlib.axes import Axes

    from genlab.compare.curves import mean_curve, plot_panels

    drawn: list = []
    legend, plot = Axes.legend, Axes.plot
    monkeypatch.setattr(Axes, "legend",
                        lambda ax, *a, **kw: drawn.append(kw.get("bbox_to_anchor")) or legend(ax, *a, **kw))
    looks: list = []
    monkeypatch.setattr(Axes, "plot",  # (colour index, line style) of each line drawn
                        lambda ax, *a, **kw: looks.append((len(looks) % 10, kw["linestyle"])) or plot(ax, *a, **kw))
    curves = [mean_curve(f"run {i}", [[(1, float(i)), (2, float(i))]]) for i in range(n_curves)]
    plot_panels(tmp_path / "curves.png", [("a", curves), ("b", curves)])
    # Up to 12 curves each panel has its own legend inside; past that one legend, right of the last panel (it was
    # dropped, so 14 curves could not be told apart). The colour cycle repeats after 10: the line style must not.
    assert drawn == legends
    assert len(set(looks[:n_curves])) == n_curves
