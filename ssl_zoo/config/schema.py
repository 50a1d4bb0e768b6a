"""Typed schemas for the shared config nodes, and the check that holds a composed config against them.

Each dataclass names the keys of one node with their type (int, float, bool, str, Literal choices, lists,
`X | None`) and, in the field metadata, their range (gt/ge/lt/le, len). A failed check is one line that names
the key, what it holds and what to set instead: "trainer.batch_size=0 is out of range; set trainer.batch_size
to an int > 0". Method nodes differ per method, so they stay open: their values are typed against their own
shipped yaml (config._check_types) and every head in them (a node with `out_dim`) against HeadSchema.
Keys a node has beyond its schema are left to that shipped-yaml check, so adding a key to conf/config.yaml
never breaks this one.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import types
from dataclasses import dataclass, field
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

from omegaconf import DictConfig, ListConfig, OmegaConf

from ssl_zoo.common.errors import UserError
from ssl_zoo.common.shown import shown


def rule(**limits: Any) -> Any:
    """A required field with limits: gt, ge, lt, le (numbers, or each item of a list) and len (lists)."""
    return field(metadata=limits)


@dataclass
class TrainerSchema:
    epochs: int = rule(gt=0)
    batch_size: int = rule(gt=0)
    optimizer: Literal["sgd", "lars", "adamw"] = rule()
    lr: float = rule(gt=0)
    lr_scaling: Literal["linear", "none"] = rule()
    min_lr: float = rule(ge=0)
    momentum: float = rule(ge=0, lt=1)
    weight_decay: float = rule(ge=0)
    betas: list[float] = rule(len=2, ge=0, lt=1)
    warmup_epochs: float = rule(ge=0)
    precision: Literal["auto", "bf16", "fp32"] = rule()
    checkpoint_every: int = rule(gt=0)
    log_every: int = rule(gt=0)
    grad_clip: float | None = rule(gt=0)
    compile: bool = rule()
    compile_mode: Literal["default", "reduce-overhead", "max-autotune-no-cudagraphs"] = rule()
    channels_last: bool | Literal["auto"] = rule()
    steps: int | None = field(default=None, metadata={"gt": 0})  # run length in optimizer steps (over epochs)


@dataclass
class FinetuneSchema:
    label_fractions: list[float] = rule(gt=0, le=1)
    subset_seed: int = rule(ge=0)
    epochs: int = rule(ge=0)
    min_steps: int = rule(gt=0)
    batch_size: int = rule(gt=0)
    lr: float = rule(gt=0)
    weight_decay: float = rule(ge=0)


@dataclass
class LinearSgdSchema:
    lr: float = rule(gt=0)
    nesterov: bool = rule()
    batch_size: int = rule(gt=0)


@dataclass
class EvalSchema:
    enabled: bool = rule()
    knn_k: int | None = rule(gt=0)
    knn_t: float = rule(gt=0)
    online_probe: bool = rule()
    random_init: bool = rule()
    projector: bool = rule()
    raw_pixels: bool = rule()
    batch_size: int = rule(gt=0)
    max_train: int | None = rule(gt=0)
    protocol: Literal["probes", "finetune", "sgd"] = rule()
    finetune: FinetuneSchema = rule()
    epochs: int = rule(gt=0)  # eval.protocol=sgd
    sgd: LinearSgdSchema = rule()


@dataclass
class MonitorSchema:
    num_images: int = rule(gt=1)  # a std over samples needs two
    # LiDAR on lidar_views views of the first lidar_images monitor images; defaults keep older run configs valid.
    lidar_images: int = field(default=0, metadata={"ge": 0})  # 0 (or 1): no LiDAR
    lidar_views: int = field(default=2, metadata={"ge": 2})


@dataclass
class DataSchema:
    name: str = rule()
    root: str | None = rule()
    channels: Literal[1, 3] = rule()
    num_classes: int | None = rule(gt=0)
    image_size: int = rule(gt=0)
    mean: list[float] = rule()
    std: list[float] = rule(gt=0)
    crop_scale_min: float = rule(gt=0, le=1)
    flip_p: float = rule(ge=0, le=1)
    download: bool = rule()
    # Image folders and WebDataset shards (ssl_zoo.data.streaming); other datasets do not have these keys.
    format: Literal["folder", "webdataset"] | None = field(default=None)
    stream: bool | None = field(default=None)
    workers: int | None = field(default=None, metadata={"ge": 0})
    index_dir: str | None = field(default=None)
    classes: list[str] | None = field(default=None)
    eval_resize: int | None = field(default=None, metadata={"gt": 0})
    max_bad_fraction: float | None = field(default=None, metadata={"ge": 0, "le": 1})
    decode: Literal["cpu", "gpu"] | None = field(default=None)


@dataclass
class EncoderSchema:
    name: str = rule()
    arch: str = rule()
    width: int | None = rule(gt=0)
    cifar_stem: bool = rule()
    pretrained: bool = rule()
    patch_size: int | None = field(default=None, metadata={"gt": 0})  # ViTs only


@dataclass
class HeadSchema:
    """The one configurable MLP (ssl_zoo/models/heads.py) every projector / predictor / DINO head is built from."""

    layers: int = rule(ge=1)
    hidden_dim: int = rule(gt=0)
    out_dim: int = rule(gt=0)
    bn_hidden: bool = rule()
    bn_out: bool = rule()
    affine: bool = rule()
    bias: bool = rule()
    activation: Literal["relu", "gelu"] = field(default="relu", metadata={})  # between layers; DINO: gelu
    # A predictor's kind and its knobs (BYOL, SimSiam; ssl_zoo/models/linear_predictor.py): absent in other heads.
    kind: Literal["mlp", "linear", "directpred"] | None = field(default=None)
    f_momentum: float | None = field(default=None, metadata={"ge": 0, "lt": 1})
    directpred_eps: float | None = field(default=None, metadata={"ge": 0})
    directpred_freq: int | None = field(default=None, metadata={"gt": 0})
    weight_decay_mult: float | None = field(default=None, metadata={"ge": 0})


@dataclass
class ConfigSchema:
    seed: int = rule(ge=0, lt=2**31)
    deterministic: bool = rule()
    device: Literal["auto", "cpu", "cuda"] = rule()
    out_dir: str = rule()
    run_name: str | int | None = rule()
    resume: Literal["auto", "never"] = rule()
    logger: Literal["csv", "tensorboard", "wandb"] = rule()
    progress_bar: bool = rule()
    trainer: TrainerSchema = rule()
    eval: EvalSchema = rule()
    monitor: MonitorSchema = rule()
    data: DataSchema = rule()
    encoder: EncoderSchema = rule()


@dataclass
class SlurmLauncherSchema:
    """launcher=slurm's sizes (checked before submission; launcher=local has none of these keys)."""

    timeout_min: int = rule(gt=0)
    nodes: int = rule(gt=0)
    gpus_per_node: int = rule(ge=0)
    tasks_per_node: int | None = rule(gt=0)
    cpus_per_task: int | None = rule(gt=0)
    mem_gb: float | None = rule(gt=0)
    array_parallelism: int = rule(gt=0)
    signal_delay_s: int = rule(ge=0)
    max_num_timeout: int = rule(ge=0)


