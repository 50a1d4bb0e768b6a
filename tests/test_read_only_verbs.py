"""`ssl-zoo eval`, `compare`, `report` and `export` on odd run directories never crash: they report what they
can, name every file they skipped (one stderr line each) and end in exit 0, or in exit 2 with one line when
nothing usable is there. Writes fail in one line that names the real problem."""

from __future__ import annotations

import errno
import functools
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf

from ssl_zoo.cli import main
from ssl_zoo.common.errors import UserError
from ssl_zoo.config.load import load_config
from ssl_zoo.export import read_card
from ssl_zoo.runs import atomic
from ssl_zoo.runs.identity import run_dir_for
from ssl_zoo.runs.metrics_file import metrics_or_problem
from ssl_zoo.runs.results_file import results_or_problem
from ssl_zoo.runs.spectrum_file import spectrum_or_problem

from tiny import tiny_overrides


@functools.lru_cache
def _config():
    return load_config(tiny_overrides("unused", "trainer.epochs=2"))


def _run(root: Path, seed: int, results=None, metrics: str | bytes | None = None, config: str | None = None) -> Path:
    """A run directory as training leaves it, each file replaceable by odd content."""
    cfg = _config().copy()
    cfg.out_dir, cfg.seed = str(root), seed
    run_dir = run_dir_for(cfg)
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg) if config is None else config)
    metrics = "epoch,step,loss,z_std,z_std_ref,online_probe_acc\n1,10,1.0,0.1,0.125,40\n2,20,0.5,0.1,0.125,50\n" \
        if metrics is None else metrics
    (run_dir / "metrics.csv").write_bytes(metrics if isinstance(metrics, bytes) else metrics.encode())
    if results is not None:
        text = results if isinstance(results, str) else json.dumps(results)
        (run_dir / "results.json").write_text(text)
    return run_dir


def _finished(**extra) -> dict:
    return {"method": "byol", "ablation": "none", "status": "finished", "knn_top1": 80.0, "linear_top1": 90.0,
            "wall_s": 10.0, "collapsed": False, "z_std": 0.1, "z_std_ref": 0.125, **extra}


BINARY = bytes(range(256)) * 4


def _call(capsys, *args: str) -> tuple[int, str, list[str]]:
    capsys.readouterr()
    code = main(list(args))
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return code, captured.out, captured.err.strip().splitlines()


def _refused(capsys, *args: str) -> str:
    code, _, err = _call(capsys, *args)
    assert code == 2 and len(err) == 1 and err[0].startswith("ssl-zoo: error: "), err
    return err[0]


@pytest.fixture
def odd_sweep(tmp_path):
    """One good finished run next to runs whose files are odd in every way the verbs meet."""
    root = tmp_path / "sweep"
    good = _run(root, 0, results=_finished())
    bad = {
        "results_list": _run(root, 1, results=[1, 2]),
        "results_types": _run(root, 2, results=_finished(knn_top1="high")),
        "results_status": _run(root, 3, results=_finished(status=7)),
        "results_parts": _run(root, 4, results=_finished(projector=[1], random_init={"linear_top1": 300})),
        "results_finetune": _run(root, 5, results=_finished(finetune=["1%"])),
        "results_json": _run(root, 6, results="{half"),
        "config_yaml": _run(root, 7, results=_finished(), config="method: [unclosed\n"),
        "config_list": _run(root, 8, results=_finished(), config="[]\n"),
        "config_keys": _run(root, 9, results=_finished(), config="method: {name: byol}\nseed: 0\n"),
    }
    binary_metrics = _run(root, 10, results=_finished(), metrics=BINARY)
    words_metrics = _run(root, 11, results=_finished(), metrics="epoch,loss\none,1.0\n")
    (root / "jobs").mkdir()
    (root / "jobs" / "sweep-1.json").write_text("[]")  # a manifest that is not one: nothing reads it as runs
    return root, good, bad, [binary_metrics, words_metrics]


def _skipped(err: list[str]) -> list[str]:
    assert all(line.startswith("ssl-zoo: skipped ") for line in err), err
    return err


def test_compare_reports_the_good_runs_and_names_each_skipped_file(odd_sweep, tmp_path, capsys):
    root, good, bad, metrics = odd_sweep
    code, out, err = _call(capsys, "compare", str(root), "--out", str(tmp_path / "out"))
    assert code == 0 and "Summary over seeds" in out
    lines = _skipped(err)
    named = {name: [ln for ln in lines if str(run_dir) in ln] for name, run_dir in bad.items()}
    assert all(len(found) == 1 for found in named.values()), named
    assert "results.json: holds a list, not an object" in named["results_list"][0]
    assert "knn_top1 is \"high\", not a percentage" in named["results_types"][0]
    assert "projector is [1], not an object" in named["results_parts"][0]
    assert "finetune is [\"1%\"], not an object of objects" in named["results_finetune"][0]
    assert "results.json: not JSON" in named["results_json"][0]
    assert "not readable YAML" in named["config_yaml"][0] and "holds a list" in named["config_list"][0]
    assert "data.name is missing" in named["config_keys"][0]
    assert any(f"{metrics[0] / 'metrics.csv'}: binary" in ln for ln in lines)
    assert any(f"{metrics[1] / 'metrics.csv'}: the epoch column" in ln for ln in lines)
    assert len(lines) == len(bad) + len(metrics)
    runs = pd.read_csv(tmp_path / "out" / "comparison_runs.csv")
    assert len(runs) == 1 + len(bad) + len(metrics)  # nothing dropped: the unusable ones are listed as unreadable
    assert (runs["status"] == "unreadable").sum() == len(bad)
    assert runs.loc[runs["run_dir"] == str(metrics[0]), "status"].item() == "finished"  # results still count


