"""`ssl-zoo show overrides...`: the resolved config and the run directory it maps to."""

from __future__ import annotations

from omegaconf import OmegaConf


def run(args) -> int:
    from ssl_zoo.config.load import load_config
    from ssl_zoo.runs.identity import run_dir_for

    cfg = load_config(args.overrides)
    print(OmegaConf.to_yaml(cfg), end="")
    print(f"# run directory: {run_dir_for(cfg)}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("show", help="print the resolved config and the run directory it maps to")
    p.add_argument("overrides", nargs="*")
    p.set_defaults(func=run)
