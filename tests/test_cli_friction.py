"""What a newcomer meets in the first ten minutes: --version, train --help with the config groups, did-you-mean for
misspelt keys and `--epochs 3` flags, unknown experiments, a new method the package does not see yet,
resume=true/false, logger=tensorboard without the package, the folder argument of eval/compare/report/status, and
status of single runs."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ssl_zoo.cli import main
from ssl_zoo.commands.folders import split_folders
from ssl_zoo.common.errors import UserError
from ssl_zoo.config.compose import choices
from ssl_zoo.config.load import load_config

from in_process import run_main
from tiny import tiny_overrides


def _error(capsys, argv: list[str]) -> str:
    code, err = run_main(argv, capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1, (argv, code, err)
    return err


def test_version_and_train_help_list_the_groups(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.startswith("ssl-zoo 0.")
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    for group in ("method", "data", "encoder", "views", "ablation", "launcher", "experiment"):
        line = next(ln for ln in out.splitlines() if ln.strip().startswith(group + " "))
        assert all(c in line for c in choices(group)), line


def test_misspelt_keys_and_flags_get_a_did_you_mean(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert "did you mean trainer.epochs?" in _error(capsys, ["train", "trainer.epoch=3"])
    assert "did you mean trainer.epochs?" in _error(capsys, ["show", "epochs=3"])
    assert "did you mean trainer.epochs=3?" in _error(capsys, ["train", "--epochs", "3"])
    assert "did you mean trainer.lr=0.1?" in _error(capsys, ["train", "method=byol", "--lr=0.1"])
    assert "did you mean data.train_subset?" in _error(capsys, ["show", "data.subset=100"])
    assert list(tmp_path.iterdir()) == []


def test_an_unknown_experiment_is_an_error_with_the_choices(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    err = _error(capsys, ["train", "experiment=collapse_stduy"])
    assert "unknown experiment 'collapse_stduy'" in err and "collapse_study" in err and "compare_methods" in err
    assert "unknown method 'byl'" in _error(capsys, ["train", "-m", "method=byl,simsiam"])
    assert list(tmp_path.iterdir()) == []


def _installed_copy(dest: Path) -> Path:
    """The package as a plain `pip install .` leaves it in site-packages: methods/, analysis/, conf/ inside it."""
    root = Path(__file__).resolve().parents[1]
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(root / "ssl_zoo", dest / "ssl_zoo", ignore=ignore)
    for folder in ("methods", "analysis", "conf"):
        shutil.copytree(root / folder, dest / "ssl_zoo" / folder, ignore=ignore)
    return dest


def _train_error(site: Path, cwd: Path, *overrides: str) -> str:
    out = subprocess.run([sys.executable, "-m", "ssl_zoo.cli", "train", *overrides], cwd=cwd, capture_output=True,
                         text=True, env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"})
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1, out.stderr[-3000:]
    return out.stderr


@pytest.mark.slow  # three fresh interpreters
def test_a_new_method_the_package_does_not_see_says_to_install_editable(tmp_path, capsys):
    """methods/mine.py and conf/method/mine.yaml written after a plain `pip install .`: in the checkout only, or
    one of them where the package reads it; each case names the files and `pip install -e .`."""
    site = _installed_copy(tmp_path / "site")
    checkout = tmp_path / "checkout"
    (checkout / "conf" / "method").mkdir(parents=True)
    (checkout / "methods").mkdir()
    recipe = (site / "ssl_zoo" / "conf" / "method" / "simsiam.yaml").read_text().replace("name: simsiam", "name: mine")
    code = (site / "ssl_zoo" / "methods" / "simsiam.py").read_text()
    (checkout / "conf" / "method" / "mine.yaml").write_text(recipe)
    (checkout / "methods" / "mine.py").write_text(code)
    out = ["method=mine", f"out_dir={tmp_path / 'runs'}"]

    err = _train_error(site, checkout, *out)  # both files in the checkout, neither installed
    assert "unknown method 'mine'; choices:" in err and "conf/method/mine.yaml are here but not installed" in err
    assert "pip install -e ." in err

    (site / "ssl_zoo" / "conf" / "method" / "mine.yaml").write_text(recipe)  # the recipe installed, not the code
    err = _train_error(site, tmp_path, *out)
    assert "unknown method 'mine'; conf/method/mine.yaml is installed but not methods/mine.py" in err
    assert "pip install -e ." in err

    (site / "ssl_zoo" / "conf" / "method" / "mine.yaml").unlink()  # the code installed, not the recipe
    (site / "ssl_zoo" / "methods" / "mine.py").write_text(code)
    err = _train_error(site, tmp_path, *out)
    assert "unknown method 'mine'; choices:" in err and "methods/mine.py is installed but not conf/method/mine.yaml" in err
    assert "pip install -e ." in err
    assert not (tmp_path / "runs").exists()

    assert "pip install" not in _error(capsys, ["train", "method=byl", f"out_dir={tmp_path / 'runs'}"])  # a typo


def test_resume_true_and_false_mean_auto_and_never(tmp_path):
    assert load_config(tiny_overrides(tmp_path, "resume=true")).resume == "auto"
    assert load_config(tiny_overrides(tmp_path, "resume=false")).resume == "never"
    with pytest.raises(UserError, match="resume"):
        load_config(tiny_overrides(tmp_path, "resume=sometimes"))


def test_tensorboard_logger_without_the_package_is_refused_before_anything_is_written(capsys, tmp_path,
                                                                                        monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else real(name, *a))
    err = _error(capsys, ["train", *tiny_overrides(tmp_path / "out", "logger=tensorboard")])
    assert "pip install 'ssl-zoo[tensorboard]'" in err and not (tmp_path / "out").exists()


def test_folders_are_a_path_or_run_dir():
    assert split_folders(["runs/a", "run_dir=runs/b", "sweep_dir=c", "eval.knn_k=5"]) == (
        ["runs/a", "runs/b", "c"], ["eval.knn_k=5"])
    with pytest.raises(UserError):
        split_folders(["run_dir="])


def _fake_run(folder, cfg, results: dict | None, epochs_done: int):
    from omegaconf import OmegaConf

    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
    (folder / "metrics.csv").write_text("epoch,step,loss\n" + "".join(f"{e},{e},1.5\n" for e in range(1, epochs_done + 1)))
    if results is not None:
        (folder / "results.json").write_text(json.dumps(results))


def test_status_lists_single_runs_and_takes_any_spelling_of_the_folder(tmp_path, capsys):
    cfg = load_config(tiny_overrides(tmp_path))
    _fake_run(tmp_path / "runs" / "a", cfg, {"status": "finished", "knn_top1": 80.0, "linear_top1": 90.0}, 2)
    _fake_run(tmp_path / "runs" / "b", cfg, None, 1)
    for arg in (str(tmp_path / "runs"), f"run_dir={tmp_path / 'runs'}", f"sweep_dir={tmp_path / 'runs'}"):
        assert main(["status", arg, "--json"]) == 0
        rows = {r["run_dir"]: r for r in json.loads(capsys.readouterr().out)}
        assert rows["a"]["state"] == "finished" and rows["a"]["linear_top1"] == 90.0
        assert rows["b"]["state"] == "unfinished" and (rows["b"]["epoch"], rows["b"]["epochs"]) == (1, 2)
    assert main(["status", str(tmp_path / "runs" / "a")]) == 0
    assert "1 finished" in capsys.readouterr().out
    (tmp_path / "empty").mkdir()
    assert "holds no runs" in _error(capsys, ["status", str(tmp_path / "empty")])


def test_train_subset_is_a_count_for_every_dataset(tmp_path):
    assert load_config(tiny_overrides(tmp_path, "data.train_subset=100")).data.train_subset == 100
    assert load_config(tiny_overrides(tmp_path)).data.train_subset is None
    for bad in ("abc", "0", "true"):
        with pytest.raises(UserError, match="data.train_subset"):
            load_config(tiny_overrides(tmp_path, f"data.train_subset={bad}"))
