"""One-off: convert gan_results.json, vae_results.json and vade_results.json to experiments/tables/*.jsonl.

Nothing is rerun: every line is an old record's run, its command, final metrics, provenance and curve (the
table's curve metrics only). Removed with the old scripts once the rendered numbers were compared.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "tables"
LOSS_ROWS = {(): "nonsaturating", ("loss=minimax",): "minimax", ("loss=wgan_gp",): "wgan_gp",
             ("loss=wgan_gp", "model.n_critic=5"): "wgan_gp, 5 critic steps", ("loss=hinge",): "hinge",
             ("loss=lsgan",): "lsgan"}
GAN_CURVES = ("modes", "hq", "mode_kl", "fd", "precision", "recall", "classes")


def commit_of(text: str | None) -> dict:
    return {"commit": text.removesuffix("+dirty") if text else None, "dirty": bool(text and text.endswith("+dirty"))}


def machine_of(text: str) -> tuple[str, int | None]:
    threads = re.search(r"(\d+) thread", text)
    return re.sub(r", \d+ threads? per run$", "", text), int(threads.group(1)) if threads else None


def gan_place(o: list[str]) -> tuple[str, str, str]:
    """(table, row, budget) of an old gan_bench run from its overrides."""
    values = dict(x.split("=", 1) for x in o)
    experiment = values["experiment"]
    if experiment.startswith("pacgan_"):
        pack = int(values["model.pack"])
        epochs = int(values["trainer.max_epochs"]) // pack
        return experiment, "GAN" if pack == 1 else f"PacGAN{pack}", {20: "cpu", 60: "cpu_long"}[epochs]
    if experiment in ("gan_ring8", "gan_grid25"):
        extra = tuple(x for x in o[4:])
        return "losses_" + experiment[4:], LOSS_ROWS[extra], "cpu"
    if any("channels" in x for x in o):
        return "gan_mnist", "4x channels", "short"
    return "gan_mnist", "DCGAN-style, nonsaturating", "long" if o[-1] == "trainer.max_epochs=60" else "full"


def convert_gan(records: dict, lines: dict) -> None:
    runs = records["runs"]
    by_dir = {r["run_dir"]: r for r in runs.values()}
    for rec in runs.values():
        table, row, budget = gan_place(rec["overrides"])
        earlier = rec.get("continued_from")
        prior = by_dir.get(earlier["run_dir"]) if earlier else None
        prov = {**commit_of(rec.get("commit")), "date": rec["date"], "machine": rec["machine"],
                "threads": rec["threads"], "cpu_matmul": rec.get("cpu_matmul"),
                "wall_s": round(rec["wall_s"] - (earlier["wall_s"] if earlier else 0.0), 1),
                "cpu_s": round(rec["cpu_s"] - (prior["cpu_s"] if prior else 0.0), 1),
                "load": {"mean": rec["load_mean"], "max": rec["load_max"]}}
        line = {"row": row, "budget": budget, "seed": rec["seed"], "command": rec["command"],
                "folder": rec["run_dir"], "epochs": rec["epochs"], "metrics": rec["final"], "provenance": prov,
                "curve": {f"val/{k}": [[p["step"], p[k]] for p in rec["curve"] if k in p] for k in GAN_CURVES
                          if any(k in p for p in rec["curve"])}}
        if earlier:
            line["continued_from"] = {"budget": "full" if table == "gan_mnist" else "cpu", "epochs": earlier["epochs"],
                                      "commit": earlier["commit"], "wall_s": earlier["wall_s"],
                                      "cpu_s": prior["cpu_s"]}
        lines[table].append(line)
    # the curve the toy budget was chosen from: nonsaturating ring8 seed 0 trained on to 600 epochs
    curve = records["budget_curves"]["ring8"]
    last = curve["curve"][-1]
    lines["losses_ring8"].append({
        "row": "nonsaturating", "budget": "long", "seed": 0, "command": curve["commands"][1], "folder": None,
        "epochs": last["epoch"] + 1, "metrics": {f"val/{k}": last[k] for k in ("modes", "hq", "mode_kl")},
        "provenance": {"commit": None, "dirty": False, "date": curve["date"], "threads": 1, "wall_s": 631.0,
                       "cpu_s": 247.0, "load": {"start": 2.4},
                       "note": "in all, both parts; nice 19 beside two full-core runs, load average 5.3-6.9 during"},
        "curve": {f"val/{k}": [[p["step"], p[k]] for p in curve["curve"]] for k in ("modes", "hq", "mode_kl")},
        "continued_from": {"budget": "cpu", "epochs": 300, "commit": None, "wall_s": 0.0, "cpu_s": 0.0}})
    for data, rec in records["modes"].items():  # 15 epochs, one sweep of 5 losses x 3 seeds
        for loss, values in rec["losses"].items():
            for seed in range(len(values["val/modes"])):
                lines[f"losses_{data}"].append({
                    "row": loss, "budget": "early", "seed": seed,
                    "command": f"OMP_NUM_THREADS=1 python -m genlab experiment=gan_{data} loss={loss} seed={seed}",
                    "folder": None, "epochs": rec["epochs"], "metrics": {k: v[seed] for k, v in values.items()},
                    "provenance": {"commit": None, "dirty": False, "date": rec["date"], "machine": rec["machine"],
                                   "note": f"one of {rec['runs']} runs of `{rec['command']}`: "
                                           f"{rec['wall_s'] / 60:.1f} min wall in all, load average {rec['load']}"},
                    "curve": {}})
    early = records["mnist"]
    lines["gan_mnist"].append({
        "row": "DCGAN-style, nonsaturating", "budget": "early", "seed": 0, "command": early["command"],
        "folder": None, "epochs": early["epochs"], "metrics": early["metrics"],
        "provenance": {"commit": None, "dirty": False, "date": early["date"], "machine": early["machine"],
                       "wall_s": round(early["wall_s"], 1),
                       "note": f"load average {early['load']}; its own feature classifier, "
                               f"{100 * early['classifier_accuracy']:.1f} % held-out accuracy"},
        "curve": {}})


def convert_vae(path: Path, table: str, rows: dict[str, str], curve_metric: str, lines: dict) -> None:
    for rec in json.loads(path.read_text()).values():
        machine, threads = machine_of(rec["machine"])
        load = rec["load"]
        prov = {**commit_of(rec.get("commit")), "date": rec["date"], "machine": machine, "threads": threads,
                "cpu_matmul": rec.get("cpu_matmul"), "wall_s": rec["wall_s"], "cpu_s": rec["cpu_s"]}
        if isinstance(load, list):
            prov["load"] = {"start": load[0], "end": load[1]}
        else:
            prov["note"] = f"load average {load}"
        if rec.get("resumed"):
            prov["note"] = "resumed after an interruption: the time of the resumed part"
        lines[table].append({
            "row": rows[rec["name"]], "budget": rec["budget"], "seed": rec.get("seed", 0), "command": rec["command"],
            "folder": rec["run_dir"], "epochs": rec["epochs"], "metrics": rec["metrics"], "provenance": prov,
            "curve": {curve_metric: [[e + 1, v] for e, v in rec["curve"]]} if rec.get("curve") else {}})


def main() -> None:
    lines: dict[str, list[dict]] = defaultdict(list)
    convert_gan(json.loads((HERE / "gan_results.json").read_text()), lines)
    convert_vae(HERE / "vae_results.json", "iwae", {"vae": "VAE", "iwae5": "IWAE k=5", "iwae50": "IWAE k=50"},
                "curve/test_nll", lines)
    convert_vae(HERE / "vade_results.json", "vade", {"vade": "VaDE"}, "val/acc", lines)
    OUT.mkdir(exist_ok=True)
    for table, recs in lines.items():
        recs.sort(key=lambda r: (r["budget"], r["row"], r["seed"]))
        (OUT / f"{table}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
        print(f"{table}: {len(recs)} runs")


if __name__ == "__main__":
    main()
