"""`ssl-zoo train [-m] overrides...`: one run, or a sweep: in sequence on this machine (launcher=local) or as
one SLURM array job (launcher=slurm)."""

from __future__ import annotations

import sys
import time
from pathlib import Path


def print_results(run_dir: Path) -> None:
    from ssl_zoo.commands.eval import format_results
    from ssl_zoo.runs.results_file import results_or_problem

    print("\n" + format_results(run_dir, results_or_problem(run_dir)[0] or {}), flush=True)


def run(args) -> int:
    from ssl_zoo.common import distributed
    from ssl_zoo.config.overrides import expand_sweep
    from ssl_zoo.launch import launcher as launch
    from ssl_zoo.launch.local_sweep import EXIT_NOT_ALL_RAN, not_all_ran, run_cells
    from ssl_zoo.launch.preflight import check_cells, load_cells
    from ssl_zoo.launch.run import train
    from ssl_zoo.launch.study import expand_studies, write_report
    from ssl_zoo.train.build import pick_device

    jobs = expand_sweep(args.overrides) if args.multirun else [args.overrides]
    jobs, study = expand_studies(jobs)  # experiment=collapse_study and the like: the grid of runs it lists
    configs = load_cells(jobs)  # every config checked before the first run starts; an error names its run
    launch.same_launcher(configs)
    if configs[0].launcher.name == "slurm":
        code = submit(configs, jobs)
        if study:
            print(f"when the array has ended: ssl-zoo report {configs[0].out_dir}", flush=True)
        return code
    distributed.init_from_env(pick_device(configs[0]).type)  # under torchrun: all ranks train, rank 0 reports
    main = distributed.rank() == 0
    if not (args.multirun or study):
        run_dir = train(configs[0])  # a held run directory: refused in one line (exit 2), as every start is
        if main:
            print_results(run_dir)
        distributed.shutdown()
        return 0
    sweep_dir, todo, ended = launch.plan(configs, jobs)
    check_cells(configs, jobs, distributed.world_size(), todo)  # every checkpoint to resume included
    if main:
        ident = "local-" + time.strftime("%Y%m%d-%H%M%S")
        launch.write_manifest(sweep_dir, ident, "local", configs, todo, ended, jobs, [None] * len(todo))
        print(f"sweep: {len(todo)} run(s) in {sweep_dir}{_skipped(ended)}; "
              f"progress: ssl-zoo status {sweep_dir}", flush=True)
    held = run_cells(configs, jobs, todo, print_results if main else lambda run_dir: None)
    if study and main:
        write_report(sweep_dir)
    distributed.shutdown()
    if held:
        if main:
            print(f"ssl-zoo: {not_all_ran(jobs, held)}", file=sys.stderr, flush=True)
        return EXIT_NOT_ALL_RAN
    return 0


def _skipped(ended: list[tuple[int, str]]) -> str:
    if not ended:
        return ""
    queued = sum(s == "queued" for _, s in ended)
    parts = [f"{len(ended) - queued} already ended"] * (len(ended) > queued) + [f"{queued} still queued"] * bool(queued)
    return f" ({', '.join(parts)}: skipped)"


def submit(configs, jobs) -> int:
    """launcher=slurm: one array job for the whole sweep; returns as soon as SLURM has it.

    A stop signal (SIGTERM, SIGUSR2, Ctrl-C) before sbatch is called stops at once with nothing submitted and
    nothing written (exit 3, the same command submits again); one that arrives while sbatch runs waits for its
    answer, so the array is submitted whole and its manifest complete, and is then named (ssl_zoo.launch.launcher)."""
    from ssl_zoo.common import stopping
    from ssl_zoo.launch import launcher as launch
    from ssl_zoo.launch.preflight import check_cells

    unsent = f"stopped before submitting: none of the sweep's {len(configs)} run(s) submitted, nothing written"
    with stopping.interruptible(unsent):  # checks only, nothing written yet: a stop signal ends them at once
        check_cells(configs, jobs, None)  # what the tasks would find out on the cluster, found out here
        prepared = launch.prepare_slurm(configs, jobs)
    sent = launch.submit_prepared(prepared)
    if not sent.job_id:
        print(f"nothing to submit: all {len(sent.skipped)} run(s) in {sent.sweep_dir} already ended or queued")
        return 0
    print(f"submitted SLURM job {sent.job_id}: {sent.tasks} task(s){_skipped(sent.skipped)}")
    print(f"sweep directory: {sent.sweep_dir}")
    print(f"follow it: ssl-zoo status {sent.sweep_dir}", flush=True)
    if sent.late_signal:
        print(f"ssl-zoo: a stop signal ({sent.late_signal}) arrived while sbatch was submitting: the array was "
              f"already submitted whole (job ids in its manifest); scancel {sent.job_id} to stop it",
              file=sys.stderr, flush=True)
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
