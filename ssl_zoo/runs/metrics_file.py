"""metrics.csv, one row per epoch: its one writer and its readers (see ssl_zoo.runs.reading for what they return)."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import TYPE_CHECKING

from ssl_zoo.runs.atomic import atomic_write_text
from ssl_zoo.runs.layout import METRICS
from ssl_zoo.runs.reading import read_text, text_or_problem

if TYPE_CHECKING:
    import pandas as pd


def write_metrics(run_dir: Path, rows: list[dict]) -> None:
    """metrics.csv rewritten whole from the rows the checkpoint carries, so a resumed run never repeats one
    (and a run resumed from before its first epoch end has none)."""
    path = run_dir / METRICS
    if not rows:
        path.unlink(missing_ok=True)
        return
    fields = list(rows[0])
    for row in rows:
        fields += [k for k in row if k not in fields]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def metrics_or_problem(run_dir: Path) -> tuple[pd.DataFrame | None, str | None]:
    """metrics.csv with numeric columns (anything else in a cell, infinities too, becomes NaN: plots cannot
    place it) and whole epochs 1, 2, ...; an empty file (a run before its first epoch end) is absent."""
    import pandas as pd

    path = Path(run_dir) / METRICS
    text, problem = text_or_problem(path)
    if text is None:
        return None, problem
    if not text.strip():
        return None, None
    if "\0" in text:
        return None, f"{path}: binary, not CSV"
    try:
        df = pd.read_csv(io.StringIO(text))
    except (ValueError, pd.errors.ParserError) as err:
        return None, f"{path}: not CSV ({str(err).splitlines()[0][:80]})"
    if "epoch" not in df.columns:
        return None, f"{path}: no epoch column"
    df = df.apply(pd.to_numeric, errors="coerce").replace([float("inf"), float("-inf")], float("nan"))
    epochs = df["epoch"]
    if epochs.isna().any() or not (epochs == epochs.round()).all() or (epochs < 1).any():
        return None, f"{path}: the epoch column holds something other than epoch numbers"
    if df.empty:
        return None, None
    df["epoch"] = epochs.astype(int)
    return df, None


def _finite(v: object) -> float | None:
    try:
        number = float(v)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def last_epoch_and_loss(run_dir: Path) -> tuple[int, float | None, list[str]]:
    """(last epoch, its loss, notes on what was left out): the progress `ssl-zoo status` shows, read from the
    last row alone so a damaged earlier row or a missing epoch column still shows how far the run got. (0, None)
    when there is no row yet."""
    try:
        text = read_text(run_dir / METRICS)
        if "\0" in text:
            raise ValueError("NUL bytes")
        rows = list(csv.DictReader(io.StringIO(text)))
    except FileNotFoundError:
        return 0, None, []
    except (OSError, ValueError, csv.Error):  # binary (not utf-8, NUL bytes), unreadable, far too large
        return 0, None, [f"{METRICS} unreadable"]
    if not rows:
        return 0, None, []
    epoch, loss = _finite(rows[-1].get("epoch")), _finite(rows[-1].get("loss"))
    notes = [f"{METRICS} has no readable epoch"] if epoch is None else []
    return (int(epoch) if epoch is not None and epoch >= 0 else len(rows)), loss, notes
