"""How well VaDE's GMM initialisation clusters MNIST, against the autoencoder pretraining that precedes it.

    GENLAB_DATA_DIR=../shared/data python experiments/vade_pretraining.py --epochs 40 --every 10 --seed 0
    python experiments/vade_pretraining.py --epochs 40 --input-dropout 0.2               # denoising
    python experiments/vade_pretraining.py --epochs 40 model.likelihood=gaussian_fixed    # squared error

Builds genlab's VaDE from ``experiment=vade_mnist`` plus the given overrides, trains it with its pretraining loss
(``VaDE.pretrain_loss``: reconstruct x from the encoder mean) and, every ``--every`` epochs, fits the model's own
initialisation (``VaDE.fit_prior``: ``model.gmm_n_init`` GMM restarts on the training codes) and scores argmax of
the responsibilities on all images (train, val and test, as the paper's 94.46%). The paper never released this
pretraining; the accuracy here is where the VaDE phase starts. One JSON line per checkpoint, on stdout and in --out.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--every", type=int, default=10, help="score the GMM initialisation every this many epochs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--input-dropout", type=float, default=0.0, help="denoising: drop input pixels with this rate")
    p.add_argument("--experiment", default="vade_mnist")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=None, help="a JSON-lines file for the results")
    p.add_argument("overrides", nargs="*", help="genlab overrides, e.g. model.optimizer.lr=1e-3")
    args = p.parse_args(argv)
    os.environ.setdefault("GENLAB_DATA_DIR", str(REPO.parent / "shared" / "data"))

    import lightning as L  # noqa: PLC0415 (after the arguments: --help stays fast)
    import torch  # noqa: PLC0415
    from hydra import compose, initialize_config_dir  # noqa: PLC0415

    from genlab import cpu_matmul  # noqa: PLC0415
    from genlab.config import instantiate_checked  # noqa: PLC0415
    from genlab.metrics.clustering import clustering_scores  # noqa: PLC0415

    torch.set_num_threads(args.threads)
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=[f"experiment={args.experiment}", f"seed={args.seed}", *args.overrides])
    matmul = cpu_matmul.select(cfg.get("cpu_matmul", "auto"))
    L.seed_everything(args.seed)
    data = instantiate_checked(cfg.data, "data")
    model = instantiate_checked(cfg.model, "model", data_shape=data.data_shape)
    optimizer = model.configure_optimizers()
    optimizer = optimizer[0] if isinstance(optimizer, list | tuple) else optimizer
    optimizer = optimizer["optimizer"] if isinstance(optimizer, dict) else optimizer
    x_train, _ = data.train_tensors()
    splits = [data.split_tensors(s) for s in ("train", "val", "test")]
    x_all, y_all = torch.cat([x for x, _ in splits]), torch.cat([y for _, y in splits])
    drop = torch.nn.Dropout(args.input_dropout)
    batch, results, start = int(cfg.data.batch_size), [], time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        model.train()
        total = 0.0
        for idx in torch.randperm(len(x_train)).split(batch):
            x = x_train[idx]
            loss = model.pretrain_loss(x, drop(x) if args.input_dropout else None)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(idx)
        if epoch % args.every and epoch != args.epochs:
            continue
        model.eval()
        with torch.no_grad():
            means = torch.cat([model.encode(x) for x in x_train.split(1000)])
            model.fit_prior(means, args.seed)
            clusters = torch.cat([model.cluster(x) for x in x_all.split(1000)])
        scores = clustering_scores(clusters.numpy(), y_all.numpy())
        row = {"epoch": epoch, "train_loss": round(total / len(x_train), 3), "minutes": round((time.perf_counter() - start) / 60, 2),
               **{k: round(float(v), 4) for k, v in scores.items()}, "seed": args.seed, "input_dropout": args.input_dropout,
               "overrides": args.overrides, "cpu_matmul": matmul}
        results.append(row)
        print(json.dumps(row), flush=True)
        if args.out:
            with args.out.open("a") as f:
                f.write(json.dumps(row) + "\n")
    return results


if __name__ == "__main__":
    main()
