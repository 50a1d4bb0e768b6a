"""`ssl-zoo report`: from a sweep directory of run directories (built here with known numbers) to one HTML page
and markdown with the results table, the paper-vs-here verdicts and every collapse plot."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pandas as pd
from omegaconf import OmegaConf

from ssl_zoo.analysis.report import report
from ssl_zoo.config.load import load_config

D = 64  # projector width of the fake runs


def _run(sweep, method: str, ablation: str, z_std: float, rank: float, acc: float, entropy: float | None = None,
         finished: bool = True, random_init: float | None = None) -> None:
    cfg = load_config([f"method={method}", f"ablation={ablation}", "data=digits", "trainer.epochs=3"])
    run_dir = sweep / f"{method}-{ablation}"
    run_dir.mkdir(parents=True)
    OmegaConf.save(cfg, run_dir / "config.yaml")
    rows = []
    for epoch in (1, 2, 3):  # z_std moves linearly from healthy to its final value
        row = {"epoch": epoch, "step": 10 * epoch, "loss": 1.0 / epoch, "z_std": 1 / 8 + (z_std - 1 / 8) * epoch / 3,
               "z_std_ref": 1 / 8, "effective_rank": rank, "backbone_z_std": 0.1, "backbone_z_std_ref": 0.1,
               "backbone_effective_rank": 20.0, "alignment": 0.5, "uniformity": -3.0}
        if entropy is not None:
            row.update(teacher_entropy=entropy, kl_teacher_student=0.5 / epoch)
        rows.append(row)
    pd.DataFrame(rows).to_csv(run_dir / "metrics.csv", index=False)
    np.save(run_dir / "spectrum.npy", np.logspace(0, -6 if z_std < 0.02 else -1, D))
    np.save(run_dir / "spectrum_backbone.npy", np.logspace(0, -2, 32))
    if not finished:
        return
    collapsed = z_std < 0.2 / 8 or rank < 2 or (entropy is not None and entropy < 0.1 * math.log(4096))
    results = {"method": method, "ablation": ablation, "data": "digits", "encoder": "small_cnn", "epochs": 3,
               "seed": 0, "status": "finished", "knn_top1": acc - 5, "linear_top1": acc, "wall_s": 60.0,
               "collapsed": collapsed, "collapse_reason": "z_std low" if collapsed else "", **rows[-1]}
    if random_init is not None:
        results["random_init"] = {"knn_top1": random_init - 5, "linear_top1": random_init}
    (run_dir / "results.json").write_text(json.dumps(results))


def test_report_writes_tables_verdicts_and_every_plot(tmp_path):
    sweep = tmp_path / "sweep"
    _run(sweep, "simsiam", "none", 0.12, 30.0, 80.0, random_init=77.0)
    _run(sweep, "simsiam", "predictor_fixed_random", 0.1, 30.0, 74.0)  # below random init, no collapse: partly
    _run(sweep, "simsiam", "no_stopgrad", 0.001, 1.0, 20.0)  # collapses, as the paper says
    _run(sweep, "byol", "none", 0.11, 25.0, 79.0)
    _run(sweep, "byol", "tau_zero", 0.10, 25.0, 78.0)  # the paper says it collapses: must be called out
    _run(sweep, "dino", "none", 0.1, 20.0, 78.0, entropy=4.0)
    _run(sweep, "dino", "no_centering", 0.1, 20.0, 70.0, entropy=0.2)
    _run(sweep, "byol", "tau_one", 0.1, 20.0, 0.0, finished=False)  # still running: listed, not dropped
    md_path, html_path = report(sweep)
    out = md_path.parent
    assert out == sweep / "report"
    for name in ("collapse_heatmap.png", "collapse_z_std.png", "collapse_effective_rank.png", "collapse_spectra.png",
                 "collapse_dino.png"):
        assert (out / name).stat().st_size > 10_000, name
        assert f"]({name})" in md_path.read_text() and f'src="{name}"' in html_path.read_text()
    md = md_path.read_text()
    paper = md.split("## Paper vs here")[1].split("## Results")[0]
    line = next(ln for ln in paper.splitlines() if "| simsiam  | no_stopgrad" in ln)
    assert "collapsed" in line and "| yes" in line
    line = next(ln for ln in paper.splitlines() if "| byol     | tau_zero" in ln)
    assert "no collapse" in line and "**no**" in line
    assert "byol/tau_zero: the paper reports \"collapses: 0.3%\"; here it did not collapse" in md
    line = next(ln for ln in paper.splitlines() if "| simsiam  | predictor_fixed_random" in ln)
    assert "below random init" in line and "| partly" in line
    assert "here it failed to learn (linear 74.0% < 77.0% at random init)" in md
    results = md.split("## Results")[1]
    assert "unfinished" in results and results.count("| finished") == 7
    assert "0.20 (0.02 log K)" in results  # the DINO entropy as a fraction of log K (K = 4096)
    runs = pd.read_csv(out / "collapse_runs.csv")
    assert len(runs) == 8
    assert "<table" in html_path.read_text()


def test_report_on_a_missing_directory_is_a_one_line_error(tmp_path):
    out = subprocess.run([sys.executable, "-m", "ssl_zoo.cli", "report", str(tmp_path / "nope")],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [f"ssl-zoo: error: {tmp_path / 'nope'} is not a directory "
                                               "(give the sweep's out_dir)"]
