"""Studies: an experiment whose yaml lists a grid of runs (`study.grid`), run by the ordinary sweep machinery.

`ssl-zoo train experiment=collapse_study` expands into one job per grid entry (the experiment's settings, then
the per-method overrides in `study.method_overrides`, then the entry, then the user's own overrides), so the
grid runs in sequence here (launcher=local) or as one SLURM array (launcher=slurm) exactly like a `-m` sweep,
and a local study ends by writing its report. A grid is a list, not a product: each method gets the ablations
that apply to it. Choosing `method=` or `ablation=` on the command line runs that one setting of the study
instead of the grid. Each expanded run keeps only `study.name`, so editing the grid never renames finished runs.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from ssl_zoo.errors import UserError

CLEARED = ["~study.grid", "~study.method_overrides"]  # an expanded run is one run, not the grid again


def _chooses_a_run(job: list[str]) -> bool:
    return any(o.split("=", 1)[0].lstrip("~+") in ("method", "ablation") for o in job)


def grid_jobs(job: list[str], cfg: DictConfig) -> list[list[str]]:
    """The override lists of a study's runs; [] when cfg has no grid (or the job picks one run itself)."""
    study = cfg.get("study")
    if not isinstance(study, DictConfig) or not study.get("grid") or _chooses_a_run(job):
        return []
    by_method = OmegaConf.to_container(study.get("method_overrides") or {})
    jobs = []
    for entry in study.grid:
        overrides = shlex.split(str(entry))
        if not any(o.startswith("method=") for o in overrides):
            raise UserError(f"study.grid entry '{entry}' names no method=; each entry is 'method=... ablation=...'")
        method = next(o.split("=", 1)[1] for o in overrides if o.startswith("method="))
        jobs.append([o for o in job if o.startswith("experiment=")] + list(by_method.get(method, []))
                    + overrides + CLEARED + [o for o in job if not o.startswith("experiment=")])
    return jobs


def expand_studies(jobs: list[list[str]]) -> tuple[list[list[str]], bool]:
    """(jobs with every study replaced by its grid, whether any study was expanded)."""
    from ssl_zoo.config import load_config

    out, expanded = [], False
    for job in jobs:
        grid = grid_jobs(job, load_config(job)) if any(o.startswith("experiment=") for o in job) else []
        out += grid or [job]
        expanded = expanded or bool(grid)
    return out, expanded


def write_report(sweep_dir: Path) -> None:
    """The end of a local study: its report next to the runs."""
    from ssl_zoo.commands.report import report

    md, html = report(sweep_dir)
    print(f"report: {html} (markdown: {md})", flush=True)
