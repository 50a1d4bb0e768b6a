"""The collapse verdict of a run's summary, with the numbers it rests on (ssl_zoo.evaluation.monitors.COLLAPSE_RULE),
so that a reader can see how close a run came to the rule, and what the probes say next to it."""

from __future__ import annotations

import math


def _number(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def collapse_lines(r: dict, num_outputs: int | None = None) -> list[str]:
    """Lines for results.json `r`: the verdict, the final projector z_std, effective rank and (DINO, K =
    num_outputs) teacher entropy against the rule's thresholds, and the trained linear top-1 against random
    init. [] for a run without a verdict (older results.json, a diverged run)."""
    from ssl_zoo.evaluation.monitors import ENTROPY_HIGH, ENTROPY_LOW, MIN_EFFECTIVE_RANK, Z_STD_FRACTION

    if "collapsed" not in r or _number(r.get("z_std")) is None:
        return []
    lines = [f"collapse: {'collapsed' if r['collapsed'] else 'not collapsed'} (the rule on the last epoch's monitor)"]
    z_std, ref = _number(r.get("z_std")), _number(r.get("z_std_ref"))
    if ref:
        lines.append(f"  projector z_std {z_std:.4f} = {z_std / ref:.2f}/sqrt(d); collapsed below "
                     f"{Z_STD_FRACTION}/sqrt(d) = {Z_STD_FRACTION * ref:.4f}")
    rank = _number(r.get("effective_rank"))
    if rank is not None:
        lines.append(f"  projector effective rank {rank:.2f}; collapsed below {MIN_EFFECTIVE_RANK:g}")
    entropy = _number(r.get("teacher_entropy"))
    if entropy is not None and isinstance(num_outputs, int) and num_outputs > 1:
        lines.append(f"  teacher entropy {entropy / math.log(num_outputs):.3f} log K; collapsed below {ENTROPY_LOW} "
                     f"log K or above {ENTROPY_HIGH} log K")
    if r.get("collapse_reason"):
        lines.append(f"  collapsed because {r['collapse_reason']}")
    trained, random_init = _number(r.get("linear_top1")), _number((r.get("random_init") or {}).get("linear_top1"))
    if trained is not None and random_init is not None:
        below = trained < random_init
        lines.append(f"  linear top-1 {trained:.2f} is {'below' if below else 'above'} random init {random_init:.2f}"
                     + (": the trained features are worse than the untrained encoder's" if below else ""))
    return lines
