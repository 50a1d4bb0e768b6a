"""A launcher=local sweep (or study): its runs one after another in this process.

A run another process holds when the sweep gets to it (its run.lock: another `ssl-zoo train` of the same run, an
`ssl-zoo eval` of it) is skipped with one line, and the sweep goes on: that process is doing the run's work, and
stopping the whole sweep at it would leave every later run undone. A run another process has ended since the
sweep was planned is passed over with one line as well. The command then ends with EXIT_NOT_ALL_RAN when it
skipped a held run, after a summary line naming them; running the same command again later runs what is left.
Any other refusal (a config or checkpoint that changed under the sweep) still stops it, in one line.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

from omegaconf import DictConfig

from ssl_zoo.common import distributed
from ssl_zoo.config.overrides import cell_name
from ssl_zoo.launch.launcher import ended_state
from ssl_zoo.launch.run import train
from ssl_zoo.runs.identity import run_dir_for
from ssl_zoo.runs.runlock import RunInUse

# Exit code of a sweep that ran to its end but skipped runs other processes held: not a mistake in the command
# (2), not a stop signal (3); nothing is lost, and the same command later runs the skipped runs.
EXIT_NOT_ALL_RAN = 5


def _say(line: str) -> None:
    if distributed.rank() == 0:
        print(f"ssl-zoo: {line}", file=sys.stderr, flush=True)


def run_cells(configs: list[DictConfig], jobs: list[list[str]], todo: list[int],
              after_each: Callable[[Path], None]) -> list[int]:
    """Trains the runs `todo` in order, `after_each(run dir)` after each one trained; returns those skipped
    because another process held them. Under torchrun every rank takes the same path (rank 0's lock verdict
    reaches all of them)."""
    held = []
    for i in todo:
        cfg = configs[i]
        status = ended_state(run_dir_for(cfg), cfg)
        if status:  # another process ended it since the sweep was planned: nothing left to do
            _say(f"skipped {cell_name(jobs, i)}: another process has ended it meanwhile ({status})")
            continue
        try:
            run_dir = train(cfg)
        except RunInUse as err:
            _say(f"skipped {cell_name(jobs, i)}: {err}")
            held.append(i)
            continue
        after_each(run_dir)
    return held


def not_all_ran(jobs: list[list[str]], held: list[int]) -> str:
    """The summary line of a sweep that skipped held runs."""
    names = "; ".join(cell_name(jobs, i) for i in held)
    return (f"not all runs of the sweep ran: {len(held)} of {len(jobs)} skipped, in use by another process "
            f"({names}); run the same command again once they are free to run what is left")
