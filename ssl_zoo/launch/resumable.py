"""Whether a run directory's checkpoint can be resumed by its config, found out before a sweep starts.

The checks of a run's own start (Trainer.restore), read only: the newest whole checkpoint (last.pt, or prev.pt
as the start would fall back to it), the number of processes it was written by, and whether its method,
optimizer and online-probe states fit this config. The states are loaded into a shapes-only copy of the model
on the meta device: key and shape checks as strict as the real load, without allocating or copying a weight.
"""

from __future__ import annotations

import io
import warnings
from contextlib import redirect_stderr
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from ssl_zoo.runs.checkpoint import RESUME_KEYS, find_checkpoint
from ssl_zoo.train.resume_checks import check_world_size, load_resume_state


def check_resumable(cfg: DictConfig, run_dir: Path, processes: int, num_classes: int) -> None:
    """UserError (one line) when the run's start would refuse its checkpoint; nothing when there is none."""
    with redirect_stderr(io.StringIO()):  # a bad last.pt with a good prev.pt: the run's start says so itself
        found = find_checkpoint(run_dir, RESUME_KEYS)
    if found is None:
        return
    state, path = found
    check_world_size(state, run_dir, processes)
    try:
        method, optimizer, probe = _shapes_only(cfg, processes, num_classes)
    except NotImplementedError:  # an operation the meta device lacks (some timm model): the run's start checks it
        return
    with warnings.catch_warnings():  # "copying into a meta parameter is a no-op": the point here
        warnings.simplefilter("ignore")
        load_resume_state(method, optimizer, probe, state, path)  # what Trainer.restore loads, as it loads it


def _shapes_only(cfg: DictConfig, processes: int, num_classes: int) -> tuple:
    """(method, optimizer, online probe): the parts Trainer.restore loads, built as the run builds them but on
    the meta device."""
    from ssl_zoo.models.encoders import build_encoder
    from ssl_zoo.models.method import method_class
    from ssl_zoo.train.online_probe import OnlineProbe
    from ssl_zoo.train.optim import build_optimizer

    shapes_only = OmegaConf.merge(cfg.encoder, {"pretrained": False})  # the weights do not change the shapes
    with torch.device("meta"):
        backbone, feat_dim = build_encoder(shapes_only, int(cfg.data.channels), int(cfg.data.image_size))
        method = method_class(str(cfg.method.name))(backbone, feat_dim, cfg.method, int(cfg.trainer.epochs))
        optimizer = build_optimizer(method.param_groups(), cfg.trainer)
        probe = OnlineProbe(method.feat_dim, num_classes, torch.device("meta"), processes)
    return method, optimizer, probe