# --- the check ---------------------------------------------------------------------------------------------
_NAMES = {int: "an int", float: "a float", bool: "true or false", str: "a string", type(None): "null"}


def _is_union(tp: Any) -> bool:
    return get_origin(tp) in (Union, types.UnionType)


def _matches(value: Any, tp: Any) -> bool:
    if _is_union(tp):
        return any(_matches(value, t) for t in get_args(tp))
    if get_origin(tp) is Literal:
        return any(value == c and type(value) is type(c) for c in get_args(tp))
    if get_origin(tp) is list:
        return isinstance(value, ListConfig | list) and all(_matches(v, get_args(tp)[0]) for v in value)
    if tp is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, tp)


def _limits(limits: dict) -> str:
    words = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}
    lo = [(k, v) for k, v in limits.items() if k in ("gt", "ge")]
    hi = [(k, v) for k, v in limits.items() if k in ("lt", "le")]
    if lo and hi:
        return f" in {'(' if lo[0][0] == 'gt' else '['}{lo[0][1]}, {hi[0][1]}{')' if hi[0][0] == 'lt' else ']'}"
    return "".join(f" {words[k]} {v}" for k, v in lo + hi)


def _choices(tp: Any) -> list[str]:
    return [str(c).lower() if isinstance(c, bool) else str(c) for c in get_args(tp)]


