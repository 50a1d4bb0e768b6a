"""Launching runs: a sweep as ONE SLURM array job through submitit (launcher=slurm), or in this process
(launcher=local), with the same command line.

The sweep directory is the runs' out_dir: run directories live below it, and <sweep dir>/jobs/ holds submitit's
files (logs, pickles), one manifest per submission (sweep-<id>.json: task -> run directory) and each
task's state (<job id>_state.json, written by the task itself), which `ssl-zoo status` reads (ssl_zoo.launch.sweep_files;
never the pickles). Run directories are named by config, so submitting the same grid again resumes its
unfinished runs and skips the ended ones instead of duplicating them. A stop signal during a submission ends it
before sbatch with nothing submitted or written (exit 3), or, once sbatch is called, waits for its answer: the
array is then submitted whole, its manifest complete (submit_prepared).

Preemption and timeouts (submitit's checkpoint() contract): SLURM sends USR2 `signal_delay_s` before the time
limit (and submitit's own preemption helper sends it). During training the trainer catches it, finishes the
step, writes checkpoints/last.pt and raises Preempted; TrainTask then hands over to submitit's handler, which
calls TrainTask.checkpoint() (the same task, to resume from last.pt), requeues the array task and exits. SIGTERM
(`scontrol requeue`, preemption by SLURM, scancel) also checkpoints first; SLURM requeues (or cancels) by itself.
A task that fails for real (bad config, NaN loss) raises: submitit records the error and nothing requeues it.
"""

from __future__ import annotations

import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager, redirect_stderr
from dataclasses import dataclass
from pathlib import Path

import submitit
import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ssl_zoo.common import stopping
from ssl_zoo.common.errors import UserError
from ssl_zoo.common.paths import absolute
from ssl_zoo.config.load import load_config
from ssl_zoo.launch import held_signals, slurm_queue
from ssl_zoo.launch.sweep_files import JOBS, manifest_path, read_manifests, write_manifest_file
from ssl_zoo.runs.config_file import has_config, unchecked_config
from ssl_zoo.runs.identity import config_hash, run_dir_for
from ssl_zoo.runs.results_file import results_or_problem
from ssl_zoo.runs.rundir import check_existing

ENDED = ("finished", "diverged")  # results.json states a sweep never starts again


# --- configs ------------------------------------------------------------------------------------------------
def tasks_per_node(launcher: DictConfig) -> int:
    gpus = int(launcher.get("gpus_per_node") or 0)
    tasks = launcher.get("tasks_per_node")
    if gpus and tasks is not None and int(tasks) != gpus:
        raise UserError(f"launcher.tasks_per_node={tasks} but launcher.gpus_per_node={gpus}: one process per GPU "
                        "(leave tasks_per_node unset)")
    n = gpus or int(tasks or 1)
    if n < 1 or gpus < 0:
        raise UserError("launcher.tasks_per_node and launcher.gpus_per_node must be >= 1 / >= 0")
    return n


def world_size(launcher: DictConfig) -> int:
    """Processes per run the launcher starts (local: one; torchrun sets its own)."""
    if launcher.name != "slurm":
        return 1
    if int(launcher.nodes) < 1:
        raise UserError(f"launcher.nodes must be >= 1, got {launcher.nodes}")
    return int(launcher.nodes) * tasks_per_node(launcher)


@contextmanager
def _world_size_env(world: int):
    old = os.environ.get("WORLD_SIZE")
    os.environ["WORLD_SIZE"] = str(world)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("WORLD_SIZE")
        else:
            os.environ["WORLD_SIZE"] = old


def load(overrides: list[str]) -> DictConfig:
    """load_config, with the methods' checks seeing the processes a SLURM task will have (a MoCo queue must
    take whole global batches)."""
    cfg = load_config(overrides)
    world = world_size(cfg.launcher)
    if world > 1:
        with _world_size_env(world):
            cfg = load_config(overrides)
    return cfg


def ended_state(run_dir: Path, cfg: DictConfig) -> str | None:
    """results.json's status when this config's run there has ended (finished, diverged), else None."""
    results = results_or_problem(run_dir)[0]
    if not isinstance(results, dict) or results.get("status") not in ENDED or not has_config(run_dir):
        return None
    try:
        same = config_hash(unchecked_config(run_dir)) == config_hash(cfg)
    except (OSError, yaml.YAMLError, OmegaConfBaseException, ValueError, AttributeError, TypeError):
        return None  # an unreadable or hand-broken config.yaml is not this run: check_existing says so in one line
    return str(results["status"]) if same else None


