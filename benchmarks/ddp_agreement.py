"""How closely a DDP run (torchrun, 2 gloo processes x B images) follows the single-process run with the global
batch 2B, and how that compares with the drift float summation order alone causes (one process, 1 vs 2 threads).

    python benchmarks/ddp_agreement.py [--epochs 1 2] [--methods byol mocov2]

Tiny CPU runs (digits, small_cnn width 8, global batch 256: 5 steps per epoch), deterministic=true. Prints one
markdown row per setting: the largest per-tensor error of the final weights relative to the tensor's largest
entry, and the relative difference of the first epoch's mean loss.
"""

from __future__ import annotations

import argparse
import os
import platform
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

TINY = ["data=digits", "encoder=small_cnn", "encoder.width=8", "eval.enabled=false", "progress_bar=false",
        "monitor.num_images=128", "method.projector.hidden_dim=64", "method.projector.out_dim=32",
        "deterministic=true"]
HEADS = {"byol": ["method.predictor.hidden_dim=64", "method.predictor.out_dim=32"],
         "mocov2": ["method.split_bn=0", "method.queue_size=512"]}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train(out: Path, args: list[str], procs: int, threads: int) -> Path:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    launch = ([sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={procs}",
               f"--master_port={free_port()}", "-m", "ssl_zoo.cli"] if procs > 1 else
              [sys.executable, "-m", "ssl_zoo.cli"])
    subprocess.run([*launch, "train", *args, f"out_dir={out}"], env=env, check=True, capture_output=True)
    (run_dir,) = [p for p in out.iterdir() if p.is_dir()]
    return run_dir


def errors(a: Path, b: Path) -> tuple[float, float]:
    sa = torch.load(a / "checkpoints" / "last.pt", weights_only=True)
    sb = torch.load(b / "checkpoints" / "last.pt", weights_only=True)
    worst = 0.0
    for key, want in sb["method"].items():
        if want.is_floating_point():
            err = (sa["method"][key].float() - want.float()).abs().max().item()
            worst = max(worst, err / max(want.float().abs().max().item(), 1e-12))
    loss_a, loss_b = sa["rows"][0]["loss"], sb["rows"][0]["loss"]
    return worst, abs(loss_a - loss_b) / abs(loss_b)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--methods", nargs="+", default=["byol", "mocov2"])
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs")
    print("| method | epochs (steps) | compared with one process x 256, 1 thread | max weight error (rel) | "
          "epoch-1 loss (rel) |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for method in args.methods:
            for epochs in args.epochs:
                base = [f"method={method}", *TINY, *HEADS[method], f"trainer.epochs={epochs}"]
                tag = f"{method}-{epochs}"
                one = train(root / f"{tag}-one", [*base, "trainer.batch_size=256"], 1, 1)
                rows = {
                    "one process x 256, 2 threads": train(root / f"{tag}-t2", [*base, "trainer.batch_size=256"], 1, 2),
                    "2 processes x 128, SyncBN": train(root / f"{tag}-ddp", [*base, "trainer.batch_size=128",
                                                                             "launcher.sync_bn=true"], 2, 1),
                    "2 processes x 128, BN per process": train(root / f"{tag}-bn", [*base,
                                                                                    "trainer.batch_size=128"], 2, 1),
                }
                for name, run_dir in rows.items():
                    w, loss = errors(run_dir, one)
                    print(f"| {method} | {epochs} ({epochs * 5}) | {name} | {w:.1e} | {loss:.1e} |", flush=True)


if __name__ == "__main__":
    main()
