"""A refused `ssl-zoo eval`, `export` or `train` writes nothing: every check comes before the run's lock is taken
or anything is created, so the run directory's files (names, bytes, mtimes) are as they were, run.lock included.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest
import torch

from ssl_zoo.cli import main
from ssl_zoo.config.load import load_config
from ssl_zoo.runs.identity import run_dir_for
from ssl_zoo.runs.runlock import acquire

from in_process import run_main
from tiny import tiny_overrides


class _Payload:
    """Pickled code: were a checkpoint load ever to run it, a folder would appear (and the tree check sees it)."""

    def __init__(self, target: Path):
        self.target = str(target)

    def __reduce__(self):
        return (os.mkdir, (self.target,))


def _copy(good: Path, name: str) -> Path:
    copy = good.with_name(name)
    shutil.copytree(good, copy)
    return copy


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A trained tiny run (with run.lock as training leaves it) and damaged copies of it."""
    root = tmp_path_factory.mktemp("refused")
    args = [*tiny_overrides(root / "out"), "device=cpu", "eval.enabled=false", "trainer.epochs=1"]
    assert main(["train", *args]) == 0
    good = run_dir_for(load_config(args))
    bad_config = _copy(good, "bad_config")
    text = (bad_config / "config.yaml").read_text()
    assert "batch_size: 64" in text
    (bad_config / "config.yaml").write_text(text.replace("batch_size: 64", "batch_size: 0"))
    garbage_config = _copy(good, "garbage_config")
    (garbage_config / "config.yaml").write_text("trainer: [unclosed\n")
    pickled = _copy(good, "pickled")
    for ckpt in (pickled / "checkpoints").glob("*.pt"):
        torch.save({"method": {}, "optimizer": {}, "step": 1, "x": _Payload(root / "pwned")}, ckpt)
    misfit = _copy(good, "misfit")
    for ckpt in (misfit / "checkpoints").glob("*.pt"):
        torch.save({"method": {"x": torch.zeros(2)}, "optimizer": {}, "step": 3, "rows": [], "elapsed": 0.0}, ckpt)
    no_checkpoint = _copy(good, "no_checkpoint")
    shutil.rmtree(no_checkpoint / "checkpoints")
    bad_results = _copy(good, "bad_results")
    (bad_results / "results.json").write_text("{truncated")
    (root / "a_file").write_text("")
    return {"root": root, "args": args, "good": good, "bad_config": bad_config, "garbage_config": garbage_config,
            "pickled": pickled, "misfit": misfit, "no_checkpoint": no_checkpoint, "bad_results": bad_results,
            "a_file": root / "a_file", "missing": root / "missing"}


def _cases(r: dict) -> dict[str, list[str]]:
    good = str(r["good"])
    return {
        "eval knn_t=0": ["eval", good, "eval.knn_t=0"],
        "eval knn_k=0": ["eval", good, "eval.knn_k=0"],
        "eval max_train=-3": ["eval", good, "eval.max_train=-3"],
        "eval knn_k above the train images": ["eval", good, "eval.knn_k=100000"],
        "eval knn_k not a number": ["eval", good, "eval.knn_k=many"],
        "eval unknown protocol": ["eval", good, "eval.protocol=nope"],
        "eval unknown key": ["eval", good, "eval.nope=1"],
        "eval a training key": ["eval", good, "trainer.epochs=3"],
        "eval unknown device": ["eval", good, "device=tpu"],
        "eval hand-edited config": ["eval", str(r["bad_config"])],
        "eval unreadable config": ["eval", str(r["garbage_config"])],
        "eval pickled checkpoints": ["eval", str(r["pickled"])],
        "eval checkpoints of another model": ["eval", str(r["misfit"])],
        "eval no checkpoint": ["eval", str(r["no_checkpoint"])],
        "eval unreadable results": ["eval", str(r["bad_results"])],
        "eval a file": ["eval", str(r["a_file"])],
        "eval a missing folder": ["eval", str(r["missing"])],
        "train a finished run again": ["train", *r["args"]],
        "train a finished run with resume=never": ["train", *r["args"], "resume=never"],
        "train a finished run with another seed": ["train", *r["args"], "seed=1", f"run_name={r['good'].name}"],
        "export hand-edited config": ["export", str(r["bad_config"])],
        "export pickled checkpoints": ["export", str(r["pickled"])],
        "export no checkpoint": ["export", str(r["no_checkpoint"])],
        "export out exists": ["export", good, "--out", str(r["bad_config"])],
        "export out under a file": ["export", good, "--out", str(r["a_file"] / "x")],
    }


def _files(root: Path) -> dict:
    """Every path under root with its kind, size, mtime and content hash."""
    state = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        digest = hashlib.sha1(path.read_bytes()).hexdigest() if path.is_file() else ""
        state[str(path.relative_to(root))] = (path.is_dir(), st.st_size, st.st_mtime_ns, digest)
    return state


def test_every_refused_verb_exits_2_with_one_line_and_writes_nothing(runs, capfd):
    assert (runs["good"] / "run.lock").exists()  # the lock file training leaves: it must not be rewritten
    failures = []
    for name, argv in _cases(runs).items():
        before = _files(runs["root"])
        code, err = run_main(argv, capfd)
        lines = err.strip().splitlines()
        if code != 2 or len(lines) != 1 or not lines[0].startswith("ssl-zoo: error: "):
            failures.append(f"{name}: exit {code}: {err}")
        changed = set(_files(runs["root"]).items()) ^ set(before.items())
        if changed:
            failures.append(f"{name} changed {sorted({c[0] for c in changed})}")
    assert not failures, "\n".join(failures)
    assert not (runs["root"] / "pwned").exists()


def test_eval_of_a_run_in_use_is_refused_first_and_writes_nothing(runs, capfd):
    for run in ("good", "no_checkpoint"):  # named as in use, not by what it lacks while it trains
        lock = acquire(runs[run], "ssl-zoo train")
        try:
            before = _files(runs["root"])
            capfd.readouterr()
            assert main(["eval", str(runs[run]), "eval.knn_k=3"]) == 2
            err = capfd.readouterr().err
            assert err.count("\n") == 1 and "is in use by pid" in err and "ssl-zoo train" in err, err
            assert _files(runs["root"]) == before
        finally:
            lock.release()
