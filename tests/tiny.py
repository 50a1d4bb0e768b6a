"""Tiny configs that train in seconds on two CPU cores (import: `from tiny import tiny_overrides`)."""

from __future__ import annotations

TINY = [
    "data=digits", "encoder=small_cnn", "encoder.width=8", "trainer.batch_size=64", "trainer.epochs=2",
    "eval.random_init=false", "progress_bar=false", "monitor.num_images=128",
    "method.projector.hidden_dim=64", "method.projector.out_dim=32",
]


def tiny_overrides(tmp_path, *extra: str, method: str = "byol") -> list[str]:
    head = ["method.predictor.hidden_dim=64", "method.predictor.out_dim=32"] if method in ("byol", "simsiam") else []
    tiny = TINY if not any(e.startswith("encoder=") and e != "encoder=small_cnn" for e in extra) else \
        [o for o in TINY if o != "encoder.width=8"]  # only the small CNN reads encoder.width
    return [f"method={method}", *tiny, *head, f"out_dir={tmp_path}", *extra]
