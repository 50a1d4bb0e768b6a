"""`ssl-zoo synthetic OUT ...`: a generated ImageNet-like folder (and WebDataset shards) to try the streaming
path on, e.g. `data=imagenet100 data.root=OUT` without ImageNet."""

from __future__ import annotations


def run(args) -> int:
    from ssl_zoo.data.streaming.synthetic import generate

    generate(args)
    return 0


def register(sub) -> None:
    from ssl_zoo.data.streaming.synthetic import add_arguments

    p = sub.add_parser("synthetic", help="write a generated ImageNet-like image folder (and shards) to try streaming")
    add_arguments(p)
    p.set_defaults(func=run)
