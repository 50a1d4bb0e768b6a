"""BYOL and SimSiam on Fashion-MNIST with a CPU-sized encoder: trained vs random init vs raw pixels.

    python benchmarks/fashion_mnist_core.py [--epochs 3] [--out runs/bench_core]

Writes benchmarks/FASHION_MNIST_CORE.md with the measured table (appends a dated section).
"""

from __future__ import annotations

import argparse
import datetime
import platform
from pathlib import Path

import torch

from ssl_zoo.config.load import load_config
from ssl_zoo.launch.run import train
from ssl_zoo.runs.results_file import results_or_problem


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--out", default="runs/bench_core")
    parser.add_argument("--methods", default="byol,simsiam")
    args = parser.parse_args()
    lines, cfg = [], None
    for method in args.methods.split(","):
        cfg = load_config([f"method={method}", "data=fashion_mnist", "encoder=small_cnn",
                           f"trainer.epochs={args.epochs}", "eval.raw_pixels=true", f"out_dir={args.out}",
                           "progress_bar=false"])
        run_dir = train(cfg)
        r = results_or_problem(run_dir)[0]
        lines.append(f"| {method} | {args.epochs} | {r['wall_s']:.0f} | {r['eval_s']:.0f} | {r['images_per_s']:.0f} | "
                     f"{r['knn_top1']:.2f} | {r['linear_top1']:.2f} | {r['random_init']['knn_top1']:.2f} | "
                     f"{r['random_init']['linear_top1']:.2f} | {r['raw_pixels']['knn_top1']:.2f} | "
                     f"{r['raw_pixels']['linear_top1']:.2f} |")
        print(lines[-1], flush=True)
    header = (f"\n## {datetime.date.today()} — {platform.processor() or platform.machine()}, "
              f"{torch.get_num_threads()} threads, torch {torch.__version__}\n\n"
              f"`ssl-zoo train method=<method> data=fashion_mnist trainer.epochs={args.epochs} eval.raw_pixels=true`: "
              f"small_cnn (width {cfg.encoder.width}), batch {cfg.trainer.batch_size}, image size "
              f"{cfg.data.image_size}, default method configs; pretrain s = wall time of the training loop.\n\n"
              "| method | epochs | pretrain s | eval s | images/s | kNN | linear | random kNN | random linear | pixels kNN "
              "| pixels linear |\n|---|---|---|---|---|---|---|---|---|---|---|\n")
    with open(Path(__file__).with_name("FASHION_MNIST_CORE.md"), "a") as f:
        f.write(header + "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