def plan(configs: list[DictConfig], jobs: list[list[str]] | None = None
         ) -> tuple[Path, list[int], list[tuple[int, str]]]:
    """Checks a sweep before anything starts: one out_dir (the sweep directory), no two runs in one directory,
    every existing directory resumable (an error names the run by its overrides in `jobs`). Returns (sweep dir,
    indices to run, [(index, status)] of ended runs)."""
    from ssl_zoo.config.overrides import naming_cell

    jobs = jobs if jobs is not None else [[f"#{i + 1}"] for i in range(len(configs))]
    dirs = {absolute(str(c.out_dir)) for c in configs}
    if len(dirs) > 1:
        raise UserError(f"a sweep writes below one out_dir (its sweep directory); got {len(dirs)}: "
                        f"{', '.join(sorted(map(str, dirs)))}")
    seen: dict[Path, int] = {}
    todo, ended = [], []
    for i, cfg in enumerate(configs):
        run_dir = run_dir_for(cfg)
        if run_dir in seen:
            raise UserError(f"runs {seen[run_dir]} and {i} of the sweep are the same run ({run_dir}); "
                            "drop the duplicate value or give them different run names")
        seen[run_dir] = i
        status = ended_state(run_dir, cfg)
        if status:
            ended.append((i, status))
            continue
        with naming_cell(jobs, i):
            check_existing(run_dir, cfg)  # a different config or resume=never there: an error, before any start
        todo.append(i)
    return dirs.pop(), todo, ended


def same_launcher(configs: list[DictConfig]) -> DictConfig:
    first = configs[0].launcher
    for cfg in configs[1:]:
        if OmegaConf.to_container(cfg.launcher) != OmegaConf.to_container(first):
            raise UserError("launcher.* must be the same for every run of a sweep (one job, one resource request)")
    return first


# --- manifests ----------------------------------------------------------------------------------------------
def write_manifest(sweep_dir: Path, ident: str, launcher: str, configs: list[DictConfig], todo: list[int],
                   ended: list[tuple[int, str]], overrides: list[list[str]], job_ids: list[str | None],
                   path: Path | None = None) -> Path:
    """<sweep dir>/jobs/sweep-<ident>.json (or `path`, to fill in the job ids of a manifest written before
    submission): task -> run directory, relative to the sweep directory."""
    def rel(i: int) -> str:
        return str(run_dir_for(configs[i]).relative_to(sweep_dir))

    tasks = [{"index": n, "job_id": job_ids[n], "run_dir": rel(i), "overrides": overrides[i],
              "epochs": int(configs[i].trainer.epochs)} for n, i in enumerate(todo)]
    manifest = {"id": ident, "launcher": launcher, "submitted": time.strftime("%Y-%m-%dT%H:%M:%S"),
                "host": socket.gethostname(), "pid": os.getpid(), "command": " ".join(sys.argv),
                "tasks": tasks, "skipped": [{"run_dir": rel(i), "status": s} for i, s in ended]}
    path = path or manifest_path(sweep_dir, ident)
    write_manifest_file(path, manifest)
    return path


def queued_runs(sweep_dir: Path) -> set[str]:
    """Run directories (relative) of earlier submissions into this sweep whose task SLURM still has queued or
    running: submitting the same sweep again must not start them twice."""
    manifests = [m for m in read_manifests(sweep_dir) if m.get("launcher") == "slurm"]
    queue = slurm_queue.squeue() if manifests else None
    if not queue:
        return set()
    return {t["run_dir"] for m in manifests for t in m["tasks"] if t.get("job_id") in queue}


