"""`ssl-zoo` command line: train, show; every user mistake ends in one line on stderr and exit code 2."""

from __future__ import annotations

import argparse
import sys

from omegaconf import OmegaConf

from ssl_zoo.errors import UserError

EXIT_USER_ERROR = 2
EXIT_PREEMPTED = 3
EXIT_DIVERGED = 4


def _print_results(run_dir) -> None:
    from ssl_zoo.rundir import read_results

    r = read_results(run_dir) or {}
    rows = [("trained", r)] + [(name, r[name]) for name in ("random_init", "raw_pixels") if name in r]
    print(f"\nrun: {run_dir}")
    print(f"{'encoder':<14}{'kNN top-1':>10}{'linear top-1':>14}")
    for name, res in rows:
        print(f"{name:<14}{res['knn_top1']:>10.2f}{res['linear_top1']:>14.2f}")
    print(f"pretraining {r.get('wall_s', 0):.0f} s at {r.get('images_per_s', 0):.0f} images/s; "
          f"evaluation {r.get('eval_s', 0):.0f} s", flush=True)


def cmd_train(args) -> int:
    from ssl_zoo.config import load_config
    from ssl_zoo.run import train
    from ssl_zoo.sweep import expand_sweep

    jobs = expand_sweep(args.overrides) if args.multirun else [args.overrides]
    configs = [load_config(job) for job in jobs]  # every config checked before the first run starts
    for cfg in configs:
        _print_results(train(cfg))
    return 0


def cmd_show(args) -> int:
    from ssl_zoo.config import load_config, run_dir_for

    cfg = load_config(args.overrides)
    print(OmegaConf.to_yaml(cfg), end="")
    print(f"# run directory: {run_dir_for(cfg)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ssl-zoo", description="Comparative self-supervised learning.")
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="pretrain (and evaluate) one run, or a sweep with -m")
    train.add_argument("-m", "--multirun", action="store_true", help="sweep over comma-separated values")
    train.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. method=simsiam trainer.epochs=50")
    train.set_defaults(func=cmd_train)
    show = sub.add_parser("show", help="print the resolved config and the run directory it maps to")
    show.add_argument("overrides", nargs="*")
    show.set_defaults(func=cmd_show)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from ssl_zoo.trainer import Diverged, Preempted

    try:
        return args.func(args)
    except UserError as err:
        print(f"ssl-zoo: error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR
    except Preempted as err:
        print(f"ssl-zoo: {err}; run the same command again to resume", file=sys.stderr)
        return EXIT_PREEMPTED
    except Diverged as err:
        print(f"ssl-zoo: diverged: {err}; the last good checkpoint is kept", file=sys.stderr)
        return EXIT_DIVERGED
    except KeyboardInterrupt:
        print("ssl-zoo: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
