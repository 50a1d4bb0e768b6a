"""The method contract: a strategy class the trainer calls. It owns its heads and target side, nothing else.

A method is the repository's methods/<name>.py (installed as ssl_zoo.methods.<name>), which defines
`METHOD = <class>`, and conf/method/<name>.yaml with its defaults. Adding a method needs no change to the core;
the package sees a new one once installed editable (`pip install -e .`): README.md, "Adding a method".
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import nn

from ssl_zoo.common.errors import UserError
from ssl_zoo.models.linear_predictor import LinearPredictor
from ssl_zoo.models.targets import MomentumPairs, make_momentum_targets, momentum_at, update_momentum_targets


@dataclass
class StepOutput:
    loss: torch.Tensor
    logs: dict[str, torch.Tensor | float] = field(default_factory=dict)  # scalars for metrics.csv (no .item())
    features: torch.Tensor | None = None  # online backbone features of the first view (for the online probe)


class Method(nn.Module):
    """Base strategy. Subclasses build heads in __init__ and implement training_step (and after_step)."""

    # Target attribute -> the online modules it is an EMA copy of, e.g. {"target": ("backbone", "projector")}.
    # A method declaring pairs calls make_momentum_targets() in __init__; after_step then updates them.
    momentum_pairs: ClassVar[MomentumPairs] = {}

    def __init__(self, backbone: nn.Module, feat_dim: int, cfg, epochs: int = 1):
        super().__init__()
        self.backbone = backbone  # the ONLINE backbone: the one evaluation always reads
        self.feat_dim = feat_dim
        self.cfg = cfg  # the `method` config node
        self.epochs = epochs  # schedules given in epochs (DINO's warm-ups) read progress * epochs

    @classmethod
    def check_config(cls, cfg) -> None:
        """Raise UserError for a full config this method cannot run (called before anything is written)."""

    def training_step(self, views: list[torch.Tensor], progress: float) -> StepOutput:
        """The objective on a list of augmented views; progress runs 0 -> 1 over training."""
        raise NotImplementedError

    def before_optimizer_step(self, progress: float) -> None:
        """Called between backward and the optimizer step (e.g. DINO drops last-layer gradients early on)."""

    @torch.no_grad()
    def after_step(self, progress: float) -> None:
        """The target rule (EMA update, queue enqueue, centre update). Default: the momentum pairs' EMA step with
        the scheduled tau (none declared: nothing); a method with more to do calls super().after_step first."""
        if self.momentum_pairs:
            update_momentum_targets(self, self.momentum_pairs, self.tau(progress))
        predictor = getattr(self, "predictor", None)
        if isinstance(predictor, LinearPredictor):  # its running input correlation; DirectPred sets its weight
            predictor.after_step()

    def epoch_logs(self) -> dict[str, float]:
        """Numbers of the method's own state for metrics.csv at each epoch's end (rank 0, after the epoch):
        a linear predictor's eigenspace alignment (ssl_zoo.models.linear_predictor)."""
        predictor = getattr(self, "predictor", None)
        return predictor.epoch_logs() if isinstance(predictor, LinearPredictor) else {}

    def make_momentum_targets(self) -> None:
        """The frozen copies of momentum_pairs, built once the online modules they copy exist."""
        make_momentum_targets(self, self.momentum_pairs)

    def tau(self, progress: float) -> float:
        """The momentum of the targets at this point of training (method.tau_base, method.tau_schedule)."""
        return momentum_at(float(self.cfg.tau_base), progress, str(self.cfg.tau_schedule))

    def param_groups(self) -> list[dict]:
        """Groups the optimizer trains; keys: params, lr_mult (default 1), fixed_lr (skip the LR schedule).
        A `predictor` gets its own group with cfg.predictor.lr_mult / fixed_lr (SimSiam trains it at fixed lr)
        / weight_decay_mult (a multiple of trainer.weight_decay)."""
        predictor = getattr(self, "predictor", None)
        pred = [p for p in predictor.parameters() if p.requires_grad] if predictor is not None else []
        ids = {id(p) for p in pred}
        groups = [{"params": [p for p in self.parameters() if p.requires_grad and id(p) not in ids]}]
        if pred:
            pcfg = self.cfg.predictor
            groups.append({"params": pred, "lr_mult": float(pcfg.get("lr_mult", 1.0)),
                           "fixed_lr": bool(pcfg.get("fixed_lr", False)),
                           "weight_decay_mult": float(pcfg.get("weight_decay_mult", 1.0))})
        return groups

    @torch.no_grad()
    def embed(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Embeddings the collapse monitors read: backbone features and, when there is one, projector output."""
        h = self.backbone(x)
        out = {"backbone": h}
        projector = getattr(self, "projector", None)
        if projector is not None:
            out["projector"] = projector(h)
        return out


def method_class(name: str) -> type[Method]:
    try:
        module = importlib.import_module(f"ssl_zoo.methods.{name}")
    except ModuleNotFoundError as err:
        from ssl_zoo.models.method_install import install_hint  # only on this error path

        raise UserError(f"unknown method '{name}'{install_hint(name)}") from err
    return module.METHOD
