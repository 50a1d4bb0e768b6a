"""Cost of a crash-safe checkpoint: save (torch.save to a temp file, fsync, hard link, rename, folder fsync)
and a verified load (zip CRC check + torch.load(weights_only=True)) against a plain torch.save / torch.load.

    python benchmarks/checkpoint_io.py [--encoders resnet18_cifar resnet50] [--repeats 3]

Prints one markdown table row per encoder (BYOL with its default heads, optimizer state included).
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import torch

from ssl_zoo.config.load import load_config
from ssl_zoo.runs.checkpoint import read_checkpoint, save_checkpoint
from ssl_zoo.train.build import build_method
from ssl_zoo.train.optim import build_optimizer


def state_for(encoder: str) -> dict:
    cfg = load_config([f"encoder={encoder}", "data=cifar10"])
    method = build_method(cfg)
    optimizer = build_optimizer(method.param_groups(), cfg.trainer)
    for p in method.parameters():  # momentum buffers exist after one step
        p.grad = torch.zeros_like(p)
    optimizer.step()
    return {"method": method.state_dict(), "optimizer": optimizer.state_dict(), "step": 1, "rows": []}


def best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def row(encoder: str, run_dir: Path, repeats: int) -> str:
    state = state_for(encoder)
    plain = run_dir / "plain.pt"
    t_plain_save = best(lambda: torch.save(state, plain), repeats)
    t_safe_save = best(lambda: save_checkpoint(run_dir, state), repeats)
    t_plain_load = best(lambda: torch.load(plain, weights_only=True), repeats)
    t_safe_load = best(lambda: read_checkpoint(run_dir / "checkpoints" / "last.pt"), repeats)
    mb = (run_dir / "checkpoints" / "last.pt").stat().st_size / 2**20
    return f"| {encoder} | {mb:.0f} | {t_plain_save:.3f} | {t_safe_save:.3f} | {t_plain_load:.3f} | {t_safe_load:.3f} |"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--encoders", nargs="+", default=["resnet18_cifar", "resnet50"])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"# {platform.node()} {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, best of {args.repeats}")
    print("| encoder | checkpoint MB | plain save s | safe save s | plain load s | verified load s |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory(dir=".") as tmp:
        for encoder in args.encoders:
            print(row(encoder, Path(tmp), args.repeats), flush=True)


if __name__ == "__main__":
    main()