def test_report_reports_the_good_runs_and_names_each_skipped_file(odd_sweep, capsys):
    root, good, bad, metrics = odd_sweep
    np.save(good / "spectrum.npy", np.array([{"x": 1}], dtype=object), allow_pickle=True)  # never unpickled
    np.save(good / "spectrum_backbone.npy", np.ones((3, 3)))
    odd = _run(root, 12, results=_finished(z_std="low", z_std_ref=0, teacher_entropy=[1]),  # keys outside the reader
               metrics="epoch,loss,z_std,z_std_ref\n1,inf,0.1,0\n2,-inf,x,0\n")  # infinities: left out of plots
    np.save(odd / "spectrum.npy", np.array([1.0, np.nan]))
    code, out, err = _call(capsys, "report", str(root))
    assert code == 0 and "Paper vs here" in out
    lines = _skipped(err)
    assert any("spectrum.npy: not a readable .npy" in ln for ln in lines)
    assert any("spectrum_backbone.npy: not one row of numbers" in ln for ln in lines)
    assert any(f"{odd / 'spectrum.npy'}: non-finite values" in ln for ln in lines)
    assert all(any(str(run_dir) in ln for ln in lines) for run_dir in bad.values())
    assert (root / "report" / "report.html").is_file() and (root / "report" / "collapse_runs.csv").is_file()


def test_nothing_usable_is_one_line_and_writes_nothing(tmp_path, capsys):
    root = tmp_path / "sweep"
    _run(root, 1, results=[])
    _run(root, 2, config="{{{\n")
    before = sorted(root.rglob("*"))
    for verb in ("compare", "report"):
        line = _refused(capsys, verb, str(root))
        assert "no usable run below" in line and "all 2 unreadable" in line
    assert sorted(root.rglob("*")) == before


def test_a_sweep_where_no_run_has_finished_is_reported(tmp_path, capsys):
    root = tmp_path / "sweep"
    _run(root, 0)
    _run(root, 1, metrics="")  # killed before its first epoch ended
    code, out, err = _call(capsys, "report", str(root))
    assert code == 0 and err == [] and "2 (2 unfinished)" in out
    md = (root / "report" / "report.md").read_text()
    assert "## Results" in md and md.count("| unfinished") == 2
    code, out, err = _call(capsys, "compare", str(root))
    assert code == 0 and err == [] and "0/2" in out
    _run(root, 2, results={"status": "finished", "knn_top1": 60.0, "linear_top1": 70.0})  # no collapse verdict
    code, out, err = _call(capsys, "report", str(root))
    line = next(ln for ln in out.splitlines() if ln.startswith("| byol"))
    assert code == 0 and "no collapse verdict" in line and line.rstrip(" |").endswith("–")  # not "agrees: yes"


def test_an_output_path_under_a_file_is_one_line(odd_sweep, tmp_path, capsys):
    root = odd_sweep[0]
    blocker = tmp_path / "a_file"
    blocker.write_text("mine")
    for verb in ("compare", "report"):
        for out in (blocker / "sub", blocker):
            line = _refused(capsys, verb, str(root), "--out", str(out))
            assert f"{blocker} is a file, not a folder" in line
    assert "is a file, not a folder of runs" in _refused(capsys, "compare", str(blocker))
    assert blocker.read_text() == "mine" and not (root / "report").exists()


def test_a_read_only_output_folder_is_one_line(odd_sweep, tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    monkeypatch.setattr(os, "access", lambda *args, **kwargs: False)
    line = _refused(capsys, "compare", str(odd_sweep[0]), "--out", str(out))
    assert "read-only or permission denied" in line and list(out.iterdir()) == []


def test_eval_of_a_read_only_run_is_refused_before_it_starts(tmp_path, capsys, monkeypatch):
    run_dir = _run(tmp_path / "runs", 0, results=_finished())
    monkeypatch.setattr(os, "access", lambda *args, **kwargs: False)
    assert f"cannot write to {run_dir} (read-only" in _refused(capsys, "eval", str(run_dir))


def test_a_failed_atomic_write_reports_its_own_error_not_the_cleanup(tmp_path, monkeypatch):
    blocker = tmp_path / "a_file"
    blocker.write_text("mine")
    with pytest.raises(UserError, match=f"cannot write {blocker / 'x.json'}"):  # mkdir and unlink both fail here
        atomic.write_json(blocker / "x.json", {"a": 1})
    folder = tmp_path / "target_is_a_folder"
    (folder / "results.json").mkdir(parents=True)
    with pytest.raises(UserError, match="Is a directory"):
        atomic.write_json(folder / "results.json", {"a": 1})
    assert sorted(p.name for p in folder.iterdir()) == ["results.json"]  # no temp file left behind

    real_open = open

    def read_only(path, mode="r", *args, **kwargs):
        if "w" in mode:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real_open(path, mode, *args, **kwargs)

    def unlink(self, missing_ok=False):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self))

    monkeypatch.setattr("builtins.open", read_only)
    monkeypatch.setattr(Path, "unlink", unlink)
    with pytest.raises(UserError, match="Read-only file system"):
        atomic.atomic_write_text(tmp_path / "results.json", "{}")