# --- the SLURM task -----------------------------------------------------------------------------------------
class TrainTask(submitit.helpers.Checkpointable):
    """One array task: ssl_zoo.launch.run.train on one config (resolved and checked at submit time)."""

    def __init__(self, config: dict):
        self.config = config

    def __call__(self) -> str:
        import torch

        from ssl_zoo.common import distributed
        from ssl_zoo.common.stopping import Preempted
        from ssl_zoo.launch.run import train
        from ssl_zoo.launch.sweep_files import write_state

        if os.environ.get("SLURM_CPUS_PER_TASK"):  # the CPUs SLURM gave this task, not the whole node
            torch.set_num_threads(int(os.environ["SLURM_CPUS_PER_TASK"]))
        cfg = OmegaConf.create(self.config)
        run_dir = run_dir_for(cfg)
        if ended_state(run_dir, cfg):  # requeued after it had ended: nothing left to do
            write_state("finished")
            return str(run_dir)
        requeue = signal.getsignal(signal.SIGUSR2)  # submitit's: checkpoint() + scontrol requeue + exit
        # `ssl-zoo status` reads this task's state from jobs/<job id>_state.json (never from submitit's pickles)
        write_state("running")
        try:
            out = str(train(cfg))
            write_state("finished")
            return out
        except Preempted as err:
            requeued = err.signum == signal.SIGUSR2 and callable(requeue)
            write_state("requeued" if requeued else "stopped", str(err))
            if requeued:
                try:
                    requeue(signal.SIGUSR2, None)  # rank 0 requeues and exits; other ranks return here
                except Exception as refused:  # submitit would not requeue (timed out too many times)
                    write_state("failed", str(refused))
                    raise
            # SIGTERM: SLURM itself requeues (scontrol requeue, preemption) or cancels the job. Exiting without
            # raising leaves no error result behind.
            raise SystemExit(3) from None
        except Exception as err:  # submitit records it too (a pickle, which status never reads)
            write_state("failed", str(err) if isinstance(err, UserError) else f"{type(err).__name__}: {err}")
            raise
        finally:
            distributed.shutdown()

    def checkpoint(self, *args, **kwargs) -> submitit.helpers.DelayedSubmission:
        """submitit calls this on USR2, before it requeues. The training state is already on disk: during
        training the trainer's own handler turns the signal into a checkpoint before this runs, and outside
        training checkpoints/last.pt is current. The same task resumes from it."""
        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)


# --- submission ---------------------------------------------------------------------------------------------
def _check_slurm(launcher: DictConfig) -> None:
    if shutil.which("sbatch") is None or shutil.which("srun") is None:
        raise UserError("launcher=slurm needs sbatch and srun on PATH (no SLURM here? use launcher=local)")
    if int(launcher.timeout_min) * 60 <= int(launcher.signal_delay_s):
        raise UserError(f"launcher.timeout_min={launcher.timeout_min} leaves no time before the USR2 sent "
                        f"launcher.signal_delay_s={launcher.signal_delay_s} s before the limit")
    if launcher.partition:
        out = subprocess.run(["sinfo", "-h", "-o", "%P"], capture_output=True, text=True)
        names = [p.rstrip("*") for p in out.stdout.split()]
        if out.returncode == 0 and str(launcher.partition) not in names:
            raise UserError(f"unknown SLURM partition '{launcher.partition}'; partitions: {', '.join(names)}")


def executor(launcher: DictConfig, folder: Path) -> submitit.SlurmExecutor:
    gpus = int(launcher.gpus_per_node or 0)
    mem = launcher.mem_gb
    params = {"partition": launcher.partition, "time": int(launcher.timeout_min),
              "nodes": int(launcher.nodes), "ntasks_per_node": tasks_per_node(launcher),
              "cpus_per_task": launcher.cpus_per_task, "mem": None if mem is None else f"{int(float(mem) * 1024)}MB",
              "gpus_per_node": gpus or None, "array_parallelism": int(launcher.array_parallelism),
              "signal_delay_s": int(launcher.signal_delay_s), "account": launcher.account, "qos": launcher.qos,
              "constraint": launcher.constraint, "exclude": launcher.exclude, "job_name": str(launcher.job_name),
              "setup": list(launcher.setup) or None,
              "additional_parameters": OmegaConf.to_container(launcher.additional) if launcher.additional else None}
    ex = submitit.SlurmExecutor(folder, max_num_timeout=int(launcher.max_num_timeout))
    try:
        ex.update_parameters(**{k: v for k, v in params.items() if v is not None})
    except ValueError as err:
        raise UserError(f"bad launcher setting: {str(err).splitlines()[0]}") from err
    return ex


@dataclass
class Prepared:
    """A SLURM submission checked and ready, nothing written yet (prepare_slurm)."""
    configs: list[DictConfig]
    overrides: list[list[str]]
    launcher: DictConfig
    sweep_dir: Path
    todo: list[int]  # runs to submit
    skipped: list[tuple[int, str]]  # (run, "finished" / "diverged" / "queued")


@dataclass
class Submitted:
    job_id: str  # the array's id; "" when there was nothing to submit
    sweep_dir: Path
    skipped: list[tuple[int, str]]
    tasks: int
    late_signal: str = ""  # a stop signal that arrived while sbatch ran (the array is submitted whole all the same)


