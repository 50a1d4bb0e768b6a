"""Evaluation cost vs pretraining cost on Fashion-MNIST (the issue's bound: eval <= 5% of pretraining).

    nice -n 10 python benchmarks/eval_cost.py [--method byol] [--train-images 12800] [--width 32] [--threads 1]

Pretraining throughput is measured on the real trainer over the first --train-images train images,
twice (before and after the evaluation, to average out a shared CPU's load); the evaluation is the real
end-of-training evaluation (ssl_zoo.launch.run_eval.evaluate_trained) on the full 60k train / 10k test split, first with
an empty feature cache, then again with it warm. One pretraining epoch is 60k images at the measured rate, so the
ratio for an E-epoch run is eval_s / (E x epoch_s). Appends a dated section to benchmarks/EVAL.md.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import tempfile
import time
from pathlib import Path

import torch

from ssl_zoo.config.load import load_config
from ssl_zoo.data.datasets import ImageData, load_data
from ssl_zoo.launch.run_eval import evaluate_trained
from ssl_zoo.train.build import build_trainer
from ssl_zoo.train.trainer import Trainer


def train_rate(cfg, data: ImageData, n: int, run_dir: Path) -> tuple[float, Trainer]:
    """Images/s of the real training loop over the first n train images (one epoch of them)."""
    subset = ImageData(data.train_x[:n], data.train_y[:n], data.test_x, data.test_y, data.num_classes)
    trainer = build_trainer(cfg, subset, run_dir)
    trainer.fit()
    return trainer.step * trainer.batch_size / trainer.elapsed, trainer


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--method", default="byol")
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--train-images", type=int, default=12800)
    parser.add_argument("--threads", type=int, default=0, help="torch threads for both parts (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    base = [f"method={args.method}", "data=fashion_mnist", "encoder=small_cnn", f"encoder.width={args.width}",
            "progress_bar=false", "trainer.epochs=1", "trainer.checkpoint_every=1000"]
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cfg = load_config(base + [f"out_dir={tmp}", "eval.random_init=true"])
        data = load_data(cfg.data)
        rate1, trainer = train_rate(cfg, data, args.train_images, tmp / "a")
        timings = []
        for _ in range(2):  # cold cache, then warm
            start = time.perf_counter()
            res = evaluate_trained(trainer.method, data, cfg, trainer.device, tmp / "eval", trainer.rows)
            timings.append((time.perf_counter() - start, res))
        rate2, _ = train_rate(cfg, data, args.train_images, tmp / "b")
    load_after = os.getloadavg()[0]
    rate = (rate1 + rate2) / 2
    epoch_s = len(data.train_y) / rate
    cold_s, cold = timings[0]
    warm_s, _ = timings[1]
    ri = cold["random_init"]["time"]
    baseline_s = ri["features_s"] + ri["probes_s"]
    own_s = cold_s - baseline_s

    def ratios(seconds: float) -> str:
        return " | ".join(f"{100 * seconds / (e * epoch_s):.1f}%" for e in (1, 3, 5, 10, 20))

    lines = [
        f"\n## {datetime.date.today()}: {args.method}, small_cnn width {args.width}, Fashion-MNIST",
        "",
        f"Machine: {platform.machine()} {platform.processor() or ''}, {os.cpu_count()} cores shared with other "
        f"jobs (load average {load_before:.1f} before, {load_after:.1f} after), {torch.get_num_threads()} torch "
        f"threads, torch {torch.__version__}, device {trainer.device}.",
        "",
        f"Sizes: eval on {len(data.train_y)} train / {len(data.test_y)} test images; backbone features "
        f"{cold['dim']}-d, projector output {cold['projector']['dim']}-d; kNN sweep {len(cold['knn_sweep'])} "
        f"(k, T) pairs; linear-probe sweep {len(cold['linear']['sweep'])} weight decays fit on "
        f"{cold['linear']['n_sweep_fit']} images, chosen on {cold['linear']['n_val']}, refit on "
        f"{cold['linear']['n_train']}. Pretraining rate measured on {args.train_images} images, batch "
        f"{trainer.batch_size}: {rate1:.0f} and {rate2:.0f} images/s (mean {rate:.0f}), so one 60k epoch = "
        f"{epoch_s:.0f} s.",
        "",
        "| part | seconds | share of pretraining for 1 / 3 / 5 / 10 / 20 epochs |",
        "|---|---|---|",
        f"| backbone features (cold cache) | {cold['time']['features_s']:.1f} | {ratios(cold['time']['features_s'])} |",
        f"| backbone probes (kNN sweep + linear) | {cold['time']['probes_s']:.1f} | {ratios(cold['time']['probes_s'])} |",
        f"| projector probes | {cold['projector']['time']['probes_s']:.1f} | "
        f"{ratios(cold['projector']['time']['probes_s'])} |",
        f"| **evaluation of the run** | **{own_s:.1f}** | **{ratios(own_s)}** |",
        f"| random-init baseline (features + probes; shared by sibling runs of the same seed) | {baseline_s:.1f} | "
        f"{ratios(baseline_s)} |",
        f"| everything, cold cache | {cold_s:.1f} | {ratios(cold_s)} |",
        f"| everything again, warm cache (`ssl-zoo eval` re-run) | {warm_s:.1f} | {ratios(warm_s)} |",
        "",
        f"Evaluation of the run stays within 5% of pretraining from {own_s / (0.05 * epoch_s):.1f} epochs on "
        f"({cold_s / (0.05 * epoch_s):.1f} with the random-init baseline computed for this run alone). Accuracies "
        f"(after {args.train_images} pretraining images, not a result): kNN {cold['knn_top1']}, linear "
        f"{cold['linear_top1']}.",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    with open(Path(__file__).with_name("EVAL.md"), "a") as f:
        f.write(text)


if __name__ == "__main__":
    main()
