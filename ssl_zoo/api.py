"""The Python API for notebooks and scripts (docs/python_api.md): the CLI's pieces with the shipped defaults.

Every config goes through the same composition and checks as `ssl-zoo train`: keyword arguments are the CLI's
overrides (`data="cifar10"` picks a config group, `**{"method.tau_base": 0.99}` or `trainer={"epochs": 5}` sets
keys), and a mistake raises ssl_zoo.common.errors.UserError with the CLI's one-line message.

    from ssl_zoo import api
    model = api.build("byol", encoder="resnet18_cifar", data="cifar10", **{"method.tau_base": 0.996})
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from ssl_zoo.common.errors import UserError
from ssl_zoo.config.compose import GROUPS
from ssl_zoo.data.datasets import ImageData
from ssl_zoo.data.views import ViewMaker
from ssl_zoo.models.method import Method

# The overrides each config came from, to refuse a config edited by assignment (it would skip the checks).
_ORIGIN: dict[int, tuple[list[str], str]] = {}


def _value(v: Any) -> str:
    """A Python value as Hydra override syntax."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "null"
    if isinstance(v, list | tuple):
        return "[" + ",".join(_value(x) for x in v) + "]"
    if isinstance(v, str) and (not v or any(c in v for c in " ,=[]{}()'\"\\:")):
        return "'" + v.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return str(v)


def _flatten(settings: Mapping[str, Any], prefix: str = "") -> list[str]:
    out = []
    for key, v in settings.items():
        name = f"{prefix}{key}"
        if isinstance(v, Mapping):  # trainer={"epochs": 5} -> trainer.epochs=5
            out += _flatten(v, f"{name}.")
        else:
            out.append(f"{name}={_value(v)}")
    return out


def overrides(method: str | None = None, settings: Mapping[str, Any] | None = None,
              extra: Iterable[str] = ()) -> list[str]:
    """The CLI override list for a method name, keyword settings and raw `key=value` strings."""
    out = [] if method is None else [f"method={method}"]
    for key, v in (settings or {}).items():
        if key in GROUPS and v is None:  # None: the group's default (views: the method's own recipe)
            continue
        if key in GROUPS and isinstance(v, str):
            out.append(f"{key}={v}")
        else:
            out += _flatten({key: v})
    return [*out, *extra]


def config(method: str = "byol", *args: str, **settings: Any) -> DictConfig:
    """The resolved, checked config: `ssl-zoo show method=<method> <args...> <settings...>`."""
    from ssl_zoo.launch.launcher import load

    ovr = overrides(method, settings, args)
    cfg = load(ovr)
    _ORIGIN[id(cfg)] = (ovr, OmegaConf.to_yaml(cfg))
    return cfg


def _as_config(method_or_cfg: str | DictConfig, args: tuple[str, ...], settings: dict) -> DictConfig:
    if not isinstance(method_or_cfg, DictConfig):
        return config(method_or_cfg, *args, **settings)
    if args or settings:
        raise UserError("give either a config from api.config(...) or a method name with settings, not both")
    origin = _ORIGIN.get(id(method_or_cfg))
    if origin is None or OmegaConf.to_yaml(method_or_cfg) != origin[1]:
        raise UserError("this config was not made by api.config(...) or was changed by assignment; pass the "
                        "change as a setting instead, e.g. api.config('byol', **{'trainer.epochs': 5})")
    return method_or_cfg


def build(method_or_cfg: str | DictConfig = "byol", *args: str, **settings: Any) -> Method:
    """The method (an nn.Module) with its encoder and heads, initialised from the config's seed, on the CPU:
    model.backbone is the online encoder, model.training_step(views, progress) the objective,
    model.after_step(progress) the target rule (EMA, queue, centre)."""
    from ssl_zoo.train.build import build_method

    return build_method(_as_config(method_or_cfg, args, settings))


def wrap(method: str, backbone: nn.Module, *args: str, feat_dim: int | None = None, **settings: Any) -> Method:
    """A method with its shipped defaults around your own backbone (any nn.Module mapping images [B, C, H, W]
    to features [B, D], e.g. a timm model with num_classes=0). feat_dim is found by a forward pass on an image of
    the config's data.channels and data.image_size when not given."""
    from ssl_zoo.models.method import method_class

    cfg = config(method, *args, **settings)
    if feat_dim is None:
        size, chans = int(cfg.data.image_size), int(cfg.data.channels)
        was_training = backbone.training
        with torch.no_grad():
            feat_dim = int(backbone.eval()(torch.zeros(2, chans, size, size)).shape[-1])
        backbone.train(was_training)
    return method_class(method)(backbone, feat_dim, cfg.method, int(cfg.trainer.epochs))


