"""The one configurable MLP every projector, predictor and DINO head is built from."""

from __future__ import annotations

from torch import nn

from ssl_zoo.models.linear_predictor import LinearPredictor

ACTIVATIONS = {"relu": lambda: nn.ReLU(inplace=True), "gelu": nn.GELU}


def mlp(in_dim: int, cfg) -> nn.Sequential:
    """Linear layers with BN + activation between them. Keys: layers, hidden_dim, out_dim, bn_hidden, bn_out,
    affine (BN affine parameters), bias (linear bias; dropped anyway where a BN follows), and optionally
    activation (relu, the default; gelu: DINO's head)."""
    layers = int(cfg.layers)
    if layers < 1:
        raise ValueError("an MLP head needs layers >= 1")
    act = str(cfg.get("activation", "relu"))
    if act not in ACTIVATIONS:
        raise ValueError(f"activation={act!r}; use one of {', '.join(ACTIVATIONS)}")
    dims = [in_dim] + [int(cfg.hidden_dim)] * (layers - 1) + [int(cfg.out_dim)]
    modules: list[nn.Module] = []
    for i in range(layers):
        last = i == layers - 1
        bn = bool(cfg.bn_out) if last else bool(cfg.bn_hidden)
        modules.append(nn.Linear(dims[i], dims[i + 1], bias=bool(cfg.bias) and not bn))
        if bn:
            modules.append(nn.BatchNorm1d(dims[i + 1], affine=bool(cfg.affine)))
        if not last:
            modules.append(ACTIVATIONS[act]())
    return nn.Sequential(*modules)


def predictor_head(in_dim: int, cfg) -> nn.Module:
    """The predictor on top of the projector: by cfg.kind the MLP of cfg (mlp, the default), one bias-free
    in_dim x in_dim layer (linear), or that layer set from its inputs' correlation (directpred; keys f_momentum,
    directpred_eps, directpred_freq; ssl_zoo.models.linear_predictor); the identity when cfg.enabled is false (the
    no_predictor ablation). Its parameters get no gradient when cfg.trainable is false."""
    kind = str(cfg.get("kind") or "mlp")  # absent or null: the MLP
    if not cfg.enabled:
        head: nn.Module = nn.Identity()
    elif kind == "mlp":
        head = mlp(in_dim, cfg)
    else:
        head = LinearPredictor(in_dim, kind, rho=float(cfg.f_momentum), eps=float(cfg.directpred_eps),
                               freq=int(cfg.directpred_freq))
    head.requires_grad_(bool(cfg.trainable))
    return head
