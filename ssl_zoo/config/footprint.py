"""The memory a config would need, estimated before anything is allocated, so that an absurd size
(`data.image_size=1000000`, `encoder.width=1000000`, a head with a 1e9 hidden dim) is one line instead of a
machine brought to its knees.

Parameters are counted on the method built on the meta device (shapes only: nothing is allocated, nothing is
downloaded). Activations: one meta forward of the backbone per view size and of each trained head, summing
every leaf module's output (and every attention matrix) per image, times the views and trainer.batch_size
(evaluation and fine-tuning batches are capped by the dataset's size, which a config does not know). The limit is generous (HEADROOM times the largest memory this machine or the launcher names, and never below
FLOOR): it refuses sizes no machine can run, not configurations that merely need a bigger one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from ssl_zoo.common.errors import UserError

# fp32 weight + gradient + optimizer state per trained parameter (SGD/LARS: momentum; AdamW: two moments)
BYTES_PER_TRAINED = {"sgd": 12, "lars": 12, "adamw": 16}
BYTES = 4  # fp32 everywhere: bf16 halves the activations, the estimate stays on the high side
HEADROOM = 8
FLOOR = 2**40  # 1 TiB


@dataclass
class Footprint:
    trained: int  # parameters the optimizer updates
    frozen: int  # target copies, buffers (queues, BN statistics)
    param_bytes: int  # weights, gradients, optimizer state, target copies and buffers
    activation_bytes: int = 0  # kept for the backward pass of one pretraining step, per process
    views: str = ""  # "64 x (1 of 16px, 1 of 16px)"
    largest_part: str = "backbone"  # the trained module holding most parameters: backbone, projector, head, ...
    heads_dominate: bool = False  # the heads' outputs outweigh the backbone's among the activations

    @property
    def total(self) -> int:
        return self.param_bytes + self.activation_bytes


def human(n: float) -> str:
    for unit in ("bytes", "kB", "MB", "GB", "TB", "PB", "EB"):
        if abs(n) < 1000 or unit == "EB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


def _outputs(module: nn.Module, x: torch.Tensor) -> int:
    """Elements every leaf module outputs for the meta batch x, attention matrices included (eval mode:
    BatchNorm takes a batch of one)."""
    total = 0

    def count(_module, _inputs, output) -> None:
        nonlocal total
        for t in output if isinstance(output, tuple | list) else (output,):
            if isinstance(t, torch.Tensor):
                total += t.numel()

    def attention(module, inputs, _output) -> None:  # timm's Attention: heads x tokens^2 per image, inside sdpa
        nonlocal total
        if inputs and isinstance(inputs[0], torch.Tensor) and inputs[0].dim() == 3:
            total += inputs[0].shape[0] * int(module.num_heads) * inputs[0].shape[1] ** 2

    hooks = [m.register_forward_hook(count) for m in module.modules() if not any(m.children())]
    hooks += [m.register_forward_hook(attention) for m in module.modules() if hasattr(m, "num_heads")
              and any(m.children())]
    training = module.training
    try:
        module.eval()
        with torch.no_grad():
            module(x)
    finally:
        module.train(training)
        for h in hooks:
            h.remove()
    return total


def _head_outputs(method: nn.Module) -> int:
    """Per sample, the elements the trained heads output: every child but the backbone and the frozen target
    side, fed a meta batch as wide as its first Linear layer. A child that takes something else is skipped."""
    total = 0
    for name, child in method.named_children():
        params = list(child.parameters())
        if name == "backbone" or not params or not any(p.requires_grad for p in params):
            continue
        first = next((m for m in child.modules() if isinstance(m, nn.Linear)), None)
        if first is None:
            continue
        try:
            total += _outputs(child, torch.zeros(1, first.in_features, device="meta"))
        except (RuntimeError, TypeError, ValueError):
            continue
    return total


def _head_bound(cfg: DictConfig) -> int:
    """A lower bound on the heads' parameters from their config alone: a head with a million layers would take
    minutes to build even on the meta device."""
    total = 0
    for key in cfg.method:
        head = cfg.method[key]
        if isinstance(head, DictConfig) and "out_dim" in head and "layers" in head and "hidden_dim" in head:
            total += max(int(head.layers) - 2, 0) * int(head.hidden_dim) ** 2
    return total


_KEYS = ("method", "encoder", "views", "data", "trainer")  # what a footprint depends on
_CACHE: dict[str, Footprint] = {}  # configs are loaded again and again (a sweep, its runs): meta forwards are not free


def estimate(cfg: DictConfig) -> Footprint:
    """The footprint of a composed, checked config (ssl_zoo.config.load_config calls this last)."""
    key = OmegaConf.to_yaml({k: cfg.get(k) for k in _KEYS})
    if key not in _CACHE:
        if len(_CACHE) > 256:
            _CACHE.clear()
        _CACHE[key] = _estimate(cfg)
    return _CACHE[key]


def _estimate(cfg: DictConfig) -> Footprint:
    from ssl_zoo.data.views import build_view_maker
    from ssl_zoo.models.encoders import build_encoder
    from ssl_zoo.models.method import method_class

    per_byte = BYTES_PER_TRAINED.get(str(cfg.trainer.optimizer), 16)
    bound = _head_bound(cfg)
    if bound * per_byte > FLOOR:
        return Footprint(bound, 0, bound * per_byte, largest_part="heads")
    channels = int(cfg.data.channels)
    shapes_only = OmegaConf.merge(cfg.encoder, {"pretrained": False})  # the weights do not change the sizes
    with torch.device("meta"):
        backbone, feat_dim = build_encoder(shapes_only, channels, int(cfg.data.image_size))
        method = method_class(str(cfg.method.name))(backbone, feat_dim, cfg.method, int(cfg.trainer.epochs))
    trained = sum(p.numel() for p in method.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in method.parameters() if not p.requires_grad)
    frozen += sum(b.numel() for b in method.buffers())
    parts = {name: sum(p.numel() for p in child.parameters() if p.requires_grad)
             for name, child in method.named_children()}
    recipes = build_view_maker(cfg.views, list(cfg.data.mean), list(cfg.data.std)).recipes
    heads = _head_outputs(method)
    per_view = {r.size: _outputs(backbone, torch.zeros(1, channels, r.size, r.size, device="meta"))
                for r in recipes}
    in_backbone = sum(r.n * per_view[r.size] for r in recipes)
    per_image = in_backbone + sum(r.n for r in recipes) * heads
    batch = int(cfg.trainer.batch_size)
    views = f"{batch} x ({', '.join(f'{r.n} of {r.size}px' for r in recipes)})"
    return Footprint(trained, frozen, trained * per_byte + frozen * BYTES, batch * per_image * BYTES, views,
                     max(parts, key=parts.__getitem__) if parts else "backbone", per_image > 2 * in_backbone)


def memory_known(cfg: DictConfig) -> tuple[int, str]:
    """The largest memory this run could have: this machine's RAM, its largest GPU, launcher.mem_gb."""
    known = {"this machine's memory": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")}
    if torch.cuda.is_available():
        known["this machine's GPU"] = max(torch.cuda.get_device_properties(i).total_memory
                                          for i in range(torch.cuda.device_count()))
    mem_gb = cfg.launcher.get("mem_gb")
    if isinstance(mem_gb, int | float) and not isinstance(mem_gb, bool) and mem_gb > 0:
        known["launcher.mem_gb"] = int(float(mem_gb) * 2**30)
    name = max(known, key=known.__getitem__)
    return known[name], name


def _lower(fp: Footprint, cfg: DictConfig) -> str:
    """Which keys to lower: those of the activations, of the backbone, or of the largest head."""
    if fp.activation_bytes >= fp.param_bytes and not fp.heads_dominate:
        return "lower data.image_size or trainer.batch_size (or encoder.width, the views)"
    if fp.largest_part == "backbone":
        return "lower encoder.width or pick a smaller encoder (a ViT's position embedding grows with data.image_size)"
    if isinstance(cfg.method.get(fp.largest_part), DictConfig):
        return f"lower method.{fp.largest_part}'s sizes (hidden_dim, out_dim, num_prototypes)"
    return f"lower the method's sizes (its {fp.largest_part}: layers, hidden_dim, out_dim, num_prototypes)"


def check(cfg: DictConfig) -> None:
    """Refuse, in one line with the number, a config whose model would not fit any machine."""
    try:
        fp = estimate(cfg)
    except UserError:
        raise
    except NotImplementedError:  # an operation the meta device lacks (some timm model): the run itself will tell
        return
    except (RuntimeError, OverflowError, ValueError) as err:  # images too small for the encoder, or shapes past
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0][:160]  # what torch can index
        raise UserError(f"the model of this config cannot be built ({reason}); check data.image_size, "
                        "encoder.width and the heads' sizes") from err
    if fp.total <= FLOOR:
        return
    memory, where = memory_known(cfg)
    limit = max(FLOOR, HEADROOM * memory)
    if fp.total <= limit:
        return
    activations = f" and {human(fp.activation_bytes)} of activations for trainer.batch_size={fp.views}" \
        if fp.activation_bytes else ""
    raise UserError(f"the model would need {human(fp.total)} of memory: {human(fp.param_bytes)} for "
                    f"{fp.trained + fp.frozen:.3g} parameters (with gradients and optimizer state){activations}; "
                    f"that is past {human(limit)} ({HEADROOM}x {where}, {human(memory)}, and at least "
                    f"{human(FLOOR)}); {_lower(fp, cfg)}")
