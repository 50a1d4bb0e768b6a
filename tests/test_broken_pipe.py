"""Every verb's output may be piped into a reader that stops early (`ssl-zoo status runs --json | head -c 50`): no
traceback, no "Exception ignored" from the interpreter's last flush, and exit 0 or 141 (128 + SIGPIPE, what the
shell reports for any writer a closed pipe stopped). A training run whose reader goes away stops as for SIGTERM:
at a step boundary, with a whole checkpoint, exit 3, and the same command resumes it; an evaluation under way
ends and writes its results.

Each verb runs twice, in real `ssl-zoo` processes: piped into `head -c 50` through the shell (the reader may or
may not be gone before the first write), and with stdout a pipe whose reader has already gone (the write fails
for certain).
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from ssl_zoo.config.load import load_config
from ssl_zoo.runs.identity import run_dir_for

from tiny import tiny_overrides

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
READER_GONE = 141
BAD = ("Traceback", "Exception ignored", "BrokenPipeError")


def _into_head(args: list[str], head: str = "-c 50") -> subprocess.Popen:
    """`ssl-zoo args | head ...`; the exit code is ssl-zoo's (PIPESTATUS), stdout what head let through."""
    script = f'ssl-zoo "$@" | head {head}; exit "${{PIPESTATUS[0]}}"'
    return subprocess.Popen(["bash", "-c", script, "bash", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=ENV)


def _reader_gone(args: list[str]) -> subprocess.Popen:
    """`ssl-zoo args` with stdout a pipe whose read end is already closed."""
    read, write = os.pipe()
    os.close(read)
    try:
        return subprocess.Popen(["ssl-zoo", *args], stdout=write, stderr=subprocess.PIPE, text=True, env=ENV)
    finally:
        os.close(write)


def _ended(proc: subprocess.Popen) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=600)
    for bad in BAD:
        assert bad not in err, err
    return proc.returncode, out or "", err


def _status(run_dir) -> str | None:
    path = run_dir / "results.json"
    return json.loads(path.read_text())["status"] if path.exists() else None


@pytest.fixture(scope="module")
def stopped_and_resumed(tmp_path_factory):
    """A 3-epoch run piped into `head -n 2` (the run's first line and epoch 1's), then the same command again."""
    out = tmp_path_factory.mktemp("broken_pipe") / "runs"
    overrides = tiny_overrides(out, "device=cpu", "trainer.epochs=3", "eval.projector=false")
    run_dir = run_dir_for(load_config(overrides))
    stopped = _ended(_into_head(["train", *overrides], head="-n 2"))
    after_stop = (_status(run_dir), sorted(p.name for p in (run_dir / "checkpoints").iterdir()),
                  (run_dir / "metrics.csv").read_text().splitlines())
    resumed = subprocess.run(["ssl-zoo", "train", *overrides], capture_output=True, text=True, env=ENV, timeout=600)
    return {"out": out, "overrides": overrides, "run_dir": run_dir, "stopped": stopped, "after_stop": after_stop,
            "resumed": resumed}


@pytest.mark.slow
def test_a_run_whose_reader_goes_away_stops_whole_and_resumes(stopped_and_resumed):
    code, out, err = stopped_and_resumed["stopped"]
    assert code == 3, err
    assert out.splitlines()[1].startswith("epoch 1/3"), out  # head saw what the run printed up to then
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ssl-zoo: stopped at step "), err
    assert lines[0].endswith("run the same command again to resume"), err
    status, checkpoints, metrics = stopped_and_resumed["after_stop"]
    assert status is None  # not marked failed: a stopped run, as after SIGTERM
    assert "last.pt" in checkpoints
    assert 2 <= len(metrics) <= 3  # the header and the epochs done before the stop
    resumed = stopped_and_resumed["resumed"]
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming at step" in resumed.stdout  # from the stopped run's checkpoint, which loaded
    run_dir = stopped_and_resumed["run_dir"]
    assert _status(run_dir) == "finished"
    assert [row.split(",")[0] for row in (run_dir / "metrics.csv").read_text().splitlines()[1:]] == ["1", "2", "3"]


@pytest.mark.slow
def test_every_verb_piped_into_a_reader_that_stops_early(stopped_and_resumed, tmp_path):
    out = str(stopped_and_resumed["out"])
    verbs = {
        "status --json": ["status", out, "--json"],
        "status": ["status", out],
        "compare": ["compare", out, "--out", "{tmp}/compare"],
        "report": ["report", out, "--out", "{tmp}/report"],
        "show": ["show", *stopped_and_resumed["overrides"]],
        "train --help": ["train", "--help"],
        "--help": ["--help"],
    }
    names = list(verbs)
    for start in range(0, len(names), 4):  # a few processes at a time: each imports torch
        procs = {}
        for name in names[start:start + 4]:
            for mode, launch in (("head", _into_head), ("gone", _reader_gone)):
                folder = tmp_path / mode
                folder.mkdir(exist_ok=True)
                procs[name, mode] = launch([a.replace("{tmp}", str(folder)) for a in verbs[name]])
        for (name, mode), proc in procs.items():
            code, _, err = _ended(proc)
            assert code in (0, READER_GONE), (name, mode, code, err)
            if mode == "gone" and "--help" not in name:  # argparse's help swallows the error itself: exit 0
                assert code == READER_GONE, (name, mode, code, err)
    run_dir = stopped_and_resumed["run_dir"]
    assert _status(run_dir) == "finished"  # read by all of them, changed by none


@pytest.mark.slow
def test_an_evaluation_whose_reader_goes_away_still_writes_its_results(stopped_and_resumed):
    run_dir = stopped_and_resumed["run_dir"]
    before = json.loads((run_dir / "results.json").read_text())
    code, _, err = _ended(_reader_gone(["eval", str(run_dir), "eval.knn_k=5"]))
    assert code == 0, err
    after = json.loads((run_dir / "results.json").read_text())
    assert after["status"] == "finished" and after["knn_k"] == 5 != before.get("knn_k")


class _ClosedPipe:
    """A stdout whose reader has gone."""

    def write(self, text: str) -> int:
        raise BrokenPipeError(32, "Broken pipe")

    def flush(self) -> None:
        pass


def test_a_verb_that_does_not_save_ends_quietly_with_141(monkeypatch, capsys, tmp_path):
    from ssl_zoo.cli import main

    monkeypatch.setattr("sys.stdout", _ClosedPipe())
    assert main(["show", *tiny_overrides(tmp_path)]) == READER_GONE
    assert capsys.readouterr().err == ""


def test_a_closed_stdout_stops_a_command_that_handles_stops_as_sigterm_does(monkeypatch):
    import signal
    import sys

    from ssl_zoo.common import stopping
    from ssl_zoo.common.closed_output import ReaderGone, guarded_output

    monkeypatch.setattr("sys.stdout", _ClosedPipe())
    with guarded_output(), stopping.handled():
        with stopping.interruptible("would interrupt"):  # recorded, never raised: the block runs to its end
            print("epoch 3/8: ...", flush=True)
        assert stopping.code() == 1 and stopping.signum_of(stopping.code()) == signal.SIGTERM
    with pytest.raises(ReaderGone), guarded_output():  # no stop handler: the command ends (the CLI: exit 141)
        print("a table", flush=True)
    assert isinstance(sys.stdout, _ClosedPipe)  # put back
