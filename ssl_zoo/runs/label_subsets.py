"""<run>/label_subsets/<n>pct.txt: the image indices of each labelled subset eval.protocol=finetune trains on, one
per line, so a result can be checked against the exact subset it came from."""

from __future__ import annotations

from pathlib import Path

from ssl_zoo.runs.atomic import atomic_write_text
from ssl_zoo.runs.layout import LABEL_SUBSETS


def write_label_subset(run_dir: Path, label: str, indices: list[int]) -> str:
    """Writes the subset named by its label ('10%') and returns its path relative to the run directory."""
    path = run_dir / LABEL_SUBSETS / f"{label.rstrip('%')}pct.txt"
    atomic_write_text(path, "\n".join(map(str, indices)) + "\n")
    return str(path.relative_to(run_dir))
