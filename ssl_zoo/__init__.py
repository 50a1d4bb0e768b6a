"""ssl-zoo: comparative self-supervised learning under one trainer."""

__version__ = "0.1.0"