def describe(tp: Any, limits: dict) -> str:
    """What a field accepts, in words: 'an int > 0', 'a list of 2 floats in [0, 1)', 'one of sgd, lars'."""
    if _is_union(tp):
        parts = [", ".join(_choices(t)) if get_origin(t) is Literal else "true, false" if t is bool
                 else describe(t, {} if t is type(None) else limits) for t in get_args(tp)]
        return ", ".join(parts[:-1]) + " or " + parts[-1]
    if get_origin(tp) is Literal:
        return "one of " + ", ".join(_choices(tp))
    if get_origin(tp) is list:
        n = f"{limits['len']} " if "len" in limits else ""
        return f"a list of {n}{describe(get_args(tp)[0], {})[2:]}s{_limits(limits)}"
    return _NAMES.get(tp, tp.__name__) + _limits(limits)


def _in_range(value: Any, limits: dict) -> bool:
    if isinstance(value, ListConfig | list):
        return ("len" not in limits or len(value) == limits["len"]) and all(_in_range(v, limits) for v in value)
    if not isinstance(value, int | float) or isinstance(value, bool):
        return True
    checks = {"gt": value > limits.get("gt", -float("inf")), "ge": value >= limits.get("ge", -float("inf")),
              "lt": value < limits.get("lt", float("inf")), "le": value <= limits.get("le", float("inf"))}
    return all(checks.values())


@functools.cache
def _hints(schema: type) -> dict[str, Any]:
    """A schema's field types (resolving the string annotations costs ~1 ms; every config check asks)."""
    return get_type_hints(schema)


def declared(path: str, schema: type = ConfigSchema) -> Any | None:
    """The type this schema gives a dotted key (e.g. trainer.channels_last), or None if it gives none."""
    tp: Any = schema
    for name in path.split("."):
        if not dataclasses.is_dataclass(tp):
            return None
        tp = _hints(tp).get(name)
    return tp


def check(node: DictConfig, schema: type, prefix: str = "") -> None:
    """Raise a one-line UserError for the first key of `node` that is missing, mistyped or out of range."""
    hints = _hints(schema)
    for f in dataclasses.fields(schema):
        key, tp = f"{prefix}{f.name}", hints[f.name]
        optional = f.default is not dataclasses.MISSING
        if f.name not in node.keys():  # keys(): `in` is False for a key whose value is ??? (missing)
            if optional:
                continue
            if dataclasses.is_dataclass(tp):
                raise UserError(f"{key} is missing; it is a config node every run needs (`ssl-zoo show` prints it)")
            raise UserError(f"{key} is missing; set {key} to {describe(tp, dict(f.metadata))}")
        if OmegaConf.is_missing(node, f.name):
            raise UserError(f"{key} has no value (???); give it on the command line: {key}=...")
        value = node[f.name]
        if dataclasses.is_dataclass(tp):
            if not isinstance(value, DictConfig):
                raise UserError(f"{key} must be a config node, got {shown(value)}")
            check(value, tp, f"{key}.")
            continue
        spec = describe(tp, dict(f.metadata))
        if not _matches(value, tp):
            literal = get_origin(tp) is Literal or any(get_origin(t) is Literal for t in get_args(tp))
            problem = "is not a valid choice" if literal else "has the wrong type"
            raise UserError(f"{key}={shown(value)} {problem}; set {key} to {spec}")
        if not _in_range(value, dict(f.metadata)):
            raise UserError(f"{key}={shown(value)} is out of range; set {key} to {spec}")


def check_heads(method: DictConfig) -> None:
    """Every MLP head in a method node (a sub-node with `out_dim`) against HeadSchema."""
    for key in method:
        value = method[key]
        if isinstance(value, DictConfig) and "out_dim" in value:
            check(value, HeadSchema, f"method.{key}.")


# Method knobs by naming convention (methods/<name>.py and conf/method/<name>.yaml follow it): temperatures,
# sizes and counts are positive, momenta are fractions.
METHOD_KNOB_RULES: list[tuple[str, dict]] = [
    (r"(temp|temperature)$", {"gt": 0}),
    (r"(_size|_dim|^num_\w+|_prototypes)$", {"gt": 0}),
    (r"(^tau_base|momentum)$", {"ge": 0, "le": 1}),
]


def check_method_knobs(method: DictConfig) -> None:
    for key in method:
        value = method[key]
        if not isinstance(value, int | float) or isinstance(value, bool):
            continue
        for pattern, limits in METHOD_KNOB_RULES:
            if re.search(pattern, str(key)) and not _in_range(value, limits):
                spec = "a number" + _limits(limits)
                raise UserError(f"method.{key}={shown(value)} is out of range; set method.{key} to {spec}")
