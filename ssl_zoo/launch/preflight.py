"""Every run of a sweep (or of a study's grid) checked before the first one starts or anything is submitted.

load_config checks what a config alone can get wrong; this adds what training would otherwise find out only when
that run starts: the batch and eval.knn_k against the dataset's size (each distinct data config is loaded once), the device,
pretrained weights that must be downloaded, and the checkpoint of a run directory that is there already (readable,
and fitting its config: ssl_zoo.launch.resumable). An error names the run (its overrides); nothing is written.

A bad checkpoint refuses the whole sweep rather than skipping its run: it stays bad until someone deletes or
replaces it (the error says how), so a skip would only move the failure to every later start of the same sweep.
A run another process holds is a different matter: that process is doing the run's work, so a local sweep skips
it when it gets there (ssl_zoo.launch.local_sweep).
"""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from ssl_zoo.config.overrides import naming_cell


def load_cells(jobs: list[list[str]]) -> list[DictConfig]:
    """The checked config of every run (launch.load: as the processes that will run it see it)."""
    from ssl_zoo.launch import launcher as launch

    configs = []
    for i, job in enumerate(jobs):
        with naming_cell(jobs, i):
            configs.append(launch.load(job))
    return configs


def check_cells(configs: list[DictConfig], jobs: list[list[str]], processes: int | None,
                todo: list[int] | None = None) -> None:
    """`processes`: per run, as this process sees it (local runs, torchrun); None: launcher=slurm's count, and
    the device is the compute node's (not checked here). `todo`: the runs to check (default: all). The
    checkpoint of a run that has ended is not looked at: the sweep does not start it again."""
    from ssl_zoo.data.datasets import load_data
    from ssl_zoo.launch import launcher as launch
    from ssl_zoo.launch.resumable import check_resumable
    from ssl_zoo.launch.run_eval import check_eval_fits
    from ssl_zoo.models.encoders import build_encoder
    from ssl_zoo.runs.identity import run_dir_for
    from ssl_zoo.runs.rundir import check_existing
    from ssl_zoo.train.build import pick_device
    from ssl_zoo.train.schedule import steps_per_epoch

    sizes: dict[str, tuple[int, int, int]] = {}  # data config -> (pretraining images, labelled train images, classes)
    weights: set[str] = set()
    for i in range(len(configs)) if todo is None else todo:
        cfg = configs[i]
        with naming_cell(jobs, i):
            if processes is not None:
                pick_device(cfg)
            data_key = OmegaConf.to_yaml(cfg.data)
            if data_key not in sizes:
                data = load_data(cfg.data)
                sizes[data_key] = data.num_pretrain_images, len(data.train_y), data.num_classes
            pretrain_images, labelled, classes = sizes[data_key]
            world = processes if processes is not None else launch.world_size(cfg.launcher)
            steps_per_epoch(pretrain_images, int(cfg.trainer.batch_size), world)  # refuses a batch larger than the data
            if cfg.eval.enabled:
                check_eval_fits(cfg, labelled)
            encoder_key = OmegaConf.to_yaml(cfg.encoder) + f"{cfg.data.channels} {cfg.data.image_size}"
            if cfg.encoder.get("pretrained") and encoder_key not in weights:  # downloads now, once, or refuses
                build_encoder(cfg.encoder, int(cfg.data.channels), int(cfg.data.image_size))
                weights.add(encoder_key)
            run_dir = run_dir_for(cfg)  # a run to resume (the same config, not ended): its checkpoint must not
            if not launch.ended_state(run_dir, cfg) and check_existing(run_dir, cfg):  # refuse it later
                check_resumable(cfg, run_dir, world, classes)