def prepare_slurm(configs: list[DictConfig], overrides: list[list[str]]) -> Prepared:
    """Everything a submission checks before it writes: SLURM is there, the sweep plan, runs still queued from
    an earlier submission. Reads only: a stop signal may end it anywhere."""
    launcher = same_launcher(configs)
    _check_slurm(launcher)
    sweep_dir, todo, ended = plan(configs, overrides)
    queued = queued_runs(sweep_dir)
    ended += [(i, "queued") for i in todo if str(run_dir_for(configs[i]).relative_to(sweep_dir)) in queued]
    todo = [i for i in todo if (i, "queued") not in ended]
    return Prepared(configs, overrides, launcher, sweep_dir, todo, ended)


def _stop_if_signalled(signals: held_signals.Held, tasks: int) -> None:
    """Preempted when a stop signal has arrived: the one the command recorded before held(), or one held since."""
    if stopping.code() or signals.received:
        signum = stopping.signum_of(stopping.code()) if stopping.code() else getattr(signal, signals.received[0])
        raise stopping.Preempted(f"stopped before sbatch: none of the {tasks} task(s) submitted, nothing written",
                                 signum)


def submit_prepared(p: Prepared) -> Submitted:
    """Submits the runs still to do as one array job. Everything that can fail here (folders, the manifest) is
    done before sbatch is called. A stop signal up to sbatch's call stops the submission with nothing submitted
    and nothing left behind (Preempted: exit 3); from sbatch's call on, signals wait for its answer, and the
    array is submitted whole with its manifest complete (ssl_zoo.launch.held_signals)."""
    if not p.todo:
        return Submitted("", p.sweep_dir, p.skipped, 0)
    folder = p.sweep_dir / JOBS
    ex = executor(p.launcher, folder)
    tasks = []
    for i in p.todo:
        cfg = p.configs[i].copy()
        cfg.out_dir = str(p.sweep_dir)  # absolute: the task's working directory may differ
        tasks.append(TrainTask(OmegaConf.to_container(cfg, resolve=True)))
    with held_signals.held() as signals:
        _stop_if_signalled(signals, len(p.todo))  # before anything is written
        made = [d for d in (p.sweep_dir, folder) if not d.exists()]
        folder.mkdir(parents=True, exist_ok=True)
        before = set(folder.iterdir())

        def remove_what_was_written() -> None:
            for path in set(folder.iterdir()) - before:
                shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
            for d in reversed(made):
                d.rmdir()

        # the manifest first: a submitted array always has one (its job ids are filled in once sbatch answers)
        manifest = write_manifest(p.sweep_dir, "slurm-" + time.strftime("%Y%m%d-%H%M%S"), "slurm", p.configs,
                                  p.todo, p.skipped, p.overrides, [None] * len(p.todo))
        try:
            _stop_if_signalled(signals, len(p.todo))  # the last boundary before sbatch
        except stopping.Preempted:
            remove_what_was_written()
            raise
        try:
            # clean_env: no SLURM_*/RANK variables of this shell leak into the tasks; sbatch's complaint (submitit
            # echoes it on stderr) becomes the one-line error below.
            with signals.blocked(), submitit.helpers.clean_env(), redirect_stderr(io.StringIO()):
                jobs = ex.submit_array(tasks)
        except (submitit.core.utils.FailedJobError, subprocess.CalledProcessError, OSError) as err:
            remove_what_was_written()  # nothing was submitted: leave nothing behind
            lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
            raise UserError(f"sbatch refused the job: {lines[0] if lines else type(err).__name__}") from err
        job_ids = [str(j.job_id) for j in jobs]
        array_id = job_ids[0].split("_")[0]
        write_manifest(p.sweep_dir, array_id, "slurm", p.configs, p.todo, p.skipped, p.overrides, job_ids,
                       path=manifest)
    return Submitted(array_id, p.sweep_dir, p.skipped, len(p.todo), ", ".join(dict.fromkeys(signals.received)))


def submit_slurm(configs: list[DictConfig], overrides: list[list[str]]) -> tuple[str, Path, list[tuple[int, str]]]:
    """prepare_slurm, then submit_prepared. Returns (job id, sweep dir, runs skipped: ended or still queued)."""
    sent = submit_prepared(prepare_slurm(configs, overrides))
    return sent.job_id, sent.sweep_dir, sent.skipped
