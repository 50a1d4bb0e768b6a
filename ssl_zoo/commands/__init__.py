"""One module per `ssl-zoo` verb; each defines register(subparsers) and sets `func` on its parser."""