def load_data(cfg: DictConfig) -> ImageData:
    """The config's dataset as uint8 tensors: .train_x [N, C, H, W], .train_y, .test_x, .test_y."""
    from ssl_zoo.data.datasets import check_data_root
    from ssl_zoo.data.datasets import load_data as _load

    check_data_root(cfg)
    return _load(cfg.data)


def view_maker(cfg: DictConfig) -> ViewMaker:
    """The config's augmentations: view_maker(cfg)(uint8 batch, torch.Generator) -> list of float views."""
    from ssl_zoo.data.views import build_view_maker

    return build_view_maker(cfg.views, list(cfg.data.mean), list(cfg.data.std))


def optimizer(model: Method, cfg: DictConfig) -> torch.optim.Optimizer:
    """The trainer's optimizer for the method's parameter groups, at the config's base lr (the trainer
    also schedules the lr per step: warm-up, then cosine)."""
    from ssl_zoo.train.optim import build_optimizer

    return build_optimizer(model.param_groups(), cfg.trainer)


def train(method_or_cfg: str | DictConfig = "byol", *args: str, **settings: Any) -> Path:
    """Trains (or resumes) a run exactly as `ssl-zoo train` does, with the same run directory, checks and
    results.json; returns the run directory."""
    from ssl_zoo.launch.run import train as _train

    return _train(_as_config(method_or_cfg, args, settings))


def results(run_dir: str | Path) -> dict:
    """A run's results.json (kNN, linear, fine-tuning numbers, status)."""
    from ssl_zoo.runs.results_file import results_or_problem

    found = results_or_problem(Path(run_dir).expanduser())[0]
    if found is None:
        raise UserError(f"{run_dir} has no readable results.json (unfinished, or not a run directory)")
    return found


def load_run(run_dir: str | Path) -> Method:
    """The whole method of a run's newest checkpoint (heads and target side included), in eval mode."""
    from ssl_zoo.launch.run_eval import load_run_config
    from ssl_zoo.runs.checkpoint import load_checkpoint
    from ssl_zoo.train.build import build_method

    run_dir = Path(run_dir).expanduser()
    cfg = load_run_config(run_dir)
    state = load_checkpoint(run_dir)
    if state is None:
        raise UserError(f"{run_dir} has no checkpoint yet (checkpoints/last.pt)")
    model = build_method(cfg)
    try:
        model.load_state_dict(state["method"])
    except (KeyError, RuntimeError) as err:
        raise UserError(f"the checkpoint in {run_dir} does not fit its config.yaml ({type(err).__name__})") from err
    return model.eval()


def load_backbone(run_dir: str | Path) -> nn.Module:
    """The ONLINE backbone of a run's newest checkpoint (what the probes evaluate), in eval mode; or, given
    an `ssl-zoo export` folder, the exported backbone created with its own library."""
    path = Path(run_dir).expanduser()
    if (path / "card.json").is_file():
        from ssl_zoo.export import load_exported

        return load_exported(path)
    return load_run(path).backbone.eval()


def export(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """`ssl-zoo export`: backbone.safetensors + card.json in `out` (default <run>/export); returns `out`."""
    from ssl_zoo.export import export_run

    return export_run(Path(run_dir), None if out is None else Path(out))


def evaluate(run_dir: str | Path, **settings: Any) -> dict:
    """`ssl-zoo eval`: probes (and, with eval={"protocol": "finetune"}, fine-tuning) of a run's newest
    checkpoint, merged into its results.json; settings are eval.* keys or device."""
    from ssl_zoo.launch.run_eval import evaluate_run_dir

    return evaluate_run_dir(Path(run_dir).expanduser(), overrides(None, settings))


def features(backbone: nn.Module, images: torch.Tensor, cfg: DictConfig, batch_size: int | None = None) -> torch.Tensor:
    """Backbone features of uint8 images under the evaluation transform (resize, normalise), in eval mode,
    batch_size images per forward pass (default: the config's eval.batch_size)."""
    from ssl_zoo.evaluation.frozen import extract_features

    d = cfg.data
    batch_size = int(cfg.eval.batch_size) if batch_size is None else batch_size
    return extract_features(backbone, images, int(d.image_size), list(d.mean), list(d.std), batch_size)
