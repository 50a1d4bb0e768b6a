"""One training run from a config: run directory, training, evaluation, results.json."""

from __future__ import annotations

import time
from pathlib import Path

import torch
from omegaconf import DictConfig

from ssl_zoo.checkpoint import write_json
from ssl_zoo.config import run_dir_for
from ssl_zoo.data import ImageData, load_data
from ssl_zoo.evaluation import extract_features, probe
from ssl_zoo.rundir import check_existing, write_config
from ssl_zoo.trainer import Diverged, Trainer, build_method


def evaluate_backbone(backbone: torch.nn.Module, data: ImageData, cfg: DictConfig, device) -> dict:
    size, mean, std = int(cfg.data.image_size), list(cfg.data.mean), list(cfg.data.std)
    n = cfg.eval.max_train
    train_x, train_y = (data.train_x, data.train_y) if n is None else (data.train_x[:n], data.train_y[:n])
    bs = int(cfg.eval.batch_size)
    ftr = extract_features(backbone, train_x, size, mean, std, bs, device)
    fte = extract_features(backbone, data.test_x, size, mean, std, bs, device)
    return probe(ftr, train_y, fte, data.test_y, data.num_classes, int(cfg.eval.knn_k), float(cfg.eval.knn_t))


def evaluate_run(trainer: Trainer) -> dict:
    cfg, data, device = trainer.cfg, trainer.data, trainer.device
    out = evaluate_backbone(trainer.method.backbone, data, cfg, device)
    if cfg.eval.random_init:
        out["random_init"] = evaluate_backbone(build_method(cfg).backbone.to(device), data, cfg, device)
    if cfg.eval.raw_pixels:
        out["raw_pixels"] = evaluate_backbone(torch.nn.Flatten(), data, cfg, device)
    return out


def results_header(cfg: DictConfig) -> dict:
    return {"method": cfg.method.name, "ablation": cfg.ablation.name, "data": cfg.data.name,
            "encoder": cfg.encoder.name, "epochs": int(cfg.trainer.epochs), "seed": int(cfg.seed)}


def train(cfg: DictConfig) -> Path:
    """Trains (or resumes) the run the config names and returns its directory."""
    run_dir = run_dir_for(cfg)
    resuming = check_existing(run_dir, cfg)
    data = load_data(cfg.data)  # before anything is written: a missing dataset leaves no directory behind
    trainer = Trainer(cfg, data, run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if not resuming:
        write_config(run_dir, cfg)
    if trainer.restore():
        print(f"resuming {run_dir} at step {trainer.step}/{trainer.total_steps}", flush=True)
    try:
        trainer.fit()
    except Diverged as err:
        write_json(run_dir / "results.json", {**results_header(cfg), "status": "diverged", "error": str(err),
                                              "collapsed": False})
        raise
    start = time.perf_counter()
    results = {**results_header(cfg), "status": "finished", **evaluate_run(trainer)}
    last = trainer.rows[-1]
    results.update({"wall_s": round(trainer.elapsed, 2), "eval_s": round(time.perf_counter() - start, 2),
                    "images_per_s": round(trainer.step * trainer.batch_size / max(trainer.elapsed, 1e-9), 1),
                    "z_std": last["z_std"], "effective_rank": last["effective_rank"]})
    write_json(run_dir / "results.json", results)
    return run_dir


