"""The one configurable MLP every projector, predictor and DINO head is built from."""

from __future__ import annotations

from torch import nn

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
