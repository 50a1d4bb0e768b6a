"""Hydra-style sweep expansion: `method=byol,simsiam seed=0,1` -> the list of override lists of every run."""

from __future__ import annotations

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException

from ssl_zoo.errors import UserError


def expand_sweep(overrides: list[str]) -> list[list[str]]:
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except HydraException as err:
        raise UserError(str(err).strip().splitlines()[0]) from err
    batches = BasicSweeper.split_arguments(parsed, max_batch_size=None)
    return [list(job) for batch in batches for job in batch]
