"""One notion of the run directory: absolute from the moment a config is loaded, for single runs, sweeps, studies
and SLURM submissions; the source tree imports like the installed package; a directory that a Trainer's fit()
left behind is a run directory; what a run prints first and per epoch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ssl_zoo.common.errors import UserError
from ssl_zoo.config.load import load_config
from ssl_zoo.launch import launcher as launch
from ssl_zoo.runs.identity import run_dir_for

from tiny import tiny_overrides

ROOT = Path(__file__).resolve().parents[1]


def test_relative_out_dir_is_absolute_from_load_and_a_sweep_plans_and_writes_its_manifest(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    jobs = [[*tiny_overrides(tmp_path, method=m), "out_dir=runs"] for m in ("byol", "simsiam")]
    configs = [load_config(job) for job in jobs]
    monkeypatch.chdir(ROOT)  # a later working directory must not move the runs
    assert all(c.out_dir == str(tmp_path / "runs") for c in configs)
    assert all(run_dir_for(c).parent == tmp_path / "runs" for c in configs)
    sweep, todo, ended = launch.plan(configs)
    path = launch.write_manifest(sweep, "local-x", "local", configs, todo, ended, jobs, [None, None])
    tasks = json.loads(path.read_text())["tasks"]
    assert sweep == tmp_path / "runs" and [t["run_dir"] for t in tasks] == [run_dir_for(c).name for c in configs]


class _Job:
    def __init__(self, job_id: str):
        self.job_id = job_id


def _slurm_configs(tmp_path):
    jobs = [[*tiny_overrides(tmp_path, "launcher=slurm", method="byol"), f"seed={s}", "out_dir=grid"]
            for s in (0, 1)]
    return [launch.load(j) for j in jobs], jobs


def test_slurm_manifest_is_written_before_sbatch_and_queued_runs_are_not_submitted_again(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    configs, jobs = _slurm_configs(tmp_path)
    seen = []

    class Executor:
        def submit_array(self, tasks):
            manifests = list((tmp_path / "grid" / "jobs").glob("sweep-*.json"))
            seen.append(len(manifests))  # the manifest exists when sbatch is called
            assert all(t.config["out_dir"] == str(tmp_path / "grid") for t in tasks)
            return [_Job(f"77_{i}") for i in range(len(tasks))]

    monkeypatch.setattr(launch, "_check_slurm", lambda launcher: None)
    monkeypatch.setattr(launch, "executor", lambda launcher, folder: Executor())
    monkeypatch.setattr("ssl_zoo.launch.slurm_queue.squeue", lambda: {})
    job, sweep, skipped = launch.submit_slurm(configs, jobs)
    assert (job, sweep, skipped, seen) == ("77", tmp_path / "grid", [], [1])
    (manifest,) = launch.read_manifests(sweep)
    assert manifest["id"] == "77" and [t["job_id"] for t in manifest["tasks"]] == ["77_0", "77_1"]

    # the same command while the array is still queued: nothing is submitted twice
    monkeypatch.setattr("ssl_zoo.launch.slurm_queue.squeue", lambda: {"77_0": ("PENDING", "None"),
                                                                   "77_1": ("RUNNING", "None")})
    job, _, skipped = launch.submit_slurm(configs, jobs)
    assert job == "" and sorted(s for _, s in skipped) == ["queued", "queued"] and seen == [1]


def test_refused_submission_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    configs, jobs = _slurm_configs(tmp_path)

    class Executor:
        def submit_array(self, tasks):
            raise subprocess.CalledProcessError(1, "sbatch", "sbatch: error: invalid partition")

    monkeypatch.setattr(launch, "_check_slurm", lambda launcher: None)
    monkeypatch.setattr(launch, "executor", lambda launcher, folder: Executor())
    monkeypatch.setattr("ssl_zoo.launch.slurm_queue.squeue", lambda: {})
    with pytest.raises(UserError, match="sbatch refused"):
        launch.submit_slurm(configs, jobs)
    assert not (tmp_path / "grid").exists()


def test_the_source_tree_imports_its_methods_from_the_repository_root():
    """What a SLURM task, `python -m pytest` or a notebook started at the repository root does: ./ssl_zoo (the
    source folder, which has no methods/) is imported, not the installed package."""
    code = ("import sys; sys.meta_path = [f for f in sys.meta_path if 'editable' not in repr(f).lower()]; "
            "import ssl_zoo, ssl_zoo.methods.byol, ssl_zoo.analysis.report, ssl_zoo.conf; "
            "from ssl_zoo.models.method import method_class; method_class('simsiam'); "
            "print(ssl_zoo.__file__, ssl_zoo.methods.__file__)")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, env=env,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    package, methods = out.stdout.split()
    assert Path(package) == ROOT / "ssl_zoo" / "__init__.py" and Path(methods) == ROOT / "methods" / "__init__.py"


def test_a_trainer_fit_directory_is_a_run_that_train_and_eval_accept(tmp_path, capsys):
    """build_trainer(cfg, data, run_dir).fit() from Python, then ssl_zoo.launch.run.train(cfg) finishes it (evaluates) and
    `ssl-zoo eval <dir>` scores it. Also what a run prints: its directory and state first, one line per epoch,
    and no carriage returns when the output is not a terminal."""
    from ssl_zoo.cli import main
    from ssl_zoo.data.datasets import load_data
    from ssl_zoo.launch.run import train
    from ssl_zoo.train.build import build_trainer

    cfg = load_config(tiny_overrides(tmp_path, "data.train_subset=256", "progress_bar=true",
                                     "eval.max_train=256"))
    run_dir = run_dir_for(cfg)
    build_trainer(cfg, load_data(cfg.data), run_dir).fit()
    assert (run_dir / "config.yaml").is_file() and not (run_dir / "results.json").exists()
    capsys.readouterr()
    assert train(cfg) == run_dir
    out = capsys.readouterr().out
    assert out.splitlines()[0] == f"run {run_dir}: resuming at step 8/8", out
    assert json.loads((run_dir / "results.json").read_text())["status"] == "finished"
    assert main(["eval", str(run_dir)]) == 0
    capsys.readouterr()

    fresh = load_config(tiny_overrides(tmp_path, "data.train_subset=256", "progress_bar=true", "seed=3",
                                       "eval.enabled=false"))
    train(fresh)
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert lines[0] == f"run {run_dir_for(fresh)}: new run, 8 steps", lines
    assert [ln.split(":")[0] for ln in lines if ln.startswith("epoch ")] == ["epoch 1/2", "epoch 2/2"]
    assert "\r" not in captured.out + captured.err
