"""The console of a default run: a header, the progress bar, a final metrics table, the resume and W&B hints,
and none of the third-party notices that ask nothing of the user."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys

from conftest import REPO, read_metrics

from genlab.console import DropNotices, drop_notices, metrics_table

# Each was printed by a default run before genlab filtered or avoided it (issue 10, point 4).
NOISE = [
    "The anonymous setting has no effect",  # W&B, caused by Lightning passing anonymous=None
    "Changes to your `wandb` environment variables will be ignored",  # Lightning setting WANDB_MODE late
    "litlogger",  # Lightning's advertisement for its own logger
    "was configured so 100% of the batches",  # limit_*_batches=1.0 spelt out in conf/trainer/cpu.yaml
    "LeafSpec",  # a torch deprecation inside Lightning
    "Seed set to",
    "TPU available: False",
    "Run history:",  # W&B's end-of-run summary (quiet=True)
    "`Trainer.fit` stopped: `max_epochs=2` reached",
]
# genlab's own rows (its lines, the metrics table) and the progress bars: what the console is made of, whatever
# the machine adds on stderr (a CUDA build's "GPU available: True", a package's notice about an optional dependency).
MAX_OWN_ROWS = 20
BAR = re.compile(r"(Epoch \d+|Sanity Checking|Validation|Testing)( DataLoader \d+)?: ")


def own_rows(rows: list[str]) -> list[str]:
    """The rows genlab prints (``genlab: ...`` and the table under ``genlab: final metrics``) and the progress bars."""
    own, in_table = [], False
    for row in rows:
        in_table = row == "genlab: final metrics" or (in_table and row.startswith("  "))
        if row.startswith("genlab: ") or in_table or BAR.match(row):
            own.append(row)
    return own


def screen_rows(text: str) -> list[str]:
    """The non-blank rows a terminal shows after printing ``text``: ``\\r`` goes back to the row's start and
    ESC[A up one row, as tqdm uses them to redraw its bars in place."""
    rows, row, col = [[]], 0, 0
    for token in re.findall(r"\x1b\[A|.|\n", text, flags=re.S):
        if token == "\x1b[A":
            row = max(0, row - 1)
        elif token == "\n":
            row, col = row + 1, 0
            if row == len(rows):
                rows.append([])
        elif token == "\r":
            col = 0
        else:
            line = rows[row]
            line.extend(" " * (col + 1 - len(line)))
            line[col] = token
            col += 1
    return [s for s in ("".join(r).rstrip() for r in rows) if s]


def test_screen_rows_follows_carriage_returns_and_cursor_up():
    assert screen_rows("a\rb\nxx\x1b[A\rc\n\n") == ["c", "xx"]
    assert len(screen_rows("1\n2\n3\n")) == 3


def test_default_run_console_is_header_bar_table_and_hints(tmp_path):
    run_dir = tmp_path / "run"
    # The default config with a shorter budget, on a machine with no W&B variables (so W&B runs offline).
    # Not conftest.run_cli: text mode would turn tqdm's carriage returns into newlines.
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_") and k != "HYDRA_FULL_ERROR"}
    args = ["trainer.max_epochs=2", "trainer.limit_train_batches=3", f"hydra.run.dir={run_dir}"]
    raw = subprocess.run([sys.executable, "-m", "genlab", *args], cwd=REPO, env=env, capture_output=True, timeout=300)
    proc = subprocess.CompletedProcess(raw.args, raw.returncode, raw.stdout.decode(), raw.stderr.decode())
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    for noise in NOISE:
        assert noise not in out, f"{noise!r} is printed:\n{out[-3000:]}"

    rows = screen_rows(proc.stdout)
    assert rows[0] == f"genlab: ae (99.7 K parameters) on digits, seed 0 -> run folder {run_dir}"
    assert any(r.startswith("Epoch 1: 100%") for r in rows), rows  # the progress bar, at its last epoch
    metrics = read_metrics(run_dir)
    table = rows[rows.index("genlab: final metrics") + 1 :]
    assert table[0].split() == ["metric", "train", "val", "test"]
    loss = next(r for r in table if r.split()[0] == "loss").split()
    assert loss[1:] == [f"{metrics[k]:.4g}" for k in ("train/loss", "val/loss", "test/loss")]
    assert not any("loss_step" in r or "loss_epoch" in r for r in table)  # Lightning's twins of train/loss
    assert any(r.endswith(f"trainer.max_epochs=2 trainer.limit_train_batches=3 ckpt_path=last hydra.run.dir={run_dir}")
               for r in rows), rows
    sync = next(r for r in rows if "wandb sync" in r).split("wandb sync ")[1]
    assert sync.startswith(f"{run_dir}/wandb/offline-run-") and (tmp_path / sync).is_dir()
    assert rows[-1] == f"genlab: run folder {run_dir}"
    # stdout is genlab's and the bars' alone (the machine's notices go to stderr, which is not counted) and short:
    # here a header, 2 bars (the last epoch, the test pass), the table's title, header and 2 metrics, 3 hints
    assert own_rows(rows) == rows and len(rows) < MAX_OWN_ROWS, rows


def test_metrics_table_rows_are_metrics_and_columns_splits():
    metrics = {"model": "vae", "seed": 0, "train/loss": 2.0, "train/loss_step": 9.0, "train/loss_epoch": 2.0,
               "val/loss": 1.5, "val/elbo": -1.5, "test/elbo": -1.25, "train/beta_step": 0.5}
    lines = metrics_table(metrics)
    assert lines[0].split() == ["metric", "train", "val", "test"]
    rows = {line.split()[0]: line for line in lines[1:]}
    assert set(rows) == {"loss", "elbo", "beta_step"}  # a _step metric without its plain twin stays
    assert rows["loss"].split()[1:] == ["2", "1.5"]
    header = lines[0]
    assert rows["elbo"][header.index("val") - 4 : header.index("val") + 3].strip() == "-1.5"  # under "val"
    assert metrics_table({"model": "ae"}) == []


def test_notice_filters_drop_only_the_listed_texts():
    drop_notices()
    rank_zero = logging.getLogger("lightning.pytorch.utilities.rank_zero")

    def shown(message: str) -> bool:
        record = rank_zero.makeRecord(rank_zero.name, logging.INFO, __file__, 0, message, None, None)
        return rank_zero.filter(record)

    assert not shown("GPU available: False, used: False")
    assert shown("GPU available: True (cuda), used: False")  # a GPU left unused is worth saying
    assert shown("`Trainer(limit_train_batches=0.5)` was configured so 50% of the batches will be used")
    assert sum(isinstance(f, DropNotices) for f in rank_zero.filters) == 1  # idempotent
