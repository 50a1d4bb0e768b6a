"""Studies: an experiment whose yaml lists a grid of runs (`study.grid`), run by the ordinary sweep machinery.

`ssl-zoo train experiment=collapse_study` expands into one job per grid entry (the experiment's settings, then
the per-method overrides in `study.method_overrides`, then the entry, then the user's own overrides), so the
grid runs in sequence here (launcher=local) or as one SLURM array (launcher=slurm) exactly like a `-m` sweep,
and a local study ends by writing its report. A grid is a list, not a product: each method gets the ablations
that apply to it. Choosing `method=` or `ablation=` on the command line runs that one cell of the study (the same
run directory as in the grid). Each run keeps only `study.name`, so editing the grid never renames finished runs.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from omegaconf import DictConfig, ListConfig, OmegaConf

from ssl_zoo.common.errors import UserError
from ssl_zoo.config.overrides import naming_cell

CLEARED = ["~study.grid", "~study.method_overrides"]  # an expanded run is one run, not the grid again


def _value(job: list[str], key: str) -> str | None:
    return next((o.split("=", 1)[1] for o in job if o.split("=", 1)[0] == key), None)


def _budget(by_method: dict, method: str, ablation: str | None) -> list[str]:
    """The study's per-method settings without those the cell's ablation sets: the ablation is the point of the
    cell (a budget-sized queue_length must not undo no_queue)."""
    from ssl_zoo.config import ablations

    path = ablations._find("ablation", ablation) if ablation else None
    keys = set(ablations.ablation_keys(path)) if path is not None else set()
    return [o for o in by_method.get(method, []) if o.split("=", 1)[0].lstrip("+~") not in keys]


def grid_jobs(job: list[str], cfg: DictConfig) -> tuple[list[list[str]], bool]:
    """(the override lists of a study's runs, whether they are its whole grid). A job that picks method= or
    ablation= itself becomes that one cell, composed exactly as in the grid (same run directory). Without a
    grid: ([job], False)."""
    study = cfg.get("study")
    if not isinstance(study, DictConfig) or not study.get("grid"):
        return [job], False
    if not isinstance(study.grid, ListConfig):
        raise UserError(f"study.grid={study.grid!r} is not a list; give one 'method=... ablation=...' entry per run")
    by_method = _method_overrides(study.get("method_overrides"))
    experiment = [o for o in job if o.startswith("experiment=")]
    rest = [o for o in job if not o.startswith("experiment=")]
    if _value(job, "method") is not None or _value(job, "ablation") is not None:
        method = _value(job, "method") or str(cfg.method.name)
        ablation = _value(job, "ablation") or str(cfg.ablation.name)
        return [experiment + _budget(by_method, method, ablation) + rest + CLEARED], False
    jobs = []
    for entry in study.grid:
        try:
            overrides = shlex.split(str(entry))
        except ValueError as err:  # an unclosed quote
            raise UserError(f"study.grid entry '{entry}' cannot be read ({err})") from err
        method = _value(overrides, "method")
        if method is None:
            raise UserError(f"study.grid entry '{entry}' names no method=; each entry is 'method=... ablation=...'")
        jobs.append(experiment + _budget(by_method, method, _value(overrides, "ablation")) + overrides + CLEARED + rest)
    return jobs, True


def _method_overrides(node) -> dict[str, list[str]]:
    """study.method_overrides: method name -> list of overrides."""
    if node is None:
        return {}
    table = OmegaConf.to_container(node) if isinstance(node, DictConfig | ListConfig) else node
    if not isinstance(table, dict) or not all(isinstance(v, list) and all(isinstance(o, str) for o in v)
                                              for v in table.values()):
        raise UserError("study.method_overrides must map each method to a list of overrides, "
                        "e.g. {swav: [method.queue_length=512]}")
    return table


def expand_studies(jobs: list[list[str]]) -> tuple[list[list[str]], bool]:
    """(jobs with every study replaced by its grid, whether any whole grid was expanded). An error names the
    sweep run it comes from."""
    from ssl_zoo.config.load import load_config

    out, expanded = [], False
    for i, job in enumerate(jobs):
        with naming_cell(jobs, i):
            grid, whole = grid_jobs(job, load_config(job)) if _value(job, "experiment") else ([job], False)
        out += grid
        expanded = expanded or whole
    return out, expanded


def write_report(sweep_dir: Path) -> None:
    """The end of a local study: its report next to the runs."""
    from ssl_zoo.analysis.report import report

    md, html = report(sweep_dir)
    print(f"report: {html} (markdown: {md})", flush=True)
