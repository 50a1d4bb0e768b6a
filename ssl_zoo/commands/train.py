"""`ssl-zoo train [-m] overrides...`: one run, or a sweep: in sequence on this machine (launcher=local) or as
one SLURM array job (launcher=slurm)."""

from __future__ import annotations

import time
from pathlib import Path


def print_results(run_dir: Path) -> None:
    from ssl_zoo.commands.eval import format_results
    from ssl_zoo.runs.results_file import results_or_problem

    print("\n" + format_results(run_dir, results_or_problem(run_dir)[0] or {}), flush=True)


def run(args) -> int:
    from ssl_zoo.common import distributed, stopping
    from ssl_zoo.config.overrides import expand_sweep
    from ssl_zoo.launch import launcher as launch
    from ssl_zoo.launch.preflight import check_cells, load_cells
    from ssl_zoo.launch.run import train
    from ssl_zoo.launch.study import expand_studies, write_report
    from ssl_zoo.train.build import pick_device

    jobs = expand_sweep(args.overrides) if args.multirun else [args.overrides]
    jobs, study = expand_studies(jobs)  # experiment=collapse_study and the like: the grid of runs it lists
    configs = load_cells(jobs)  # every config checked before the first run starts; an error names its run
    launch.same_launcher(configs)
    if configs[0].launcher.name == "slurm":
        check_cells(configs, jobs, None)  # what the tasks would find out on the cluster, found out here
        with stopping.ctrl_c_aborts():  # a submission has no step to save
            code = submit(configs, jobs)
        if study:
            print(f"when the array has ended: ssl-zoo report {configs[0].out_dir}", flush=True)
        return code
    distributed.init_from_env(pick_device(configs[0]).type)  # under torchrun: all ranks train, rank 0 reports
    main = distributed.rank() == 0
    if args.multirun or study:
        sweep_dir, todo, ended = launch.plan(configs, jobs)
        check_cells(configs, jobs, distributed.world_size(), todo)
        if main:
            ident = "local-" + time.strftime("%Y%m%d-%H%M%S")
            launch.write_manifest(sweep_dir, ident, "local", configs, todo, ended, jobs, [None] * len(todo))
            print(f"sweep: {len(todo)} run(s) in {sweep_dir}{_skipped(ended)}; "
                  f"progress: ssl-zoo status {sweep_dir}", flush=True)
    else:
        todo = [0]
    for i in todo:
        run_dir = train(configs[i])
        if main:
            print_results(run_dir)
    if study and main:
        write_report(sweep_dir)
    distributed.shutdown()
    return 0


def _skipped(ended: list[tuple[int, str]]) -> str:
    if not ended:
        return ""
    queued = sum(s == "queued" for _, s in ended)
    parts = [f"{len(ended) - queued} already ended"] * (len(ended) > queued) + [f"{queued} still queued"] * bool(queued)
    return f" ({', '.join(parts)}: skipped)"


def submit(configs, jobs) -> int:
    """launcher=slurm: one array job for the whole sweep; returns as soon as SLURM has it."""
    from ssl_zoo.launch import launcher as launch

    job_id, sweep_dir, ended = launch.submit_slurm(configs, jobs)
    if not job_id:
        print(f"nothing to submit: all {len(ended)} run(s) in {sweep_dir} already ended or queued")
        return 0
    n = len(configs) - len(ended)
    print(f"submitted SLURM job {job_id}: {n} task(s){_skipped(ended)}")
    print(f"sweep directory: {sweep_dir}")
    print(f"follow it: ssl-zoo status {sweep_dir}", flush=True)
    return 0


def register(sub) -> None:
    import argparse

    from ssl_zoo.config.compose import groups_help

    p = sub.add_parser("train", help="pretrain (and evaluate) one run, or a sweep with -m", epilog=groups_help(),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-m", "--multirun", action="store_true",
                   help="sweep over comma-separated values (launcher=slurm: one array job)")
    p.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. method=simsiam trainer.epochs=50")
    p.set_defaults(func=run)
