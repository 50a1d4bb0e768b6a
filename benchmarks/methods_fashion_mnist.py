"""Every method on Fashion-MNIST with one CPU-sized encoder and an equal budget: kNN and linear probe of the
trained backbone vs the same backbone at its random initialisation (and raw pixels).

    nice -n 10 python benchmarks/methods_fashion_mnist.py [--train-images 10000] [--epochs 1] [--width 16]
        [--batch 64] [--eval-train 10000] [--threads 1] [--methods byol,dino] [--out runs/bench_methods]

Equal budget: the same encoder (small_cnn), seed (so the same initial weights), pretraining images, epochs,
batch, optimizer and LR schedule (cosine, no warm-up) for every method; each method keeps its own yaml defaults (heads, temperatures,
momentum) plus the overrides listed in TUNED (reported in the markdown). Pretraining uses the first
--train-images Fashion-MNIST train images (written as idx files so `data.root` points at them); the probes fit
on the first --eval-train of those and test on the full 10k test set. Random-init and raw-pixel numbers are
computed once (the initial weights are the same for every method). Appends a section to benchmarks/METHODS.md.
"""

from __future__ import annotations

import argparse
import datetime
import gzip
import platform
import struct
import time
from pathlib import Path

import numpy as np
import torch

from ssl_zoo.config.load import load_config
from ssl_zoo.data.datasets import read_idx
from ssl_zoo.launch.run import train
from ssl_zoo.runs.identity import run_dir_for
from ssl_zoo.runs.results_file import results_or_problem

METHODS = ["byol", "simsiam", "mocov2", "mocov3", "dino", "simclr", "barlow"]
# Per-method overrides of the shipped defaults, each needed to beat random init at this short budget (METHODS.md
# has the untuned numbers): MoCo v2's BN-free head barely moves a small CNN's near-collinear initial features in
# 156 steps; Barlow Twins under plain SGD is driven by its O(d)-sized loss, its published optimizer is LARS
# (BT's lr 0.2 x 64/256 = the 0.05 every method uses).
TUNED: dict[str, list[str]] = {"mocov2": ["method.projector.bn_hidden=true"], "barlow": ["trainer.optimizer=lars"]}
SOURCE = Path("/usr/share/datasets/fashion-mnist")


def write_idx(path: Path, array: np.ndarray) -> None:
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb", compresslevel=1) as f:
        f.write(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes())


def subset_root(out: Path, n: int) -> Path:
    """Fashion-MNIST with only the first n train images (the test set whole), in Debian's idx layout."""
    root = out / f"fashion_mnist_first{n}"
    root.mkdir(parents=True, exist_ok=True)
    for split, keep in (("train", n), ("t10k", None)):
        for kind, dims in (("images", 3), ("labels", 1)):
            name = f"{split}-{kind}-idx{dims}-ubyte"
            if not (root / f"{name}.gz").exists():
                write_idx(root / f"{name}.gz", read_idx(SOURCE / f"{name}.gz")[:keep])
    return root


def row(method: str, epochs: int, r: dict, total_s: float) -> str:
    return (f"| {method} | {epochs} | {r['wall_s']:.0f} | {total_s:.0f} | {r['images_per_s']:.0f} | "
            f"{r['knn_top1']:.2f} | {r['linear_top1']:.2f} | {r.get('online_probe_acc', float('nan')):.1f} | "
            f"{r.get('z_std', float('nan')):.3f} | {r.get('effective_rank', float('nan')):.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--train-images", type=int, default=10000)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--eval-train", type=int, default=10000)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--out", default="runs/bench_methods")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", nargs="*", default=[], help="extra overrides for every method (trainer.lr=0.1)")
    parser.add_argument("--baselines", action=argparse.BooleanOptionalAction, default=True,
                        help="random-init and raw-pixel probes (with the first method)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads; on a shared 2-core machine 1 thread ran 3-4x faster than 2")
    parser.add_argument("--md", default=str(Path(__file__).with_name("METHODS.md")), help="markdown to append to")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    root = subset_root(out, args.train_images)
    common = ["data=fashion_mnist", f"data.root={root.resolve()}", "encoder=small_cnn",
              f"encoder.width={args.width}", f"trainer.epochs={args.epochs}", f"trainer.batch_size={args.batch}",
              "trainer.warmup_epochs=0", "trainer.lr_scaling=none", f"eval.max_train={args.eval_train}", f"seed={args.seed}",
              "progress_bar=false", f"out_dir={out}", *args.set]
    lines, baselines = [], {}
    for i, method in enumerate(args.methods.split(",")):
        first = i == 0 and args.baselines
        cfg = load_config([f"method={method}", *common, *TUNED.get(method, []),
                           f"eval.random_init={str(first).lower()}", f"eval.raw_pixels={str(first).lower()}"])
        start, done = time.perf_counter(), results_or_problem(run_dir_for(cfg))[0]
        # A finished run of the same config (an earlier, interrupted benchmark) is reused, not retrained.
        r = done if done and done.get("status") == "finished" else results_or_problem(train(cfg))[0]
        if first:
            baselines = {k: r[k] for k in ("random_init", "raw_pixels")}
        lines.append(row(method, args.epochs, r, time.perf_counter() - start))
        print(lines[-1], flush=True)
    nan = {"knn_top1": float("nan"), "linear_top1": float("nan")}
    ri, px = baselines.get("random_init", nan), baselines.get("raw_pixels", nan)
    tuned = "; ".join(f"{m}: {' '.join(o)}" for m, o in TUNED.items()) or "none"
    text = (f"\n## {datetime.date.today()}: {platform.machine()}, {torch.get_num_threads()} threads, "
            f"torch {torch.__version__}\n\n"
            f"small_cnn width {args.width}; pretraining on the first {args.train_images} Fashion-MNIST train images "
            f"for {args.epochs} epoch(s) at batch {args.batch} (SGD lr 0.05 momentum 0.9 wd 5e-4, the trainer defaults, not scaled down for the batch; no warm-up, cosine to 0), "
            f"seed {args.seed}, overrides for all: {' '.join(args.set) or 'none'}; probes fit on the first {args.eval_train} train images, tested on the 10k test "
            f"set (kNN k=200 T=0.1; L-BFGS linear probe). Overrides of the shipped method defaults: {tuned}.\n\n"
            "| method | epochs | pretrain s | pretrain+eval s | images/s | kNN | linear | online probe | z_std "
            "| eff. rank |\n|---|---|---|---|---|---|---|---|---|---|\n" + "\n".join(lines) + "\n"
            f"| random init | - | - | - | - | {ri['knn_top1']:.2f} | {ri['linear_top1']:.2f} | - | - | - |\n"
            f"| raw pixels | - | - | - | - | {px['knn_top1']:.2f} | {px['linear_top1']:.2f} | - | - | - |\n")
    with open(args.md, "a") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