def test_the_run_file_readers_name_the_problem(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    assert results_or_problem(run) == (None, None) and metrics_or_problem(run) == (None, None)
    for content, problem in (('"text"', "holds a str"), ('{"status": "done"}', "status is \"done\""),
                             ('{"epochs": -1}', "epochs is -1, not a count"),
                             ('{"wall_s": NaN}', "wall_s is nan"), ('{"collapsed": "no"}', "collapsed is \"no\""),
                             ('{"knn_sweep": {"k=a,T=1": 5}}', "knn_sweep key"),
                             ('{"finetune": {"1%": {"n_labels": 5, "top1": "x"}}}', "finetune.1%.top1 is"),
                             ('{"projector": {"linear_top1": 50}}', "projector.knn_top1 is missing")):
        (run / "results.json").write_text(content)
        value, reason = results_or_problem(run)
        assert value is None and problem in reason and str(run / "results.json") in reason
    for content, problem in (("loss\n1\n", "no epoch column"), ("epoch\n0.5\n", "the epoch column"),
                             ("epoch,loss\n1,2\n", None), ("epoch\n", None)):
        (run / "metrics.csv").write_text(content)
        value, reason = metrics_or_problem(run)
        assert (reason is None) == (problem is None) and (problem is None or problem in reason), content
    (run / "metrics.csv").write_text("epoch,loss\n1,x\n2,0.5\n")
    df, reason = metrics_or_problem(run)
    assert reason is None and df["loss"].isna().tolist() == [True, False]  # a word in a number cell: NaN
    (run / "spectrum.npy").write_bytes(b"\x93NUMPY garbage")
    assert "not a readable .npy" in spectrum_or_problem(run, "")[1]


# --- eval and export on odd directories (one real trained run, copied per case) ----------------------------
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("trained")
    assert main(["train", *tiny_overrides(out, "trainer.epochs=1", "eval.enabled=false")]) == 0
    (run_dir,) = [p for p in out.iterdir() if (p / "config.yaml").is_file()]
    return run_dir


def _copy(run_dir: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(run_dir, tmp_path / run_dir.name))


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_eval_refuses_odd_run_files_without_touching_them(trained, tmp_path, capsys):
    run_dir = _copy(trained, tmp_path)
    cases = [("results.json", "[1, 2]", "results.json: holds a list, not an object; move it away"),
             ("results.json", '{"status": "finished", "knn_top1": "90"}', "knn_top1 is \"90\", not a percentage"),
             ("config.yaml", "trainer: [unclosed\n", "config.yaml: not readable YAML"),
             ("config.yaml", "[]\n", "config.yaml: holds a list, not a config"),
             ("config.yaml", "method: {name: byol}\n", "data.name is missing")]
    config = (run_dir / "config.yaml").read_text()
    for name, content, message in cases:
        (run_dir / "config.yaml").write_text(config)
        (run_dir / "results.json").unlink(missing_ok=True)
        (run_dir / name).write_text(content)
        before = _tree(run_dir)
        assert message in _refused(capsys, "eval", str(run_dir)), name
        assert _tree(run_dir) == before
    assert "is a file, not a run directory" in _refused(capsys, "eval", str(run_dir / "config.yaml"))


@pytest.mark.slow
def test_export_with_an_unusable_results_json_exports_the_weights_and_says_so(trained, tmp_path, capsys):
    run_dir = _copy(trained, tmp_path)
    (run_dir / "results.json").write_text('{"status": "finished", "linear_top1": [90]}')
    code, out, err = _call(capsys, "export", str(run_dir), "--out", str(tmp_path / "export"))
    assert code == 0 and "exported the online backbone" in out
    assert err == [f"ssl-zoo: skipped {run_dir / 'results.json'}: linear_top1 is [90], not a percentage "
                   "(the card carries no probe results)"]
    assert read_card(tmp_path / "export")["results"] == {}
    blocker = tmp_path / "a_file"
    blocker.write_text("mine")
    line = _refused(capsys, "export", str(run_dir), "--out", str(blocker / "export"))
    assert f"{blocker} is a file, not a folder" in line and blocker.read_text() == "mine"
    (tmp_path / "export" / "card.json").write_text("[1]")
    with pytest.raises(UserError, match="not an ssl-zoo export card"):
        read_card(tmp_path / "export")
