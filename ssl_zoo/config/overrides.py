"""Hydra-style sweep expansion: `method=byol,simsiam seed=0,1` -> the list of override lists of every run.

Hydra's own parser reads each override; the values are expanded here (not by Hydra's BasicSweeper) so that every
way a sweep can go wrong is one line naming the override: a sweep that expands to nothing (`seed=range(0,0)`, a
glob matching no option), a glob over a key that is not a config group, a random (interval) sweep, or a grid
too large to ever run. Non-sweep overrides are passed on exactly as typed.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from contextlib import contextmanager

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import FloatRange, Glob, Override, RangeSweep, ValueType
from hydra.errors import HydraException

from ssl_zoo.common.errors import UserError
from ssl_zoo.config.compose import GROUPS, choices

# A grid larger than this is almost surely a typo (range(0,100000)); every cell is checked before any starts.
MAX_RUNS = 10_000


def parse(overrides: list[str]) -> list[Override]:
    """Hydra's parse of each override; a syntax error is one line naming the override."""
    parser = OverridesParser.create()
    parsed = []
    for text in overrides:
        try:
            parsed += parser.parse_overrides([text])
        except (HydraException, ValueError) as err:
            lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
            said = [ln for ln in lines if not ln.startswith(("Error parsing override", "See "))]
            reason = (said or lines or [type(err).__name__])[0]
            raise UserError(f"cannot read the override '{text}': {reason}") from err
    return parsed


def _count(override: Override, text: str) -> int:
    """How many values a range sweep has, before any is made (range(0,10**12) must not be listed)."""
    sweep = override._value
    if not isinstance(sweep, RangeSweep):
        return -1
    try:
        values = sweep.range()
    except (ValueError, HydraException) as err:
        raise UserError(f"'{text}' is not a valid range ({err}); use range(start, stop[, step]), step != 0") from err
    if isinstance(values, FloatRange):
        if values.step == 0:
            raise UserError(f"'{text}' has step 0; use range(start, stop, step) with step != 0")
        return max(0, math.ceil((values.stop - values.start) / values.step))
    return len(values)


def _values(override: Override, text: str) -> list[str]:
    """The overrides one sweep (or plain) override stands for, each `key=value`."""
    key = override.get_key_element()
    if not override.is_sweep_override():
        return [text]
    if override.value_type == ValueType.GLOB_CHOICE_SWEEP:
        group = override.key_or_group
        if group not in GROUPS:
            raise UserError(f"'{text}': glob() picks options of a config group ({', '.join(GROUPS)}), and {key} is "
                            "not one; list the values instead (a,b,c)")
        assert isinstance(override._value, Glob)
        values = override._value.filter(choices(group))
        if not values:
            raise UserError(f"'{text}' matches no {group}; choices: {', '.join(choices(group))}")
        return [f"{key}={v}" for v in values]
    if not override.is_discrete_sweep():
        raise UserError(f"'{text}': {override.value_type.name.lower().replace('_', ' ')}s draw values at random (an "
                        "optimizer's sweep); list the values (a,b,c) or use range(start, stop, step)")
    n = _count(override, text)
    if n > MAX_RUNS:
        raise UserError(f"'{text}' expands to {n} values; a sweep runs at most {MAX_RUNS}")
    try:
        values = list(override.sweep_string_iterator())
    except (HydraException, ValueError) as err:
        raise UserError(f"cannot expand '{text}': {str(err).strip().splitlines()[0]}") from err
    if not values:
        raise UserError(f"'{text}' expands to no value; a sweep needs at least one (range(0,3) is 0,1,2)")
    return [f"{key}={v}" for v in values]


def expand_sweep(overrides: list[str]) -> list[list[str]]:
    parsed = parse(overrides)
    axes: dict[str, list[str]] = {}  # a key given twice: the last value wins, in the first one's place (Hydra's rule)
    for override, text in zip(parsed, overrides):
        axes[override.get_key_element()] = _values(override, text)
    runs = math.prod(len(v) for v in axes.values())
    if runs > MAX_RUNS:
        sizes = " x ".join(str(len(v)) for v in axes.values() if len(v) > 1)
        raise UserError(f"the sweep expands to {runs} runs ({sizes}); at most {MAX_RUNS} run in one sweep: split it")
    return [list(job) for job in itertools.product(*axes.values())]


def cell_name(jobs: list[list[str]], i: int) -> str:
    """How an error names run i of a sweep: its position and the overrides that set it apart from the others."""
    own = [o for o in jobs[i] if not all(o in job for job in jobs)]
    return f"run {i + 1}/{len(jobs)} ({' '.join(own or jobs[i]) or 'the defaults'})"


@contextmanager
def naming_cell(jobs: list[list[str]], i: int) -> Iterator[None]:
    """A UserError raised inside names run i of the sweep (nothing of the sweep has started when it is raised)."""
    try:
        yield
    except UserError as err:
        if len(jobs) == 1:
            raise
        raise UserError(f"{cell_name(jobs, i)}: {err}; no run of the sweep was started") from err
