"""docs/python_api.md runs as written, docs/export_example.py runs whole, and the API keeps the CLI's checks."""

from __future__ import annotations

import re
import runpy
import tempfile
from pathlib import Path

import pytest

from ssl_zoo import api
from ssl_zoo.common.errors import UserError
from ssl_zoo.config.load import load_config
from ssl_zoo.runs.identity import run_dir_for

DOCS = Path(__file__).resolve().parents[1] / "docs"

pytestmark = pytest.mark.slow


def python_blocks(path: Path) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", path.read_text(), flags=re.S | re.M)


def test_python_api_page_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    blocks = python_blocks(DOCS / "python_api.md")
    assert len(blocks) >= 4
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, "docs/python_api.md", "exec"), namespace)
    run_dir = namespace["run_dir"]
    # the API's run is the CLI's: same directory name for the same overrides, same refusal of a finished run
    cli = run_dir_for(load_config(["method=byol", "data=digits", "encoder=small_cnn", f"out_dir={tmp_path}/runs",
                                   "encoder.width=8", "trainer.epochs=1", "progress_bar=false",
                                   "eval.random_init=false"]))
    assert run_dir == cli and (run_dir / "checkpoints" / "last.pt").is_file()
    with pytest.raises(UserError, match="already finished"):
        api.train("byol", data="digits", encoder="small_cnn", out_dir="runs",
                  **{"encoder.width": 8, "trainer.epochs": 1, "progress_bar": False, "eval.random_init": False})


def test_export_example_script_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    runpy.run_path(str(DOCS / "export_example.py"), run_name="__main__")
    out = capsys.readouterr().out
    assert out.count("<All keys matched successfully>") == 2 and "identical in ssl-zoo, torchvision and timm" in out


def test_api_keeps_the_cli_checks():
    with pytest.raises(UserError, match="trainer.epoch"):
        api.config("byol", **{"trainer.epoch": 3})
    with pytest.raises(UserError, match="unknown method 'byl'|unknown method 'byl'|choices"):
        api.build("byl")
    cfg = api.config("simsiam", trainer={"epochs": 3, "lr": 0.1}, encoder="small_cnn", views=None)
    assert (cfg.trainer.epochs, cfg.trainer.lr, cfg.method.name) == (3, 0.1, "simsiam")
    cfg.trainer.epochs = 0  # by assignment: no check would see it
    with pytest.raises(UserError, match="changed by assignment"):
        api.build(cfg)
    assert api.overrides("byol", {"run_name": "a b", "data": "cifar10", "trainer.betas": [0.9, 0.99]}) == [
        "method=byol", "run_name='a b'", "data=cifar10", "trainer.betas=[0.9,0.99]"]
