"""The online probe: a linear classifier trained alongside pretraining on detached backbone features of the
augmented train batches, reported per epoch as online_probe_acc. An ONLINE number (each batch is scored before
its update, on features that keep changing), not comparable to the frozen-feature linear probe."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

from ssl_zoo.train import ddp


class OnlineProbe:
    def __init__(self, feat_dim: int, num_classes: int, device: torch.device, world: int, enabled: bool = True):
        """`enabled`=False (eval.online_probe=false): never trained nor scored, but checkpointed all the same,
        so a checkpoint has one layout whatever the setting."""
        self.classifier = nn.Linear(feat_dim, num_classes).to(device)
        self.optimizer = torch.optim.AdamW(self.classifier.parameters(), lr=1e-3, weight_decay=0.0)
        self.world, self.enabled = world, enabled

    def parameters(self) -> Iterator[nn.Parameter]:
        return self.classifier.parameters()

    def state(self) -> dict:
        return {"probe": self.classifier.state_dict(), "probe_opt": self.optimizer.state_dict()}

    def load(self, state: dict) -> None:
        self.classifier.load_state_dict(state["probe"])
        self.optimizer.load_state_dict(state["probe_opt"])

    def logs(self, features: torch.Tensor | None, y: torch.Tensor) -> dict[str, torch.Tensor]:
        """The step's online_probe_correct / online_probe_labelled counts (summed over the epoch), after one
        update; none when disabled or when the method exposes no features."""
        if features is None or not self.enabled:
            return {}
        correct, labelled = self.step(features.detach().float(), y)
        return {"online_probe_correct": correct, "online_probe_labelled": labelled}

    def step(self, features: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One update; (correct, labelled) counts of the batch, scored before the update. Unlabelled images
        (label -1, STL-10) are left out; a batch without any gives a zero loss, not NaN."""
        logits = self.classifier(features)
        labelled = y >= 0
        loss = torch.nn.functional.cross_entropy(logits, y, ignore_index=-1, reduction="sum") / labelled.sum().clamp_min(1)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.world > 1:
            ddp.average_grads_(self.parameters())
        self.optimizer.step()
        return ((logits.argmax(1) == y) & labelled).sum(), labelled.sum()
