"""A run's config turned into the parts the Trainer receives: the device, the method, the views, the optimizer,
the online probe, the held-out monitor, the tracker and the loop's settings."""

from __future__ import annotations

import functools
from pathlib import Path

import torch
from omegaconf import DictConfig

from ssl_zoo.common import distributed
from ssl_zoo.common.errors import UserError
from ssl_zoo.data.source import DataSource
from ssl_zoo.data.views import build_view_maker
from ssl_zoo.models.encoders import build_encoder, has_convolutions
from ssl_zoo.models.method import Method, method_class
from ssl_zoo.train import ddp
from ssl_zoo.train.epoch_monitor import EpochMonitor
from ssl_zoo.train.online_probe import OnlineProbe
from ssl_zoo.train.optim import build_optimizer
from ssl_zoo.train.schedule import build_schedule
from ssl_zoo.train.settings import TrainSettings
from ssl_zoo.train.tensorboard import open_tracker
from ssl_zoo.train.trainer import Trainer


def pick_device(cfg: DictConfig) -> torch.device:
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise UserError("device=cuda but no CUDA device is visible; use device=auto or device=cpu")
    if cfg.device == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    if distributed.is_distributed():  # one GPU per process on its node
        return torch.device("cuda", distributed.local_rank() % torch.cuda.device_count())
    return torch.device("cuda")


def build_method(cfg: DictConfig, seed_offset: int = 0, epochs: float | None = None) -> Method:
    """The method with its encoder, initialised from the seed (the same seed gives the same initial weights).
    `epochs`: the run's length in epochs for the method's epoch-based schedules (trainer.epochs by default)."""
    torch.manual_seed(int(cfg.seed) + seed_offset)
    backbone, feat_dim = build_encoder(cfg.encoder, int(cfg.data.channels), int(cfg.data.image_size))
    return method_class(str(cfg.method.name))(backbone, feat_dim, cfg.method,
                                              int(cfg.trainer.epochs) if epochs is None else epochs)


def uses_channels_last(cfg: DictConfig, method: Method, device: torch.device) -> bool:
    """channels_last: cuDNN's and oneDNN's fast convolution layout (on 2 CPU cores 20-30% off a small CNN's or
    ResNet-18's step). auto: on CUDA; on a CPU too unless deterministic=true, because oneDNN's channels_last
    batch norm sums in an order that depends on the thread count (a few steps then differ by ~1e-2 between core
    counts and from DDP), where the default layout gives the same bits on any number of threads."""
    auto = has_convolutions(method) and (device.type == "cuda" or not cfg.deterministic)
    return cfg.trainer.channels_last is True or (cfg.trainer.channels_last == "auto" and auto)


def compile_parts(method: Method, views, mode: str):
    """trainer.compile: each part of the method compiled in place (state_dict keys unchanged), and the view maker.
    Not training_step as a whole: its python-float `progress` would recompile it every step."""
    # The parts share one code object (Module._call_impl): each part and mode is one dynamo cache entry.
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
    for part in method.children():
        part.compile(mode=mode)
    return torch.compile(views)


def build_trainer(cfg: DictConfig, data: DataSource, run_dir: Path) -> Trainer:
    """The Trainer of a run: `data` is either kind of dataset (ssl_zoo.data.source), `run_dir` where it writes."""
    device = pick_device(cfg)
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    views = build_view_maker(cfg.views, list(cfg.data.mean), list(cfg.data.std))
    world, t = distributed.world_size(), cfg.trainer
    schedule = build_schedule(cfg, data.num_pretrain_images, world)  # refuses a batch larger than the data
    epochs = None if t.get("steps") is None else schedule.total_steps / schedule.steps_per_epoch
    method = build_method(cfg, epochs=epochs).to(device)
    if world > 1 and cfg.launcher.get("sync_bn", False):
        method = ddp.sync_batchnorm(method, device)
    channels_last = uses_channels_last(cfg, method, device)
    if channels_last:
        method.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(method.param_groups(), t)
    probe = OnlineProbe(method.feat_dim, data.num_classes, device, world, enabled=bool(cfg.eval.online_probe))
    compiled_views = compile_parts(method, views, str(t.compile_mode)) if t.compile else None
    held_out = data.test_x[: int(cfg.monitor.num_images)].to("cpu")  # streamed images are decoded here, once
    monitor = EpochMonitor(held_out, views, int(cfg.data.image_size), cfg.data.mean, cfg.data.std, int(cfg.seed),
                           device, batch_size=int(t.batch_size), lidar_images=int(cfg.monitor.get("lidar_images", 0)),
                           lidar_views=int(cfg.monitor.get("lidar_views", 2)))
    settings = TrainSettings(
        seed=int(cfg.seed), batch_size=int(t.batch_size), schedule=schedule,
        grad_clip=float(t.grad_clip) if t.grad_clip else None,
        bf16=t.precision == "bf16" or (t.precision == "auto" and device.type == "cuda"),
        channels_last=channels_last, cuda_graphs=bool(t.compile) and t.compile_mode == "reduce-overhead",
        checkpoint_every=int(t.checkpoint_every), log_every=max(1, int(t.log_every)),
        progress_bar=bool(cfg.progress_bar))
    tracker = None if cfg.logger == "csv" else functools.partial(open_tracker, cfg, run_dir)
    return Trainer(method=method, data=data, views=views, compiled_views=compiled_views, optimizer=optimizer,
                   probe=probe, monitor=monitor, settings=settings, device=device, run_dir=run_dir, cfg=cfg,
                   open_tracker=tracker)
