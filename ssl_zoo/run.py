"""One training run from a config: run directory, training, evaluation, results.json."""

from __future__ import annotations

import time
from pathlib import Path

from omegaconf import DictConfig

from ssl_zoo import distributed, monitors
from ssl_zoo.checkpoint import write_json
from ssl_zoo.config import encoder_label, run_dir_for
from ssl_zoo.data import load_data
from ssl_zoo.errors import UserError
from ssl_zoo.run_eval import evaluate_trained
from ssl_zoo.rundir import check_existing, write_config
from ssl_zoo.trainer import Diverged, Preempted, Trainer, pick_device


def evaluate_run(trainer: Trainer) -> dict:
    """The end-of-training evaluation (ssl_zoo.run_eval; `ssl-zoo eval` runs the same on a saved run)."""
    return evaluate_trained(trainer.method, trainer.data, trainer.cfg, trainer.device, trainer.run_dir, trainer.rows)


def results_header(cfg: DictConfig) -> dict:
    return {"method": cfg.method.name, "ablation": cfg.ablation.name, "data": cfg.data.name,
            "encoder": encoder_label(cfg), "epochs": int(cfg.trainer.epochs), "seed": int(cfg.seed)}


def train(cfg: DictConfig) -> Path:
    """Trains (or resumes) the run the config names and returns its directory. Under torchrun or a multi-task
    SLURM job every process calls this: they train together (DDP) and only rank 0 writes or evaluates."""
    distributed.init_from_env(pick_device(cfg).type)
    main = distributed.rank() == 0
    run_dir = run_dir_for(cfg)
    resuming = check_existing(run_dir, cfg)
    data = load_data(cfg.data)  # before anything is written: a missing dataset leaves no directory behind
    trainer = Trainer(cfg, data, run_dir)
    distributed.barrier()  # every rank has looked at the run directory before rank 0 writes into it
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
        if not resuming:
            write_config(run_dir, cfg)
    restored = trainer.restore()
    if main:  # the run's first line: where it writes and whether it starts or continues
        state = f"resuming at step {trainer.step}/{trainer.total_steps}" if restored else \
            f"new run, {trainer.total_steps} steps"
        print(f"run {run_dir}: {state}", flush=True)
    try:
        trainer.fit()
        if not main:
            return run_dir
        results = finish(trainer)
    except Diverged as err:
        if main:
            write_json(run_dir / "results.json", {**results_header(cfg), "status": "diverged", "error": str(err),
                                                  "collapsed": False})
        raise
    except (Preempted, UserError):
        raise
    except Exception as err:  # a crash (out of memory, a bug): marked so compare/status show it; resume retries
        if main:
            write_json(run_dir / "results.json", {**results_header(cfg), "status": "failed",
                                                  "error": f"{type(err).__name__}: {err}"[:500]})
        raise
    write_json(run_dir / "results.json", results)
    return run_dir


def finish(trainer: Trainer) -> dict:
    """Rank 0 after training: the end-of-run evaluation and the results.json content."""
    cfg = trainer.cfg
    start = time.perf_counter()
    evaluation = evaluate_run(trainer) if cfg.eval.enabled else {}
    results = {**results_header(cfg), "status": "finished", **evaluation}
    last = trainer.rows[-1]
    results.update({"wall_s": round(trainer.elapsed, 2), "eval_s": round(time.perf_counter() - start, 2),
                    "images_per_s": round(trainer.step * trainer.global_batch / max(trainer.elapsed, 1e-9), 1),
                    "processes": trainer.world,
                    "monitor_images": len(trainer.monitor_x),  # num_images, or fewer when the test set is smaller
                    **monitors.final_collapse(cfg, last)})  # `collapsed` by monitors.COLLAPSE_RULE
    return results


