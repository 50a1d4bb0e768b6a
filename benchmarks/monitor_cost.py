"""Per-epoch monitor cost against an epoch's training time: the default digits run and one run of the collapse
study (data=fashion_mnist); prints a markdown table for benchmarks/MONITOR_COST.md.

    python benchmarks/monitor_cost.py                       # both settings, 4 epochs each
    python benchmarks/monitor_cost.py --only digits --epochs 3 monitor.lidar_views=8   # overrides for the runs

Training time is the epoch's step loop (Trainer._run_epoch); the monitor is EpochMonitor.metrics at the epoch's end
(z_std, RankMe, α-ReQ, alignment, uniformity, LiDAR), with LiDAR's share timed on its own. Medians over epochs
2.. (the first warms up). The machine's load (`uptime`) is taken before and after each run: other work on a
shared machine slows both parts.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import time

from ssl_zoo import api
from ssl_zoo.evaluation import monitors
from ssl_zoo.train import trainer as trainer_module
from ssl_zoo.train.epoch_monitor import EpochMonitor

SETTINGS = {
    "digits (default)": [],
    "collapse_study (byol/none)": ["experiment=collapse_study", "ablation=none",
                                   "method.projector.hidden_dim=1024", "method.projector.out_dim=128",
                                   "method.predictor.hidden_dim=1024", "method.predictor.out_dim=128"],
}


def _load() -> str:
    out = subprocess.run(["uptime"], capture_output=True, text=True).stdout
    return out.rsplit("load average:", 1)[-1].strip()


def _timed(owner, name: str, log: list[float]):
    real = getattr(owner, name)

    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return real(*args, **kwargs)
        finally:
            log.append(time.perf_counter() - start)

    setattr(owner, name, wrapper)
    return real


def measure(overrides: list[str], epochs: int) -> dict:
    train_s, monitor_s, lidar_s, alpha_s, sizes = [], [], [], [], []
    real_metrics = EpochMonitor.metrics

    def sized(self, method):  # the images actually monitored: a test set smaller than num_images caps them
        sizes.append(f"{len(self)} (LiDAR {self.lidar_images} × {self.lidar_views if self.lidar_images > 1 else 0})")
        return real_metrics(self, method)

    EpochMonitor.metrics = sized
    originals = [(trainer_module.Trainer, "_run_epoch", _timed(trainer_module.Trainer, "_run_epoch", train_s)),
                 (EpochMonitor, "metrics", _timed(EpochMonitor, "metrics", monitor_s)),
                 (monitors, "lidar_metrics", _timed(monitors, "lidar_metrics", lidar_s)),
                 (monitors, "alpha_req", _timed(monitors, "alpha_req", alpha_s))]
    try:
        with tempfile.TemporaryDirectory() as out:
            cfg = api.config("byol", *overrides, f"trainer.epochs={epochs}", "eval.enabled=false", "progress_bar=false",
                             f"out_dir={out}")
            before = _load()
            api.train(cfg)
            after = _load()
    finally:
        for owner, name, real in reversed(originals):
            setattr(owner, name, real)
        EpochMonitor.metrics = real_metrics
    keep = slice(1, None) if epochs > 1 else slice(None)
    train, monitor = statistics.median(train_s[keep]), statistics.median(monitor_s[keep])
    lidar = statistics.median(lidar_s[keep]) if lidar_s else 0.0
    per_epoch = len(alpha_s) // max(len(monitor_s), 1)  # one α-ReQ per embedding per epoch
    alpha = statistics.median(sum(alpha_s[i:i + per_epoch]) for i in range(0, len(alpha_s), per_epoch)) if per_epoch else 0.0
    return {"train": train, "monitor": monitor, "lidar": lidar, "alpha": alpha, "load": f"{before} → {after}",
            "images": sizes[-1],
            "data": str(cfg.data.name)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--only", choices=[name.split()[0] for name in SETTINGS], help="one setting only")
    parser.add_argument("overrides", nargs="*", help="config overrides for both runs")
    args = parser.parse_args()
    print("| setting | monitor images | epoch train s | monitor s | of which α-ReQ s | of which LiDAR s | monitor / train "
          "| load (1, 5, 15 min) before → after |")
    print("|---|---|---|---|---|---|---|---|")
    for name, overrides in SETTINGS.items():
        if args.only and not name.startswith(args.only):
            continue
        r = measure([*overrides, *args.overrides], args.epochs)
        print(f"| {name} | {r['images']} | {r['train']:.2f} | {r['monitor']:.3f} | {r['alpha']:.3f} | {r['lidar']:.3f} | "
              f"{100 * r['monitor'] / r['train']:.1f}% | {r['load']} |", flush=True)


if __name__ == "__main__":
    main()
