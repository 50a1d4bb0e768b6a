"""SwAV (Caron et al. 2020).

Scores: s = prototypes(normalize(projector(encoder(crop)))), prototypes l2-normalised after every step.
Codes: for each global crop, q = Sinkhorn-Knopp(s / epsilon) over the batch (3 iterations, epsilon 0.05, sums
all-reduced over ranks so the equipartition holds for the global batch), computed with no gradient, on the
scores of the queued embeddings of earlier batches prepended when the queue is in use (small batches).
`equipartition: false` replaces Sinkhorn by softmax(s / epsilon) over the prototypes (the collapse ablation).
Loss: swapped prediction: every other crop (global and local) predicts crop i's code,
  loss = mean over assigned crops i of mean over crops v != i of CE(q_i, softmax(s_v / temperature)).
Target rule: none; after the step the prototypes are renormalised and the global crops' embeddings enter the
queue (a FIFO of `queue_length` per global crop, per rank, used from `queue_start_epoch` on). The prototypes get
no gradient during the first `freeze_prototypes_epochs`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ssl_zoo.common import distributed
from ssl_zoo.methods.dino import forward_crops  # one forward per run of equal-sized crops
from ssl_zoo.models.heads import mlp
from ssl_zoo.models.method import Method, StepOutput


@torch.no_grad()
def sinkhorn(scores: torch.Tensor, epsilon: float, iterations: int) -> torch.Tensor:
    """Codes [B, K] whose columns (prototypes) share the global batch equally and whose rows sum to 1."""
    q = torch.exp(scores.float() / epsilon).T  # [K, B]
    k, b = q.shape[0], q.shape[1] * distributed.world_size()
    q /= _all_reduce_sum(q.sum())
    for _ in range(iterations):
        q /= _all_reduce_sum(q.sum(dim=1, keepdim=True))
        q /= k
        q /= q.sum(dim=0, keepdim=True)
        q /= b
    return (q * b).T


def _all_reduce_sum(x: torch.Tensor) -> torch.Tensor:
    if distributed.is_distributed():
        torch.distributed.all_reduce(x)
    return x


def swapped_prediction(scores: list[torch.Tensor], codes: list[torch.Tensor], temperature: float) -> torch.Tensor:
    """codes[i] is the code of crop i (i < len(codes)); every crop v != i predicts it from its own scores."""
    logps = [F.log_softmax(s.float() / temperature, dim=1) for s in scores]
    loss = 0.0
    for i, q in enumerate(codes):
        loss = loss + torch.stack([-(q * lp).sum(1).mean() for v, lp in enumerate(logps) if v != i]).mean()
    return loss / len(codes)


class SwAV(Method):
    def __init__(self, backbone: nn.Module, feat_dim: int, cfg, epochs: int = 1):
        super().__init__(backbone, feat_dim, cfg, epochs)
        self.projector = mlp(feat_dim, cfg.projector)
        self.prototypes = nn.Linear(int(cfg.projector.out_dim), int(cfg.num_prototypes), bias=False)
        self.normalize_prototypes()
        self.register_buffer("queue", torch.zeros(2, int(cfg.queue_length), int(cfg.projector.out_dim)))
        self.register_buffer("queue_filled", torch.zeros((), dtype=torch.long))  # rows written so far
        self._filled: int | None = None  # its host copy: read once per process (after a restore), not per step
        self.register_load_state_dict_post_hook(lambda module, keys: setattr(module, "_filled", None))
        self._enqueue: torch.Tensor | None = None

    @torch.no_grad()
    def normalize_prototypes(self) -> None:
        self.prototypes.weight.copy_(F.normalize(self.prototypes.weight, dim=1))

    def _codes(self, scores: torch.Tensor, crop: int, use_queue: bool) -> torch.Tensor:
        n, c = len(scores), self.cfg
        scores = scores.detach().float()
        if use_queue:  # the queued embeddings' scores first: Sinkhorn sees a larger "batch"
            scores = torch.cat([self.queue[crop] @ self.prototypes.weight.detach().float().T, scores])
        if c.equipartition:
            return sinkhorn(scores, float(c.epsilon), int(c.sinkhorn_iterations))[-n:]
        return F.softmax(scores / float(c.epsilon), dim=1)[-n:]

    def training_step(self, views, progress):
        feats = forward_crops(self.backbone, views)
        z = [F.normalize(self.projector(h), dim=1) for h in feats]
        scores = [self.prototypes(zi) for zi in z]
        c = self.cfg
        if self._filled is None:
            self._filled = int(self.queue_filled)
        use_queue = (int(c.queue_length) > 0 and progress * self.epochs >= float(c.queue_start_epoch)
                     and self._filled >= int(c.queue_length))
        codes = [self._codes(scores[i], i, use_queue) for i in range(2)]
        loss = swapped_prediction(scores, codes, float(c.temperature))
        self._enqueue = torch.stack([z[0].detach(), z[1].detach()])
        code = codes[0]
        logs = {"prototypes_used": torch.zeros(code.shape[1], device=code.device)
                .index_fill_(0, code.argmax(1), 1.0).sum(),
                "code_entropy": -(code * code.clamp_min(1e-12).log()).sum(1).mean()}
        return StepOutput(loss, logs, features=feats[0])

    def before_optimizer_step(self, progress):
        if progress * self.epochs < float(self.cfg.freeze_prototypes_epochs):
            self.prototypes.weight.grad = None

    @torch.no_grad()
    def after_step(self, progress):
        self.normalize_prototypes()
        length = int(self.cfg.queue_length)
        if self._enqueue is not None and length > 0:  # newest first; the oldest rows drop out
            new = self._enqueue.to(self.queue.dtype)[:, :length]
            self.queue.copy_(torch.cat([new, self.queue[:, :length - new.shape[1]]], dim=1))
            self.queue_filled.add_(new.shape[1])
            self._filled = (self._filled or 0) + new.shape[1]
        self._enqueue = None

    @torch.no_grad()
    def embed(self, x):
        """backbone features and, as "projector", the l2-normalised projection (what the prototypes score)."""
        h = self.backbone(x)
        return {"backbone": h, "projector": F.normalize(self.projector(h), dim=1)}


METHOD = SwAV
