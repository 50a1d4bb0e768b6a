"""`ssl-zoo export <run> [--out DIR]`: the run's online backbone as safetensors + a model card (ssl_zoo.export)."""

from __future__ import annotations

from pathlib import Path


def run(args) -> int:
    from ssl_zoo.export import export_run, load_snippet, read_card

    out = export_run(Path(args.run), Path(args.out) if args.out else None)
    card = read_card(out)
    print(f"exported the online backbone of {args.run} (step {card['step']}, {card['library']} {card['arch']}, "
          f"{card['feat_dim']}-d features) to {out}")
    print("load it with:\n" + load_snippet(card, str(out / card["weights"])), flush=True)
    return 0


def register(sub) -> None:
    p = sub.add_parser("export", help="write a run's online backbone (safetensors, library naming) and a model card")
    p.add_argument("run", help="a run directory")
    p.add_argument("--out", default=None, help="folder to create (default: <run>/export); never overwritten")
    p.set_defaults(func=run)
