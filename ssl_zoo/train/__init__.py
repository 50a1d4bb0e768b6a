"""The training loop: trainer, DDP, optimizers, view prefetch, experiment trackers."""
