"""launcher=local sweeps: the same interface as launcher=slurm (a manifest in <out_dir>/jobs, `ssl-zoo status`),
ended runs skipped when the sweep is started again, bad sweeps refused before anything runs."""

from __future__ import annotations

import json
import subprocess
import sys

from ssl_zoo.cli import main

from tiny import TINY

HEADS = ["method.predictor.hidden_dim=64", "method.predictor.out_dim=32"]


def test_local_sweep_status_and_rerun_skips_ended_runs(tmp_path, capsys):
    args = ["train", "-m", "seed=0,1", *TINY, *HEADS, "trainer.epochs=1", "eval.enabled=false",
            f"out_dir={tmp_path}"]
    assert main(args) == 0
    assert "sweep: 2 run(s)" in capsys.readouterr().out
    assert main(["status", str(tmp_path), "--json"]) == 0
    tasks = json.loads(capsys.readouterr().out)
    assert [(t["state"], t["epoch"], t["epochs"]) for t in tasks] == [("finished", 1, 1)] * 2
    assert main(args) == 0  # the same sweep again: nothing left to run
    out = capsys.readouterr().out
    assert "sweep: 0 run(s)" in out and "2 already ended: skipped" in out
    assert main(["status", str(tmp_path)]) == 0
    assert "2 run(s) in" in capsys.readouterr().out


def test_interrupted_local_sweep_shows_stopped(tmp_path, capsys):
    manifest = {"id": "local-x", "launcher": "local", "submitted": "2026-01-01T00:00:00", "host": "elsewhere",
                "pid": 1, "command": "", "skipped": [],
                "tasks": [{"index": 0, "job_id": None, "run_dir": "r0", "overrides": [], "epochs": 3}]}
    (tmp_path / "jobs").mkdir()
    (tmp_path / "jobs" / "sweep-local-x.json").write_text(json.dumps(manifest))
    (tmp_path / "r0").mkdir()
    (tmp_path / "r0" / "metrics.csv").write_text("epoch,step,loss\n1,10,2.5\n")
    assert main(["status", str(tmp_path), "--json"]) == 0
    (task,) = json.loads(capsys.readouterr().out)
    assert task["state"] == "stopped" and task["epoch"] == 1 and task["loss"] == 2.5


def test_crashed_local_run_shows_failed_with_its_error(tmp_path, capsys):
    manifest = {"id": "local-x", "launcher": "local", "submitted": "2026-01-01T00:00:00", "host": "elsewhere",
                "pid": 1, "command": "", "skipped": [],
                "tasks": [{"index": 0, "job_id": None, "run_dir": "r0", "overrides": [], "epochs": 3}]}
    (tmp_path / "jobs").mkdir()
    (tmp_path / "jobs" / "sweep-local-x.json").write_text(json.dumps(manifest))
    (tmp_path / "r0").mkdir()
    (tmp_path / "r0" / "metrics.csv").write_text("epoch,step,loss\n1,10,2.5\n")
    (tmp_path / "r0" / "results.json").write_text(json.dumps({"status": "failed", "error": "RuntimeError: oom"}))
    assert main(["status", str(tmp_path), "--json"]) == 0
    (task,) = json.loads(capsys.readouterr().out)
    assert task["state"] == "failed" and task["note"] == "RuntimeError: oom"


def test_status_of_a_directory_without_sweep_is_one_line_error(tmp_path):
    out = subprocess.run([sys.executable, "-m", "ssl_zoo.cli", "status", str(tmp_path)], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1 and "no sweep" in out.stderr
