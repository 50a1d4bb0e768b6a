"""`ssl-zoo train [-m] overrides...`: one run, or a sweep of runs in sequence on this machine."""

from __future__ import annotations

from pathlib import Path


def print_results(run_dir: Path) -> None:
    from ssl_zoo.commands.eval import format_results
    from ssl_zoo.rundir import read_results

    print("\n" + format_results(run_dir, read_results(run_dir) or {}), flush=True)


def run(args) -> int:
    from ssl_zoo.config import load_config
    from ssl_zoo.run import train
    from ssl_zoo.sweep import expand_sweep

    jobs = expand_sweep(args.overrides) if args.multirun else [args.overrides]
    configs = [load_config(job) for job in jobs]  # every config checked before the first run starts
    for cfg in configs:
        print_results(train(cfg))
    return 0


def register(sub) -> None:
    p = sub.add_parser("train", help="pretrain (and evaluate) one run, or a sweep with -m")
    p.add_argument("-m", "--multirun", action="store_true", help="sweep over comma-separated values")
    p.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. method=simsiam trainer.epochs=50")
    p.set_defaults(func=run)
