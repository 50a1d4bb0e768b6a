"""One training run from a config: run directory, training, evaluation, results.json."""

from __future__ import annotations

import time
from pathlib import Path

import torch
from omegaconf import DictConfig

from ssl_zoo.common import distributed, stopping
from ssl_zoo.common.errors import UserError
from ssl_zoo.common.stopping import Preempted
from ssl_zoo.data.datasets import load_data
from ssl_zoo.evaluation import monitors
from ssl_zoo.launch.run_eval import check_eval_fits, evaluate_trained
from ssl_zoo.runs.checkpoint import checkpoint_stamp
from ssl_zoo.runs.config_file import write_config
from ssl_zoo.runs.identity import results_header, run_dir_for
from ssl_zoo.runs.metrics_file import write_metrics
from ssl_zoo.runs.results_file import write_results
from ssl_zoo.runs.rundir import check_existing
from ssl_zoo.runs.runlock import RunInUse, RunLock, acquire
from ssl_zoo.train.build import build_trainer, pick_device
from ssl_zoo.train.trainer import Diverged, Trainer

CLAIMED, REFUSED, IN_USE, RELOAD = 0, 1, 2, 3  # rank 0's verdict on the run directory, sent to every rank


def evaluate_run(trainer: Trainer) -> dict:
    """The end-of-training evaluation (ssl_zoo.launch.run_eval; `ssl-zoo eval` runs the same on a saved run)."""
    return evaluate_trained(trainer.method, trainer.data, trainer.cfg, trainer.device, trainer.run_dir, trainer.rows)


def train(cfg: DictConfig) -> Path:
    """Trains (or resumes) the run the config names and returns its directory. Under torchrun or a multi-task
    SLURM job every process calls this: they train together (DDP) and only rank 0 writes or evaluates.

    Nothing is written before every check has passed (config, data, checkpoint) and rank 0 holds the run
    directory's lock (ssl_zoo.runs.runlock): a second start of a run that is training is refused in one line."""
    distributed.init_from_env(pick_device(cfg).type)
    main = distributed.rank() == 0
    run_dir = run_dir_for(cfg)
    check_existing(run_dir, cfg)  # read-only; checked again under the lock
    data = load_data(cfg.data)  # before anything is written: a missing dataset leaves no directory behind
    if cfg.eval.enabled:
        check_eval_fits(cfg, len(data.train_y))  # probe settings the data cannot honour: refused before training, not after
    trainer = build_trainer(cfg, data, run_dir)
    _stop_if_requested(trainer)
    stamp = checkpoint_stamp(run_dir)
    restored = trainer.restore(rewrite_metrics=False)  # reads only: a bad checkpoint is refused before any write
    distributed.barrier()  # every rank has looked at the run directory before rank 0 claims it
    lock, resuming, reload = _claim(trainer, stamp)
    try:
        if reload:  # another process wrote a checkpoint between the first look and the lock
            restored = trainer.restore(rewrite_metrics=False)
        if main:
            if not resuming:
                write_config(run_dir, cfg)
            if restored:  # rows written after this checkpoint (then a kill) are dropped: they will be redone
                write_metrics(run_dir, trainer.rows)
            state = f"resuming at step {trainer.step}/{trainer.total_steps}" if restored else \
                f"new run, {trainer.total_steps} steps"
            print(f"run {run_dir}: {state}", flush=True)  # the run's first line: where it writes, start or resume
        return _train_and_finish(trainer)
    finally:
        if lock is not None:
            lock.release(remove_if_unused=True)


