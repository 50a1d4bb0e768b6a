"""Runs (with --run) and records the collapse study: benchmarks/collapse_study.md with the command, the machine,
the wall time, the paper-vs-here table and the results table, plus the report's main figures copied next to it.

    python benchmarks/collapse_study.py runs/collapse_study --run     # ssl-zoo train experiment=collapse_study
    python benchmarks/collapse_study.py runs/collapse_study           # record a study that already ran

Without --run the wall time is measured from the sweep's manifest (its submission time) to the newest
results.json. A hand-written "## Discussion" section already in the markdown file is kept.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
FIGURES = ("collapse_heatmap.png", "collapse_z_std.png", "collapse_effective_rank.png", "collapse_dino.png",
           "collapse_spectra.png")


def _cpu() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        model = next(ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.startswith("Model name"))
    except (OSError, StopIteration):
        model = platform.processor() or "unknown CPU"
    return f"{os.cpu_count()} cores ({model})"


def _wall_from_files(sweep: Path) -> tuple[float, str]:
    manifests = sorted((sweep / "jobs").glob("sweep-*.json"))
    start = min(datetime.fromisoformat(json.loads(p.read_text())["submitted"]).timestamp() for p in manifests)
    end = max(p.stat().st_mtime for p in sweep.glob("*/results.json"))
    return end - start, "manifest submission → newest results.json"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("sweep_dir")
    ap.add_argument("--run", action="store_true", help="run the study first (nice -n 10)")
    ap.add_argument("--md", default=str(HERE / "collapse_study.md"))
    args = ap.parse_args()
    sweep = Path(args.sweep_dir).resolve()
    command = f"nice -n 10 ssl-zoo train experiment=collapse_study out_dir={sweep}"
    loads = []
    if args.run:
        start = time.perf_counter()
        proc = subprocess.Popen(command.split())
        while proc.poll() is None:
            loads.append(os.getloadavg()[0])
            time.sleep(30)
        if proc.returncode:
            return proc.returncode
        wall, how = time.perf_counter() - start, "measured around the command"
    else:
        wall, how = _wall_from_files(sweep)

    import pandas as pd
    import torch

    from ssl_zoo.analysis.report import report

    md_path, _ = report(sweep)
    text = md_path.read_text()
    runs = pd.read_csv(md_path.parent / "collapse_runs.csv")
    train_s = pd.to_numeric(runs["wall_s"], errors="coerce").sum()
    for name in FIGURES:
        if (md_path.parent / name).exists():
            shutil.copy(md_path.parent / name, HERE / name)
    settings = next((ln[2:] for ln in text.splitlines() if ln.startswith("- settings:")), "")
    paper = text.split("## Paper vs here", 1)[1].split("## Results", 1)[0].strip()
    results = text.split("## Results", 1)[1].split("## Plots", 1)[0].strip()
    out = Path(args.md)
    discussion = out.read_text().split("## Discussion", 1)[1] if out.exists() and "## Discussion" in out.read_text() \
        else "\n\n(to be written after looking at the results)\n"
    load_text = (f"; 1-min load average during the run: median {sorted(loads)[len(loads) // 2]:.1f}, "
                 f"max {max(loads):.1f}" if loads else "")
    body = f"""# Collapse study (experiment=collapse_study)

Command: `{command}` (the report is written at the end: `{md_path.parent}/report.html`).

- Machine: {_cpu()}, shared with other work{load_text}; torch {torch.__version__}, Python {platform.python_version()}.
- Sizes: {settings}.
- Wall time: **{wall / 60:.1f} min** for {len(runs)} runs ({how}); pretraining alone {train_s / 60:.1f} min summed over runs,
  the rest is evaluation (kNN + linear probes of the backbone) and start-up.
- Figures (copied from the report): {", ".join(f"[{n}]({n})" for n in FIGURES if (HERE / n).exists())}.

![linear top-1 per method and ablation](collapse_heatmap.png)

![z_std per epoch](collapse_z_std.png)

## Paper vs here

{paper}

## Results

{results}

## Discussion{discussion}"""
    out.write_text(body)
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