def _train_and_finish(trainer: Trainer) -> Path:
    cfg, run_dir, main = trainer.cfg, trainer.run_dir, trainer.rank == 0
    header = results_header(cfg, trainer.steps_per_epoch)
    try:
        trainer.fit()
        if not main:
            return run_dir
        if trainer.stop_code:  # a stop signal after the last step's vote: the final checkpoint is whole
            raise Preempted(f"stopped at step {trainer.step} (the last), before the evaluation; checkpoint saved",
                            stopping.signum_of(trainer.stop_code))
        with stopping.interruptible(f"stopped at step {trainer.step} (the last) during the evaluation; checkpoint "
                                    "saved, results.json not written"):
            results = finish(trainer)
    except Diverged as err:
        if main:
            write_results(run_dir, {**header, "status": "diverged", "error": str(err),
                                    "collapsed": False})
        raise
    except (Preempted, UserError):
        raise
    except Exception as err:  # a crash (out of memory, a bug): marked so compare/status show it; resume retries
        if main:
            write_results(run_dir, {**header, "status": "failed",
                                    "error": f"{type(err).__name__}: {err}"[:500]})
        raise
    write_results(run_dir, results)  # a stop signal from here on ends nothing: the run is done
    return run_dir


def _stop_if_requested(trainer: Trainer) -> None:
    """A stop signal received before the run started (set-up, or the previous run of a sweep): stop here, with
    nothing written. Every rank decides alike (the stop vote)."""
    code = stopping.code() if trainer.stop_vote is None else trainer.stop_vote(stopping.code())
    if code:
        raise Preempted(f"stopped before {trainer.run_dir} started; nothing lost", stopping.signum_of(code))


def _claim(trainer: Trainer, stamp: tuple) -> tuple[RunLock | None, bool, bool]:
    """Rank 0 takes the run directory's lock and checks again, under it, what the first look found (another
    process may have started, stopped or ended the run in between). Every rank gets the verdict.
    Returns (lock, resuming, reload the checkpoint)."""
    lock, resuming, verdict, message = None, False, CLAIMED, ""
    if trainer.rank == 0:
        try:
            lock = acquire(trainer.run_dir, "ssl-zoo train")
            resuming = check_existing(trainer.run_dir, trainer.cfg)
            verdict = RELOAD if checkpoint_stamp(trainer.run_dir) != stamp else CLAIMED
        except UserError as err:
            verdict, message = (IN_USE if isinstance(err, RunInUse) else REFUSED), str(err)
            if lock is not None:
                lock.release(remove_if_unused=True)
            lock = None
    verdict, message = _from_rank0(trainer, verdict, message)
    if verdict == IN_USE:
        raise RunInUse(message)
    if verdict == REFUSED:
        raise UserError(message)
    return lock, resuming, verdict == RELOAD


def _from_rank0(trainer: Trainer, verdict: int, message: str) -> tuple[int, str]:
    """Rank 0's (verdict, message) on every rank, through the stop vote's CPU group."""
    if trainer.stop_vote is None:
        return verdict, message
    import torch.distributed as dist

    buf = torch.zeros(1025, dtype=torch.uint8)
    if trainer.rank == 0:
        text = message.encode()[:1024]
        buf[0] = verdict
        buf[1:1 + len(text)] = torch.tensor(list(text), dtype=torch.uint8)
    dist.broadcast(buf, src=0, group=trainer.stop_vote.group)
    return int(buf[0]), bytes(buf[1:].tolist()).rstrip(b"\0").decode(errors="replace")


def finish(trainer: Trainer) -> dict:
    """Rank 0 after training: the end-of-run evaluation and the results.json content."""
    cfg = trainer.cfg
    start = time.perf_counter()
    evaluation = evaluate_run(trainer) if cfg.eval.enabled else {}
    results = {**results_header(cfg, trainer.steps_per_epoch), "status": "finished", **evaluation}
    last = trainer.rows[-1]
    results.update({"wall_s": round(trainer.elapsed, 2), "eval_s": round(time.perf_counter() - start, 2),
                    "images_per_s": round(trainer.step * trainer.global_batch / max(trainer.elapsed, 1e-9), 1),
                    "processes": trainer.world,
                    "monitor_images": len(trainer.monitor),  # num_images, or fewer when the test set is smaller
                    **monitors.final_collapse(cfg, last)})  # `collapsed` by monitors.COLLAPSE_RULE
    return results
